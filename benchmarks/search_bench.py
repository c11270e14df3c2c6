"""Benchmark the swirl-search tool on the pooled HotPotQA corpus (train + dev context paragraphs).

Measures, cold in a temporary cache: corpus build time, model load time, index build (encoding)
time, the reload time of the cached index, the latency of single queries (p50 / p99 over every
question), and retrieval quality: the share of questions whose top-1 (and top-5) hit is one of
their gold supporting paragraphs when the question itself is the query.

    python benchmarks/search_bench.py [--out benchmarks/results/search.json] [--smoke]

Writes the JSON report and a latency histogram PNG beside it (same name, ``.png``). ``--smoke``
uses the first 5 questions of each file (about 100 paragraphs) and their 10 questions: seconds.
Needs swirl-lightning (for its packaged data) and swirl-search installed; runs offline on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from common import parse_benchmark_args  # noqa: E402
from swirl_search import settings  # noqa: E402
from swirl_search.corpus import build_hotpotqa_corpus, packaged_hotpotqa_files  # noqa: E402
from swirl_search.index import SearchIndex, load_model  # noqa: E402

SMOKE_QUESTIONS_PER_FILE = 5
RECALL_DEPTH = 5


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = _parse_args(argv)
    inputs = _input_files(args.data_dir)
    questions = [record for path in inputs for record in _read_questions(path, args.smoke)]
    with tempfile.TemporaryDirectory(prefix="search-bench-") as scratch_name:
        scratch = Path(scratch_name)
        if args.smoke:
            inputs = [_write_subset(questions, scratch / "hotpotqa-smoke.jsonl")]
        figures = _measure(inputs, questions, scratch, model_path=args.embedding_model)
    report = {
        "benchmark": "swirl-search dense retrieval on pooled HotPotQA context paragraphs",
        "command": shlex.join(["python", *sys.argv]),
        "smoke": args.smoke,
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": [str(path) for path in _input_files(args.data_dir)],
        "machine": _machine_info(),
        **figures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    latencies_ms = report.pop("_latencies_ms")
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot_path = args.out.with_suffix(".png")
    _plot_latency(latencies_ms, report, plot_path)
    summary_keys = ("corpus", "timing_s", "latency_ms", "retrieval")
    print(json.dumps({key: report[key] for key in summary_keys}, indent=2))
    print(f"wrote {args.out} and {plot_path}")
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search.json"),
                        help="JSON report path; the histogram goes beside it as .png")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny corpus and 10 queries, to check the script runs (seconds)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with HotPotQA train.jsonl and dev.jsonl "
                             "(default: the data shipped with swirl-lightning)")
    parser.add_argument("--embedding-model", type=Path, default=None,
                        help="sentence-transformers model folder (default: the packaged MiniLM); not the policy")
    return parse_benchmark_args(parser, argv)


def _input_files(data_dir: Path | None) -> list[Path]:
    if data_dir is None:
        return packaged_hotpotqa_files()
    paths = [data_dir / "train.jsonl", data_dir / "dev.jsonl"]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"expected HotPotQA files {missing} in --data-dir {data_dir}")
    return paths


def _read_questions(path: Path, smoke: bool) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                records.append(json.loads(line))
            if smoke and len(records) == SMOKE_QUESTIONS_PER_FILE:
                break
    return records


def _write_subset(records: list[dict], out: Path) -> Path:
    out.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return out


def _measure(inputs: list[Path], questions: list[dict], scratch: Path,
             model_path: Path | None) -> dict:
    corpus_path = scratch / "corpus.jsonl"
    cache_dir = scratch / "cache"

    start = time.perf_counter()
    documents = build_hotpotqa_corpus(inputs, corpus_path)
    corpus_s = time.perf_counter() - start

    index = SearchIndex(corpus_path, model_path=model_path, cache_dir=cache_dir)
    start = time.perf_counter()
    load_model(index.model_path)  # includes importing torch and sentence-transformers
    model_load_s = time.perf_counter() - start

    start = time.perf_counter()
    index.build()
    index_build_s = time.perf_counter() - start
    assert index.loaded_from_cache is False, "a cold benchmark must not find a cached index"

    # A second start in the same process: only the embeddings reload; the model is in memory.
    reloaded = SearchIndex(corpus_path, model_path=model_path, cache_dir=cache_dir)
    start = time.perf_counter()
    reloaded.build()
    cached_reload_s = time.perf_counter() - start
    assert reloaded.loaded_from_cache is True, "the second build should hit the disk cache"

    index.search(questions[0]["question"], k=1)  # warm-up: first-call allocations, not latency
    latencies_ms, top1_hits, topk_hits = [], [], []
    top1_by_type: dict[str, list[bool]] = defaultdict(list)
    for record in questions:
        gold = set(record["supporting_facts"]["title"])
        start = time.perf_counter()
        best = index.search(record["question"], k=1)
        latencies_ms.append((time.perf_counter() - start) * 1000)
        hit = best[0][0].title in gold
        top1_hits.append(hit)
        top1_by_type[record.get("type", "unknown")].append(hit)
        ranked = index.search(record["question"], k=RECALL_DEPTH)
        topk_hits.append(any(doc.title in gold for doc, _ in ranked))

    latencies = np.asarray(latencies_ms)
    return {
        "corpus": {"documents": documents, "questions": len(questions),
                   "embedding_dim": index.embedding_dim,
                   "model": str(index.model_path),
                   "top_k_default": settings.DEFAULT_TOP_K},
        "timing_s": {"corpus_build": round(corpus_s, 3), "model_load": round(model_load_s, 3),
                     "index_build_cold": round(index_build_s, 3),
                     "index_reload_from_cache": round(cached_reload_s, 3)},
        "latency_ms": {"queries": len(latencies), "k": 1,
                       "p50": round(float(np.percentile(latencies, 50)), 3),
                       "p99": round(float(np.percentile(latencies, 99)), 3),
                       "mean": round(float(latencies.mean()), 3),
                       "max": round(float(latencies.max()), 3)},
        "retrieval": {
            "top1_gold_title_share": round(float(np.mean(top1_hits)), 4),
            "top1_gold_title_hits": int(np.sum(top1_hits)),
            f"top{RECALL_DEPTH}_gold_title_share": round(float(np.mean(topk_hits)), 4),
            "top1_share_by_type": {kind: {"share": round(float(np.mean(hits)), 4),
                                          "questions": len(hits)}
                                   for kind, hits in sorted(top1_by_type.items())},
        },
        "_latencies_ms": latencies_ms,
    }


def _machine_info() -> dict:
    import sentence_transformers
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_available": (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        ),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "numpy": np.__version__,
    }


def _plot_latency(latencies_ms: list[float], report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist(latencies_ms, bins=40, color="#4c72b0")
    for label, style in (("p50", "--"), ("p99", ":")):
        value = report["latency_ms"][label]
        axes.axvline(value, color="black", linestyle=style, label=f"{label} = {value:.1f} ms")
    corpus = report["corpus"]
    axes.set_title(f"swirl-search query latency (k=1, {corpus['documents']} docs, "
                   f"{corpus['questions']} queries)")
    axes.set_xlabel("latency per query (ms)")
    axes.set_ylabel("queries")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
