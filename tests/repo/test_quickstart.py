"""scripts/quickstart.sh (what `make quickstart` runs) end to end with a tiny random model: every stage of the
loop (tools, generate, filter, validate, fit swirl) runs as the README says and leaves its outputs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from swirl_lightning.core.trajectory import read_trajectories

pytestmark = pytest.mark.integration  # starts processes or runs whole stages: not in make test-fast

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_script_runs_the_whole_loop_with_a_tiny_model(tmp_path):
    run = tmp_path / "quickstart"
    env = dict(
        os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1",
        RUN=str(run), MODEL="tiny-random", ADAPTER="", QUESTIONS="2", SAMPLES="2", MAX_NEW_TOKENS="8", MAX_ACTIONS="3",
        FILTER_MODE="none",  # a random model's steps are never GOOD: keep them all so there is something to fit
        FIT_ARGS="--sampling.max_new_tokens 4 --model.evaluation.sampling.max_new_tokens 4 --task.max_actions 2 "
                 "--data.validation.questions 2 --trainer.max_steps 2 --trainer.val_check_interval 2",
    )
    result = subprocess.run(["bash", str(ROOT / "scripts" / "quickstart.sh")], env=env, cwd=tmp_path, timeout=600,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    warned = [line for line in result.stdout.splitlines() if re.search(r"\b\w*Warning\b|^\s*warnings\.warn\(", line)]
    assert warned == [], "the quickstart printed Python warnings"
    assert "Received SIGTERM" not in result.stdout  # a tool worker ending at exit is not news
    # a world is written, and the search tool reads the first question's first gold article there
    first = json.loads((run / "world" / "questions.jsonl").read_text().splitlines()[0])
    assert f"{first['path'][0]}: {first['path'][0]} is a" in result.stdout
    assert len(read_trajectories(run / "trajectories.jsonl")) == 4
    assert len(read_trajectories(run / "kept.jsonl")) == 4
    assert json.loads((run / "kept.stats.json").read_text())["mode"] == "none"
    # Validation before (the validate run) and after fit (the fit run) print their figures and keep their rollouts.
    assert result.stdout.count("val at step") == 2
    assert (run / "checkpoints" / "last.ckpt").exists() and (run / "export" / "adapter_config.json").exists()
    rollouts = sorted(p.relative_to(run / "tb") for p in (run / "tb").rglob("rollouts/*.jsonl"))
    assert [str(p) for p in rollouts] == ["quickstart/fit/version_0/rollouts/val-step000002.jsonl",
                                          "quickstart/validate/version_0/rollouts/val-step000000.jsonl"]
    # It ends with the command that opens TensorBoard with the Trajectories dashboard.
    assert f"tensorboard --logdir {run}/tb --port 6006    then open http://localhost:6006/#trajectories" in \
        result.stdout.splitlines()[-1]
    # It ends by saying what training did: the probe's reward at the first and last step, validation before/after.
    assert "training reward (fresh samples at the" in result.stdout and "at step 0 ->" in result.stdout
    assert "validation accuracy on the same 2 held-out questions: 0.0% -> 0.0%" in result.stdout
    assert "validation is no worse than the warm start's" in result.stdout or "validation got worse:" in result.stdout
    # 0 -> 0 of 2: it says plainly that training gained nothing
    assert "no gain: training did not lift accuracy on these 2 held-out questions." in result.stdout
