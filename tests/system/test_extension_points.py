"""The extension points, used as a third party would: a throwaway task and a throwaway judge, added by a plugin
registered in the test (the core untouched), run through generate -> filter -> fit with the tiny model; a throwaway
objective trains with fit."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from swirl_lightning.core.config import JudgeConfig, PolicyConfig, SamplingConfig, TaskConfig
from swirl_lightning.core.trajectory import Example, read_trajectories
from swirl_lightning.judging.filter import FilterConfig, run_filter
from swirl_lightning.rollout.generate import GenerateConfig, run_generate
from swirl_lightning.testing import ConstantJudge, ListTask, registered
from swirl_lightning.training.cli import make_cli
from swirl_lightning.training.objectives import Objective, ObjectiveParts, PreparedBatch, make_objective

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

CAPITALS = ListTask("capitals", [Example(f"cap-{i}", f"Capital of country {i}?", f"City {i}", "capitals")
                                 for i in range(6)], tools=("calculator",), max_actions=2)


def test_a_throwaway_task_and_judge_run_through_generate_filter_and_fit(tmp_path: Path):
    with registered(tasks=[CAPITALS], judges={"constant": ConstantJudge}):
        task = TaskConfig("capitals", limit=4)
        trajectories = tmp_path / "trajectories.jsonl"
        run_generate(GenerateConfig(output=str(trajectories), policy=PolicyConfig("tiny-random"), task=task,
                                    sampling=SamplingConfig(max_new_tokens=6, batch_size=4), samples=2, progress=False))
        generated = read_trajectories(trajectories)
        assert len(generated) == 8 and {t.example_id for t in generated} == {f"cap-{i}" for i in range(4)}
        assert all(t.metadata["source"] == "capitals" for t in generated)

        kept = tmp_path / "kept.jsonl"
        stats = run_filter(FilterConfig(input=str(trajectories), output=str(kept), task=task, mode="step",
                                        judge=JudgeConfig("constant", {"score": 1.0}), progress=False, cache=False))
        assert stats["step_judge"] == "constant:1" and stats["kept"] == 8
        assert all(j.judge == "constant:1" for t in read_trajectories(kept) for s in t.steps for j in s.judgements)

        cli = make_cli(["fit", "--seed_everything", "0", "--policy.name", "tiny-random", "--task.name", "capitals",
                        "--judge.name", "constant",
                        "--judge.options", '{"score": 1.0}', "--model.objective", "swirl",
                        "--model.lora.r", "4", "--model.swirl.group_size", "2", "--sampling.max_new_tokens", "4",
                        "--model.evaluation.sampling.max_new_tokens", "4", "--model.export.enabled", "false",
                        "--data.train.path", str(kept), "--data.train.filter", "step", "--data.train.batch_size", "2",
                        "--data.validation.questions", "1", "--trainer.max_steps", "2", "--trainer.log_every_n_steps", "1",
                        "--trainer.val_check_interval", "2", "--trainer.default_root_dir", str(tmp_path / "fit"),
                        "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false"])
        assert cli.trainer.global_step == 2
        assert 0.0 <= float(cli.trainer.callback_metrics["train/reward_mean"]) <= 1.0
        (rollouts,) = (tmp_path / "fit").glob("lightning_logs/fit/version_0/rollouts/val-step000002.jsonl")
        validated = read_trajectories(rollouts)
        assert len(validated) == 1 and validated[0].example_id in {"cap-0", "cap-1", "cap-2", "cap-3"}
        assert {j.judge for t in validated for s in t.steps for j in s.judgements} == {"constant:1"}


@dataclass
class ScaledNllConfig:
    """The throwaway objective's one hyperparameter."""

    scale: float = 1.0
    """What the NLL of the stored actions is multiplied by."""


class ScaledNll(Objective):
    """A throwaway objective: the NLL of the stored actions, scaled. It sees only the parts it is given."""

    name = "scaled_nll"
    Config = ScaledNllConfig
    seen: list[object] = []

    def prepare(self, parts: ObjectiveParts, batch) -> PreparedBatch:
        return PreparedBatch(batch, size=len(batch.example_ids), tokens=batch.num_tokens)

    def loss(self, parts: ObjectiveParts, prepared: PreparedBatch):
        ScaledNll.seen.append(parts)
        batch = prepared.data
        logprobs, _ = parts.policy.score(batch.input_ids, batch.attention_mask, batch.segment_ids)
        nll = -logprobs.sum() / (batch.segment_ids > 0).sum()
        return self.config.scale * nll, {"train/scaled_nll_scale": self.config.scale}


def test_a_throwaway_objective_registered_by_a_plugin_trains_with_fit(tmp_path: Path):
    with registered(objectives=[ScaledNll]):
        cli = make_cli(["fit", "--seed_everything", "0", "--policy.name", "tiny-random", "--task.limit", "6",
                        "--model.objective", "scaled_nll", "--model.objective_options", '{"scale": 0.5}',
                        "--model.lora.r", "4", "--model.export.enabled", "false",
                        "--data.train.reference", "true", "--data.train.batch_size", "2",
                        "--data.validation.questions", "1", "--trainer.max_steps", "2",
                        "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
                        "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                        "--trainer.enable_checkpointing", "false", "--trainer.logger", "false"])
    assert cli.trainer.global_step == 2 and cli.model.objective.config == ScaledNllConfig(scale=0.5)
    assert ScaledNll.seen and all(isinstance(parts, ObjectiveParts) for parts in ScaledNll.seen)
    assert float(cli.trainer.callback_metrics["train/scaled_nll_scale"]) == 0.5
    assert float(cli.trainer.callback_metrics["train/loss"]) > 0
    with pytest.raises(ValueError, match="scaled_nll"):  # unregistered with the plugin: a clear error naming it
        make_objective("scaled_nll")
