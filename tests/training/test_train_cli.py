"""`swirl fit | validate | predict` through LightningCLI with a tiny random model: a reduced warm start,
resuming from `--ckpt_path last`, and 2 CPU processes with DDP and with FSDP2."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from swirl_lightning.cli import main as swirl_main
from swirl_lightning.core.trajectory import read_trajectories

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]


CONF = Path(__file__).resolve().parents[2] / "conf"
# The warm start (sft on GSM8K reference trajectories), shrunk: tiny model, 8 questions, 2 held out, short turns.
TINY_WARMUP = [
    "--config", str(CONF / "gsm8k_warmup.yaml"),
    "--policy.name", "tiny-random",
    "--model.evaluation.sampling.max_new_tokens", "6",
    "--model.evaluation.sampling.batch_size", "2",
    "--task.max_actions", "2",
    "--task.limit", "8",
    "--data.train.batch_size", "4",
    "--data.validation.questions", "2",
    "--trainer.log_every_n_steps", "1",
    "--trainer.accumulate_grad_batches", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]


def scalars(log_dir: Path, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


def test_reduced_warmup_fits_validates_and_predicts(tmp_path, monkeypatch, capsys):
    from swirl_lightning.rollout.journal import EvaluationJournal

    # Keep every evaluation's journal, as if each had been killed before its end: `validate --ckpt_path` below must
    # find the fit's last validation's (same weights, same settings) and roll nothing out again.
    close = EvaluationJournal.close
    monkeypatch.setattr(EvaluationJournal, "close", lambda journal, finished: close(journal, finished=False))
    root = tmp_path / "run"
    assert swirl_main(["fit", *TINY_WARMUP, "--trainer.default_root_dir", str(root)]) == 0
    log_dir = root / "tb" / "gsm8k_warmup" / "fit" / "version_0"  # the run is named for its config and stage
    losses = scalars(log_dir, "train/loss")
    assert sorted(losses) == [0, 1] and all(v > 0 for v in losses.values())  # 8 questions / batch 4
    assert set(scalars(log_dir, "val/accuracy").values()) == {0.0}
    assert (root / "checkpoints" / "last.ckpt").exists()
    # conf/gsm8k_warmup.yaml exports the adapter in bf16 (the shipped one is made so).
    from safetensors.torch import load_file

    assert (root / "export" / "adapter_config.json").exists()
    assert {t.dtype for t in load_file(root / "export" / "adapter_model.safetensors").values()} == {torch.bfloat16}
    assert json.loads((root / "export" / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-random"
    assert sorted(p.name for p in (log_dir / "rollouts").iterdir()) == ["val-step000002.jsonl"]
    # The LoRA checkpoint holds the trained weights only.
    saved = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert saved and all("lora_" in name for name in saved)

    last = str(root / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    assert swirl_main(["validate", *TINY_WARMUP, "--trainer.default_root_dir", str(root), "--ckpt_path", last]) == 0
    assert "val: resuming from" in capsys.readouterr().out  # the fit's weights and settings, from the checkpoint
    # Validating the checkpoint is a run of its own, at the checkpoint's optimizer step.
    validated = root / "tb" / "gsm8k_warmup" / "validate" / "version_0"
    assert [p.name for p in (validated / "rollouts").iterdir()] == ["val-step000002.jsonl"]
    assert sorted(scalars(validated, "val/accuracy")) == [2]
    predictions = tmp_path / "predictions.jsonl"
    assert swirl_main(["predict", *TINY_WARMUP, "--trainer.default_root_dir", str(root), "--ckpt_path", last,
                       "--data.validation.test_limit", "3", "--model.evaluation.predictions", str(predictions)]) == 0
    trajectories = read_trajectories(predictions)
    assert len(trajectories) == 3 and all(t.steps and t.prompt_token_ids for t in trajectories)


def test_resume_from_last_checkpoint_matches_an_uninterrupted_run(tmp_path):
    """Stopped after 4 steps (mid-epoch: 3 batches per epoch) and resumed to 7: the losses of steps 5-7
    equal the uninterrupted run's within 1e-6 relative (weights, AdamW state, schedule, data position)."""
    # A constant rate after warm-up: a decaying schedule ends at max_steps, which differs between the runs.
    common = [*TINY_WARMUP, "--task.limit", "12", "--trainer.max_epochs", "-1",
              "--trainer.limit_val_batches", "0", "--model.optimizer.lr", "1e-2", "--model.optimizer.warmup_steps", "3",
              "--model.optimizer.schedule", "constant",
              "--trainer.callbacks.init_args.every_n_train_steps", "1"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert swirl_main(["fit", *common, "--trainer.default_root_dir", str(straight), "--trainer.max_steps", "7"]) == 0
    assert swirl_main(["fit", *common, "--trainer.default_root_dir", str(resumed), "--trainer.max_steps", "4"]) == 0
    assert swirl_main(["fit", *common, "--trainer.default_root_dir", str(resumed), "--trainer.max_steps", "7",
                       "--ckpt_path", "last"]) == 0
    runs = [resumed / "tb" / "gsm8k_warmup" / "fit" / f"version_{n}" for n in (0, 1)]  # a resumed fit: a new version
    expected = scalars(straight / "tb" / "gsm8k_warmup" / "fit" / "version_0", "train/loss")
    first, second = (scalars(run, "train/loss") for run in runs)
    assert sorted(first) == [0, 1, 2, 3] and sorted(second) == [4, 5, 6]
    for step, loss in {**first, **second}.items():
        assert loss == pytest.approx(expected[step], rel=1e-6), step
    # Without the data position, the resumed epoch would restart: its losses would differ.
    assert len({round(v, 4) for v in expected.values()}) == 7


def test_a_run_continued_from_another_folders_checkpoint_keeps_its_last_checkpoint_current(tmp_path, recwarn):
    """A finished run's ``last.ckpt`` copied into a new folder and trained on: the new run's saves overwrite it (no
    ``last-v1.ckpt`` beside a stale ``last.ckpt``, which the benchmarks' resume would read), and resuming in its own
    folder says nothing about that folder not being empty."""
    common = [*TINY_WARMUP, "--task.limit", "12", "--trainer.max_epochs", "-1", "--trainer.limit_val_batches", "0",
              "--trainer.callbacks.init_args.every_n_train_steps", "1"]
    first, continued = tmp_path / "first", tmp_path / "continued"
    assert swirl_main(["fit", *common, "--trainer.default_root_dir", str(first), "--trainer.max_steps", "2"]) == 0
    (continued / "checkpoints").mkdir(parents=True)
    last = continued / "checkpoints" / "last.ckpt"
    last.write_bytes((first / "checkpoints" / "last.ckpt").read_bytes())
    recwarn.clear()
    assert swirl_main(["fit", *common, "--trainer.default_root_dir", str(continued), "--trainer.max_steps", "4",
                       "--ckpt_path", str(last)]) == 0
    assert sorted(p.name for p in (continued / "checkpoints").iterdir()) == ["epoch=1-step=4.ckpt", "last.ckpt"]
    assert torch.load(last, weights_only=False)["global_step"] == 4
    assert not [w for w in recwarn if "exists and is not empty" in str(w.message)]


def run_two_processes(args: list[str], timeout: int = 600) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "swirl_lightning", "fit", *args], env=env, timeout=timeout, check=False,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout[-4000:]
    return result.stdout


def test_fit_with_ddp_on_two_cpu_processes(tmp_path):
    output = run_two_processes([*TINY_WARMUP, "--trainer.default_root_dir", str(tmp_path),
                                "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_epochs", "2"])
    for rank in (0, 1):
        assert f"[rank {rank}/2] DDPStrategy" in output
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    losses = scalars(tmp_path / "tb" / "gsm8k_warmup" / "fit" / "version_0", "train/loss")
    assert sorted(losses) == [0, 1]


def test_fit_with_fsdp2_on_two_cpu_processes_shards_the_parameters(tmp_path):
    """conf/gsm8k_fsdp.yaml on 2 CPU processes (gloo): swirl objective, full fine-tuning, FSDP2."""
    output = run_two_processes([
        "--config", str(CONF / "gsm8k_fsdp.yaml"),
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.precision", "32-true",
        "--trainer.strategy.init_args.data_parallel_size", "2",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
        "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
        "--policy.name", "tiny-random", "--policy.adapter", "null",
        "--model.swirl.group_size", "2", "--sampling.max_new_tokens", "4",
        "--model.evaluation.sampling.max_new_tokens", "4", "--model.evaluation.sampling.batch_size", "1",
        "--task.max_actions", "2", "--task.limit", "10", "--data.train.path", "null", "--data.train.reference", "true",
        "--data.train.batch_size", "2", "--data.validation.questions", "2",
    ])
    lines = re.findall(r"\[rank (\d)/2\] ModelParallelStrategy: .*?sharded \((S\(0\))\), "
                       r"local shards hold ([\d,]+) of ([\d,]+) elements", output)
    assert sorted(rank for rank, *_ in lines) == ["0", "1"], output[-3000:]
    local = [int(n.replace(",", "")) for _, _, n, _ in lines]
    full = {int(n.replace(",", "")) for *_, n in lines}
    (total,) = full
    assert all(part < total for part in local) and sum(local) == total  # each process holds half
    assert (tmp_path / "checkpoints" / "last.ckpt").is_dir()  # a sharded checkpoint: one file per process
    assert set(scalars(tmp_path / "tb" / "gsm8k_fsdp" / "fit" / "version_0", "val/accuracy").values()) == {0.0}


def test_validate_reads_no_training_data(tmp_path):
    """`swirl validate` on a held-out split rolls out the policy only: the training file need not exist yet (the
    quickstart validates the warm start before its filter has kept anything), and an empty one is no error."""
    root = tmp_path / "run"
    quickstart = ["--config", str(CONF / "quickstart.yaml"), "--policy.name", "tiny-random", "--policy.adapter", "null",
                  "--model.evaluation.sampling.max_new_tokens", "4", "--task.max_actions", "2",
                  "--data.validation.questions", "2", "--trainer.enable_progress_bar", "false",
                  "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root)]
    empty = tmp_path / "kept.jsonl"
    empty.write_text("")
    assert swirl_main(["validate", *quickstart, "--data.train.path", str(empty)]) == 0
    validated = root / "tb" / "quickstart" / "validate" / "version_0"
    assert len(read_trajectories(next((validated / "rollouts").iterdir()))) == 2
    # fit still needs something to train on, and says so.
    assert swirl_main(["fit", *quickstart, "--data.train.path", str(empty)]) == 2
