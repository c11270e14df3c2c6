"""The benchmark scripts' smoke modes run (tiny model, seconds), so the scripts cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_generation_benchmark_smoke(tmp_path):
    pytest.importorskip("swirl_calculator", reason="the calculator plugin is not installed")
    out = tmp_path / "generation.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generation_bench.py"), "--smoke", "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    assert [run["batch_size"] for run in result["runs"]] == [1, 4]
    assert all(run["generated_tokens"] > 0 and run["trajectories"] >= 4 for run in result["runs"])
    assert out.with_suffix(".png").stat().st_size > 0
