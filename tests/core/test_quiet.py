"""Quiet, future-proof output: the stages run with every warning turned into an error (``python -W error``), so no
deprecated API of a dependency and no warning of our own can reach a user; only the dependency noise the CLI
silences on purpose (swirl_lightning.core.quiet.DEPENDENCY_NOISE: warnings that ask the user to do nothing) is let through."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WARNING_LINE = re.compile(r"\b\w*Warning\b")

pytestmark = pytest.mark.integration


def swirl_strict(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="error")
    return subprocess.run([sys.executable, "-W", "error", "-m", "swirl_lightning", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_generate_filter_fit_and_validate_run_with_warnings_as_errors(tmp_path):
    trajectories, kept = tmp_path / "t.jsonl", tmp_path / "kept.jsonl"
    generate = ("generate", "--config", str(ROOT / "conf/generate/gsm8k_warm.yaml"), "--policy.name", "tiny-random",
                "--task.limit", "2", "--task.max_actions", "2", "--sampling.max_new_tokens", "4", "--samples", "2",
                "--progress", "false")
    steps = [
        (*generate, "--policy.adapter", "null", "--output", str(trajectories)),
        ("filter", "--config", str(ROOT / "conf/filter/gsm8k_reference.yaml"), "--mode", "none", "--progress", "false",
         "--input", str(trajectories), "--output", str(kept)),
    ]
    fit = ("--config", str(ROOT / "conf/quickstart.yaml"), "--task.name", "gsm8k", "--policy.name", "tiny-random",
           "--policy.adapter", "null",
           "--data.train.path", str(kept), "--trainer.default_root_dir", str(tmp_path / "run"),
           "--sampling.max_new_tokens", "4", "--model.evaluation.sampling.max_new_tokens", "4", "--task.max_actions", "2",
           "--data.validation.questions", "2", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
           "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false")
    # Last, the fit's exported adapter (PEFT loading it warns in a dependency) in 2 worker processes: each spawned
    # worker must be as quiet as the command itself.
    steps += [("validate", *fit), ("fit", *fit), (*generate, "--policy.adapter", str(tmp_path / "run" / "export"),
                                                 "--processes", "2", "--output", str(tmp_path / "t2.jsonl"))]
    for argv in steps:
        result = swirl_strict(*argv, cwd=tmp_path)
        assert result.returncode == 0, f"swirl {argv[0]}:\n{result.stderr[-4000:]}"
        assert not WARNING_LINE.search(result.stderr), f"swirl {argv[0]} warned:\n{result.stderr[-4000:]}"
