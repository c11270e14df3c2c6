"""Nothing lost, nothing stale (issue 27): a resumed run never mixes in results of other data or weights, and a new
``fit`` never overwrites what an earlier run, or the user, left in its folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch

from swirl_lightning.cli import main as swirl
from swirl_lightning.core.trajectory import read_trajectories

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

ROOT = Path(__file__).resolve().parents[2]


def one_line_error(capsys, *argv: str) -> str:
    """Run ``swirl argv`` in process; it must fail with exit code 2 and one line on stderr. Returns that line."""
    import logging

    # Lightning's log handlers keep the stderr of the test that first used them; give them this test's.
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for handler in {h for lg in loggers for h in lg.handlers}:
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr
    capsys.readouterr()
    assert swirl(list(argv)) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("INFO:")
             and not line.startswith(("Seed set", "GPU available", "TPU available"))]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def write_questions(path: Path, answers: list[str]) -> None:
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": answer}) + "\n"
                            for i, answer in enumerate(answers)))


def save_random_adapter(folder: Path, seed: int) -> None:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    from swirl_lightning.core.models import load_model

    torch.manual_seed(seed)
    model = get_peft_model(load_model("tiny-random"), PeftLoraConfig(r=2, lora_alpha=4, target_modules="all-linear",
                                                                     init_lora_weights=False))
    model.save_pretrained(folder)


def test_a_resumed_generate_refuses_an_edited_questions_file_or_new_adapter_weights(tmp_path, capsys):
    questions, adapter, out = tmp_path / "questions.jsonl", tmp_path / "adapter", tmp_path / "t.jsonl"
    write_questions(questions, ["0", "2"])
    save_random_adapter(adapter, seed=1)
    argv = ["generate", "--policy.name", "tiny-random", "--policy.adapter", str(adapter), "--task.name", "jsonl",
            "--task.data_path", str(questions), "--task.max_actions", "2", "--sampling.max_new_tokens", "4",
            "--samples", "2", "--progress", "false", "--output", str(out)]
    assert swirl(argv) == 0
    assert swirl(argv) == 0  # unchanged inputs: a resume (nothing left to do)
    merged = out.read_text()

    write_questions(questions, ["0", "3"])  # a gold answer corrected in place: the same name, other content
    line = one_line_error(capsys, *argv)
    assert f"the content of task.data_path {questions} changed" in line and "--overwrite true" in line
    write_questions(questions, ["0", "2"])
    save_random_adapter(adapter, seed=2)  # new weights in the same folder (a second fit exported there)
    line = one_line_error(capsys, *argv)
    assert f"the content of policy.adapter {adapter} changed" in line and "--output" in line
    assert out.read_text() == merged  # refused before anything was written

    assert swirl([*argv, "--overwrite", "true"]) == 0
    assert len(read_trajectories(out)) == 4


class Killed(Exception):
    """Stands for the process dying mid-evaluation."""


def test_a_resumed_validation_never_reuses_rollouts_scored_against_other_gold_answers(tmp_path, capsys):
    from swirl_lightning.core.config import PolicyConfig, TaskConfig, greedy
    from swirl_lightning.training.callbacks import JOURNAL_DIR
    from swirl_lightning.training.config import EvaluationConfig, LoraConfig, TrainDataConfig, ValidationDataConfig
    from swirl_lightning.training.data import SwirlDataModule
    from swirl_lightning.training.module import SwirlModule

    questions, root = tmp_path / "questions.jsonl", tmp_path / "run"
    task = TaskConfig(name="jsonl", data_path=str(questions), max_actions=2, few_shot=False)

    def validate(kill_after: int | None = None) -> list[str]:
        """Validate the 4 questions one per batch (dying after ``kill_after`` batches); the ids rolled out live."""
        L.seed_everything(0, verbose=False)  # the same LoRA initialisation: the same weights every time
        data = SwirlDataModule(task=task, train=TrainDataConfig(reference=True),  # unused: validation has a split
                               validation=ValidationDataConfig(questions=4, split="validation"),
                               validation_batch_size=1, tokenizer="tiny-random")
        module = SwirlModule(policy=PolicyConfig(name="tiny-random"), task=task, lora=LoraConfig(r=4, alpha=8),
                             evaluation=EvaluationConfig(sampling=greedy(max_new_tokens=6, batch_size=1),
                                                         log_trajectories=0))
        rolled_out, rollout = [], module.rollout

        def counted(examples):
            if len(rolled_out) == kill_after:
                raise Killed
            rolled_out.extend(e.id for e in examples)
            return rollout(examples)

        module.rollout = counted
        trainer = L.Trainer(accelerator="cpu", default_root_dir=root, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False)
        try:
            trainer.validate(module, data, verbose=False)
        except Killed:
            pass
        return rolled_out

    write_questions(questions, ["0", "2", "4", "6"])
    assert validate(kill_after=2) == ["q0", "q1"]
    (stale,) = (root / JOURNAL_DIR).glob("*.jsonl")
    assert {t.gold_answer for t in read_trajectories(stale)} == {"0", "2"}
    capsys.readouterr()

    write_questions(questions, ["1", "3", "5", "7"])  # the gold answers corrected
    assert validate() == ["q0", "q1", "q2", "q3"]  # nothing reused: the journal's outcomes were scored on old answers
    out = capsys.readouterr().out
    assert f"not resuming from {stale}: it was rolled out on other questions or gold answers" in out
    assert "already rolled out" not in out and not list((root / JOURNAL_DIR).glob("*.jsonl"))

    write_questions(questions, ["1", "3", "5", "7"])  # the same gold data again: a killed run does resume
    validate(kill_after=1)
    assert validate() == ["q1", "q2", "q3"]


WARMUP = ["--config", str(ROOT / "conf" / "gsm8k_warmup.yaml"), "--policy.name", "tiny-random",
          "--model.evaluation.sampling.max_new_tokens", "4", "--task.max_actions", "2", "--task.limit", "8",
          "--data.train.batch_size", "4", "--data.validation.questions", "2", "--trainer.max_epochs", "-1",
          "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false", "--trainer.accumulate_grad_batches", "1",
          "--trainer.callbacks.init_args.every_n_train_steps", "1", "--trainer.log_every_n_steps", "1"]


def test_fit_never_overwrites_checkpoints_or_an_export_it_did_not_write(tmp_path, capsys):
    root = tmp_path / "run"
    fit = ["fit", *WARMUP, "--trainer.default_root_dir", str(root)]
    checkpoints, export = root / "checkpoints", root / "export"
    assert swirl([*fit, "--trainer.max_steps", "2"]) == 0
    earlier = {p.name: p.read_bytes() for p in [*checkpoints.iterdir(), *export.iterdir()]}
    assert "last.ckpt" in earlier and "adapter_model.safetensors" in earlier

    # A second fit into the same folder: refused before training, the earlier run's files untouched.
    line = one_line_error(capsys, *fit, "--trainer.max_steps", "1")
    assert f"export folder {export} holds the export of an earlier run" in line and "--overwrite true" in line
    line = one_line_error(capsys, *fit, "--trainer.max_steps", "1", "--model.export.dir", str(tmp_path / "other"))
    assert f"checkpoint folder {checkpoints} holds an earlier run's checkpoints (epoch=" in line and "last.ckpt" in line
    assert {p.name: p.read_bytes() for p in [*checkpoints.iterdir(), *export.iterdir()]} == earlier

    # A resume replaces its own export, but never a file of the user's in the folder it is pointed at.
    user = tmp_path / "project"
    user.mkdir()
    (user / "README.md").write_text("my notes\n")
    line = one_line_error(capsys, *fit, "--trainer.max_steps", "3", "--ckpt_path", "last", "--model.export.dir",
                          str(user))
    assert f"export folder {user} holds files no export wrote (README.md)" in line
    assert [p.name for p in user.iterdir()] == ["README.md"] and (user / "README.md").read_text() == "my notes\n"
    assert swirl([*fit, "--trainer.max_steps", "3", "--ckpt_path", "last"]) == 0
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 3
    assert (export / "adapter_model.safetensors").read_bytes() != earlier["adapter_model.safetensors"]

    # --overwrite true starts over: the earlier run's checkpoints go (a step-3 one would outrank the new run's).
    assert swirl([*fit, "--trainer.max_steps", "1", "--overwrite", "true"]) == 0
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch=0-step=1.ckpt", "last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 1
