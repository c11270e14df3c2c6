"""Retrieval on generated worlds: does a search find the gold article? BM25 against dense (MiniLM) embeddings.

For every question of ``--worlds`` validation worlds and every article of its gold path, one search in the question's
own world (as a rollout's episode searches) with four kinds of query, and the share whose top-1 hit is that article:

- ``name``: the entity's name, as the gold trajectories write it (``Ilvo Marek``);
- ``lowercase``: the same in lower case;
- ``name_and_relation``: the name and the relation sought (``Ilvo Marek employer``);
- ``question``: the question itself (first hop only: the only entity it names).

    python benchmarks/worlds_retrieval_bench.py                # 30 validation worlds, both retrievers
    python benchmarks/worlds_retrieval_bench.py --smoke        # 2 worlds (run by the test suite)

The search plugin's default retriever for episode corpora (``$SWIRL_SEARCH_EPISODE_RETRIEVER``) follows this result.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import command_line, machine_info, parse_benchmark_args, subplots, write_result  # noqa: E402

QUERY_KINDS = ("name", "lowercase", "name_and_relation", "question")
RETRIEVERS = ("bm25", "dense")


def queries(example) -> list[tuple[str, str, str]]:
    """(kind, query, gold title) for each article of the example's gold path."""
    out = []
    for hop, (title, relation) in enumerate(zip(example.metadata["path"], example.metadata["relations"])):
        out += [("name", title, title), ("lowercase", title.lower(), title),
                ("name_and_relation", f"{title} {relation.replace('_', ' ')}", title)]
        if hop == 0:
            out.append(("question", example.question, title))
    return out


def measure(examples, retriever: str) -> dict:
    from swirl_search.plugin import episode_index

    os.environ["SWIRL_SEARCH_EPISODE_RETRIEVER"] = retriever
    hits = {kind: [0, 0] for kind in QUERY_KINDS}
    started = time.perf_counter()
    for example in examples:
        index = episode_index(example.metadata["corpus"], example.metadata["world"])
        for kind, query, gold in queries(example):
            found = index.search(query, k=1)
            hits[kind][0] += bool(found) and found[0][0].title == gold
            hits[kind][1] += 1
    return {"seconds": time.perf_counter() - started,
            "recall_at_1": {kind: right / total for kind, (right, total) in hits.items()},
            "queries": {kind: total for kind, (_, total) in hits.items()}}


def plot(result: dict):
    fig, axis = subplots(figsize=(8, 4))
    width = 0.8 / len(result["retrievers"])
    for i, (name, figures) in enumerate(result["retrievers"].items()):
        values = [100 * figures["recall_at_1"][kind] for kind in QUERY_KINDS]
        axis.bar([k + i * width for k in range(len(QUERY_KINDS))], values, width, label=name)
    axis.set_xticks([k + width / 2 for k in range(len(QUERY_KINDS))], QUERY_KINDS)
    axis.set_ylabel("gold article at top-1 (%)")
    axis.set_title(f"search in the episode's world: {result['worlds']} validation worlds", fontsize=10)
    axis.legend()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=int, default=30)
    parser.add_argument("--out", default=str(HERE / "results" / "worlds_retrieval.json"))
    parser.add_argument("--smoke", action="store_true", help="2 worlds")
    args = parse_benchmark_args(parser, argv)
    worlds = 2 if args.smoke else args.worlds
    from swirl_lightning.core.tasks import load_task
    from swirl_lightning.core.tasks.worlds import write_worlds

    with tempfile.TemporaryDirectory() as folder:
        record = write_worlds(folder, "validation", worlds)
        examples = load_task("worlds", "validation", path=folder)
        result = {"benchmark": "worlds_retrieval", "command": command_line(argv), "machine": machine_info(),
                  "worlds": worlds, "questions": len(examples), "generator": record,
                  "retrievers": {retriever: measure(examples, retriever) for retriever in RETRIEVERS}}
    write_result(result, Path(args.out), plot)
    for name, figures in result["retrievers"].items():
        print(name, {kind: f"{100 * value:.1f}%" for kind, value in figures["recall_at_1"].items()},
              f"{figures['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
