"""What a short `swirl fit` leaves in TensorBoard, read back from its event files: every training figure at the
optimizer step its batch started from, reward by step index only where it was measured, one step for all the records
of one validation, the resolved config as HPARAMS with the val/* figures (no placeholder), a run named for its config
and stage, the export beside the logs."""

import json
import zlib
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from swirl_lightning.core.trajectory import read_trajectories
from swirl_lightning.judging.base import StepJudgeBase
from swirl_lightning.testing import registered
from swirl_lightning.training.cli import log_dirs, make_cli
from swirl_lightning.training.objectives.swirl import SwirlObjective

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

CONF = Path(__file__).resolve().parents[2] / "conf"


class HashJudge(StepJudgeBase):
    """Scores 0, 1/3, 2/3 or 1 by a hash of the step's text: rewards that differ from action to action."""

    judge_id = "hash"

    def judge_steps(self, items):
        return [self.judgement((zlib.crc32(step.text.encode()) % 4) / 3) for _, step in items]


def events(log_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def points(accumulator: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in accumulator.Scalars(tag)}


@pytest.fixture(scope="module")
def short_fit(tmp_path_factory):
    """conf/quickstart.yaml shrunk: swirl with 2 updates per batch (ppo_epochs 2), 5 batches, validation every 2
    batches; every sampled batch's rewards, step indices and verdicts recorded as the objective measured them."""
    root = tmp_path_factory.mktemp("fit")
    measured = []
    sample_batch = SwirlObjective.sample_batch

    def recording_sample_batch(self, parts, states):
        batch = sample_batch(self, parts, states)
        measured.append((parts.step, batch.rewards.clone(), batch.step_index.clone(), batch.good.clone()))
        return batch

    SwirlObjective.sample_batch = recording_sample_batch
    try:
        with registered(judges={"hash": HashJudge}):
            cli = make_cli([
                "fit", "--config", str(CONF / "quickstart.yaml"), "--trainer.default_root_dir", str(root),
                "--policy.name", "tiny-random", "--policy.adapter", "null", "--judge.name", "hash",
                "--data.train.path", "null", "--data.train.reference", "true", "--task.limit", "10",
                "--task.max_actions", "2", "--sampling.max_new_tokens", "4", "--model.lora.r", "4",
                "--model.swirl.group_size", "2", "--model.swirl.ppo_epochs", "2",
                "--model.evaluation.sampling.max_new_tokens", "4", "--model.evaluation.log_trajectories", "1",
                "--data.validation.questions", "2", "--trainer.max_steps", "10", "--trainer.val_check_interval", "2",
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                "--trainer.callbacks.init_args.states", "2", "--trainer.callbacks.init_args.samples", "2",
                "--trainer.callbacks.init_args.every_n_steps", "4",
            ])
    finally:
        SwirlObjective.sample_batch = sample_batch
    assert cli.trainer.global_step == 10
    return root, measured


def test_the_run_is_named_for_its_config_and_stage_and_the_export_sits_beside_the_logs(short_fit):
    root, _ = short_fit
    (log_dir,) = log_dirs(root)
    assert log_dir == root / "tb" / "quickstart" / "fit" / "version_0"
    assert (root / "export" / "adapter_config.json").exists()
    assert not list((root / "tb").rglob("*.safetensors"))


def test_training_figures_sit_at_the_optimizer_step_their_batch_started_from(short_fit):
    root, measured = short_fit
    accumulator = events(root / "tb" / "quickstart" / "fit" / "version_0")
    steps = [step for step, *_ in measured]
    assert steps == [0, 2, 4, 6, 8]  # two updates per batch
    for tag in ("train/loss", "train/reward_mean", "train/good_rate", "train/grad_norm", "train/lr", "train/kl"):
        assert sorted(points(accumulator, tag)) == steps, tag
    assert sorted(e.step for e in accumulator.Histograms("train/reward")) == steps
    reward_mean, good_rate = points(accumulator, "train/reward_mean"), points(accumulator, "train/good_rate")
    for step, rewards, _, good in measured:
        assert reward_mean[step] == pytest.approx(float(rewards.mean()), abs=1e-6)
        assert good_rate[step] == pytest.approx(float(good.float().mean()), abs=1e-6)
        # GOOD is the judge's verdict: its score against its threshold (0.5).
        assert torch.equal(good, (rewards >= 0.5) & (rewards > 0))
    assert 0 < sum(float(g.float().mean()) for *_, g in measured) < len(measured)  # the rate is not trivially 0 or 1


def test_reward_by_step_index_holds_only_what_was_measured_at_that_step(short_fit):
    root, measured = short_fit
    accumulator = events(root / "tb" / "quickstart" / "fit" / "version_0")
    expected: dict[str, dict[int, float]] = {}
    for step, rewards, step_index, _ in measured:
        for k in sorted(set(step_index.flatten().tolist())):
            expected.setdefault(f"train/reward_by_step/{k}", {})[step] = float(rewards[step_index == k].mean())
    logged = {tag: points(accumulator, tag) for tag in accumulator.Tags()["scalars"]
              if tag.startswith("train/reward_by_step/")}
    assert set(logged) == set(expected)
    # Some index is missing from some batch: its series must skip that step, not repeat an old value.
    assert any(len(series) < len(measured) for series in expected.values())
    for tag, series in expected.items():
        assert sorted(logged[tag]) == sorted(series), tag
        for step, value in series.items():
            assert logged[tag][step] == pytest.approx(value, abs=1e-6), (tag, step)


def test_a_validation_has_one_step_for_its_scalars_text_and_rollouts_the_optimizer_step(short_fit):
    root, _ = short_fit
    log_dir = root / "tb" / "quickstart" / "fit" / "version_0"
    accumulator = events(log_dir)
    validations = [4, 8]  # after 2 and 4 batches of 2 updates
    for name in ("accuracy", "steps_mean", "invalid_action_rate", "step_good_rate", "answered_rate"):
        assert sorted(points(accumulator, f"val/{name}")) == validations, name
    text = [tag for tag in accumulator.Tags()["tensors"] if tag.startswith("val/")]
    assert "val/rollouts/text_summary" in text and any(t.startswith("val/trajectory/") for t in text)
    for tag in text:
        assert sorted(e.step for e in accumulator.Tensors(tag)) == validations, tag
    files = sorted(p.name for p in (log_dir / "rollouts").iterdir())
    assert files == [f"val-step{step:06d}.jsonl" for step in validations]
    rollouts = read_trajectories(log_dir / "rollouts" / files[-1])
    assert rollouts and all(t.gold_answer for t in rollouts)  # the gold answer travels with each rollout
    accuracy = points(accumulator, "val/accuracy")
    assert accuracy[8] == sum(t.outcome for t in rollouts) / len(rollouts)
    # The probe (every 4 steps, and after the last) shares the axis: the policy after N updates.
    assert sorted(points(accumulator, "probe/reward_mean")) == [0, 4, 8, 10]
    assert [p["step"] for p in json.loads((log_dir / "probe.json").read_text())] == [0, 4, 8, 10]
    # A validation's step does not leak into later checkpoints' names (Lightning's `step` key).
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["epoch=0-step=8.ckpt", "last.ckpt"]


def test_hparams_hold_the_resolved_config_and_the_val_figures_with_no_placeholder(short_fit):
    root, _ = short_fit
    accumulator = events(root / "tb" / "quickstart" / "fit" / "version_0")
    assert "hp_metric" not in accumulator.Tags()["scalars"]
    content = accumulator.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {
        "val/accuracy", "val/steps_mean", "val/tool_error_rate", "val/invalid_action_rate", "val/step_good_rate",
        "val/answered_rate"}
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hparams = {name: value for name, value in session.hparams.items()}
    assert hparams["trainer.max_steps"].number_value == 10
    assert hparams["trainer.val_check_interval"].number_value == 2
    assert hparams["model.swirl.ppo_epochs"].number_value == 2
    assert hparams["judge.name"].string_value == "hash"
    assert hparams["policy.name"].string_value == "tiny-random"
