"""The benchmark scripts' smoke modes run (tiny model, seconds), so the scripts cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_smoke(script: str, out: Path, *args: str) -> dict:
    """Run ``benchmarks/<script> --smoke`` writing ``out``; return its JSON result (its PNG must exist too)."""
    completed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", *args, "--out", str(out)],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert out.with_suffix(".png").stat().st_size > 0
    return json.loads(out.read_text())


def test_generation_benchmark_smoke(tmp_path):
    pytest.importorskip("swirl_calculator", reason="the calculator plugin is not installed")
    result = run_smoke("generation_bench.py", tmp_path / "generation.json")
    assert [run["batch_size"] for run in result["runs"]] == [1, 4]
    assert all(run["generated_tokens"] > 0 and run["trajectories"] >= 4 for run in result["runs"])


def test_sft_speed_benchmark_smoke(tmp_path):
    pytest.importorskip("trl", reason="the bench extra (trl) is not installed")
    result = run_smoke("sft_speed_bench.py", tmp_path / "sft_speed.json", "--threads", "1")
    ours, trl = result["sides"]
    assert (ours["side"], trl["side"]) == ("swirl-lightning", "trl")
    assert result["data"]["trajectories"] == 4 and result["data"]["steps_mean"] >= 5
    # One row per trajectory against one sample per step: TRL's samples hold every state again.
    assert ours["rows"] == 4 and trl["rows"] == round(4 * result["data"]["steps_mean"])
    assert trl["real_tokens"] > 2 * ours["real_tokens"]
    assert all(side["epoch_seconds"] > 0 and side["losses"] and side["peak_memory_mb"] > 0 for side in result["sides"])


def test_rl_speed_benchmark_smoke(tmp_path):
    pytest.importorskip("trl", reason="the bench extra (trl) is not installed")
    result = run_smoke("rl_speed_bench.py", tmp_path / "rl_speed.json", "--threads", "1")
    assert [(r["side"], r["group_size"]) for r in result["runs"]] == [("swirl-lightning", 2), ("trl", 2)]
    for run in result["runs"]:
        assert run["states"] == 4 and run["sampled_actions"] == 8  # 2 steps x 2 states x G=2
        assert run["generation_seconds"] > 0 and run["judging_seconds"] > 0 and run["update_seconds"] > 0
