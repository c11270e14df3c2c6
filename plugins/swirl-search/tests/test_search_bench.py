"""The search benchmark script runs end to end in --smoke mode (tiny corpus, 10 queries)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # starts processes or runs whole stages: not in make test-fast

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "search_bench.py"


@pytest.mark.skipif(not BENCH.is_file(), reason="benchmarks/ is not beside this plugin checkout")
def test_search_bench_smoke_writes_report_and_histogram(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "search.json"
    repo_root = BENCH.parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(repo_root), *sys.path])}
    completed = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["smoke"] is True
    assert report["latency_ms"]["queries"] == report["corpus"]["questions"] == 10
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert report["timing_s"]["index_build_cold"] > report["timing_s"]["index_reload_from_cache"]
    assert 0.0 <= report["retrieval"]["top1_gold_title_share"] <= 1.0
    assert report["retrieval"]["top1_gold_title_hits"] == round(
        report["retrieval"]["top1_gold_title_share"] * 10)
    assert {"platform", "cpu_count", "torch", "sentence_transformers"} <= set(report["machine"])
    assert "--smoke" in report["command"]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
