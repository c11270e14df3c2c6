"""Rollout throughput: batched multi-step generation with the calculator on GSM8K, at several batch sizes.

    python benchmarks/generation_bench.py [--batch-sizes 1 8 16 32] [--out benchmarks/results/generation.json]
    python benchmarks/generation_bench.py --smoke      # tiny random model, seconds (run by the test suite)

For each batch size B it rolls out ``max(3 B, --min-trajectories)`` trajectories (GSM8K train questions, one
sample each, the real prompt without few-shot turns, and the calculator), so that finished conversations
are replaced and the batch stays full, and reports generated tokens/s (over the whole run, and over the part
before the queue ran dry, while every slot had work: the final drain of a short run is a fixed cost that a long
run amortises), trajectories/s and decode tokens/s by turn index (full-batch decode steps), which must not fall
with the turn index beyond what longer attention costs. Writes a JSON result (machine, versions, command, figures) and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine_info, subplots, write_result  # noqa: E402


def run_batch_size(policy, tokenizer, settings, examples, batch_size: int, args) -> dict:
    from swirl_lightning.core.config import SamplingConfig
    from swirl_lightning.rollout.conversation import conversations
    from swirl_lightning.rollout.engine import GenerationEngine

    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=1.0, batch_size=batch_size, seed=0)
    engine = GenerationEngine(policy, tokenizer, sampling, stop_strings=settings.stop_strings)
    finished = []
    started = time.perf_counter()
    engine.run(conversations(examples, 1, settings), lambda c: finished.append(c.trajectory))
    wall = time.perf_counter() - started
    stats = engine.stats
    return {
        "batch_size": batch_size,
        "trajectories": len(finished),
        "wall_seconds": round(wall, 2),
        "generated_tokens": stats.generated_tokens,
        "prefill_tokens": stats.prefill_tokens,
        "prefix_cached_tokens": stats.prefix_cached_tokens,
        "tokens_per_second": round(stats.generated_tokens / wall, 2),
        # While conversations were still waiting for a slot (the batch kept full); the rest is the final drain.
        "queued_seconds": round(stats.queued_seconds, 2),
        "queued_tokens_per_second": round(stats.queued_tokens / max(stats.queued_seconds, 1e-9), 2),
        "trajectories_per_second": round(len(finished) / wall, 4),
        "prefill_seconds": round(stats.prefill_seconds, 2),
        "decode_seconds": round(stats.decode_seconds, 2),
        "other_seconds": round(wall - stats.prefill_seconds - stats.decode_seconds, 2),
        "decode_tokens_per_second_by_turn": {str(k): round(v, 2) for k, v in stats.tokens_per_second_by_turn().items()},
        "steps_mean": sum(len(t.steps) for t in finished) / max(len(finished), 1),
    }


def plot(result: dict):  # the figure write_result saves
    runs = result["runs"]
    fig, (left, right) = subplots(1, 2, figsize=(11, 4))
    sizes = [r["batch_size"] for r in runs]
    left.plot(sizes, [r["tokens_per_second"] for r in runs], marker="o", label="whole run (wall)")
    left.plot(sizes, [r["queued_tokens_per_second"] for r in runs], marker="s", label="while the batch was kept full")
    left.legend()
    left.set_xlabel("batch size")
    left.set_ylabel("generated tokens/s")
    left.set_title(f"{result['model']}: rollout throughput")
    left.grid(alpha=0.3)
    for r in runs:
        by_turn = r["decode_tokens_per_second_by_turn"]
        right.plot([int(k) for k in by_turn], list(by_turn.values()), marker=".", label=f"batch {r['batch_size']}")
    right.set_xlabel("turn index")
    right.set_ylabel("decode tokens/s")
    right.set_title("decode throughput by turn (prefill excluded)")
    right.legend()
    right.grid(alpha=0.3)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--min-trajectories", type=int, default=8, help="trajectories per batch size, at least")
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", default=str(HERE / "results" / "generation.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny random model, batch 1 and 4, a few trajectories")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.batch_sizes, args.min_trajectories, args.max_steps, args.max_new_tokens = "tiny-random", [1, 4], 4, 2, 8

    from swirl_lightning.core.config import PolicyConfig, TaskConfig, ToolsConfig
    from swirl_lightning.core.tasks import load_task
    from swirl_lightning.rollout.conversation import ChatRenderer, RolloutSettings
    from swirl_lightning.rollout.generate import load_policy

    policy, tokenizer = load_policy(PolicyConfig(args.model), "auto")
    settings = RolloutSettings.for_task(TaskConfig("gsm8k", max_steps=args.max_steps, few_shot=False),
                                        ToolsConfig(names=["calculator"]), renderer=ChatRenderer(tokenizer),
                                        policy_name=args.model)
    examples = load_task("gsm8k", "train", max(3 * max(args.batch_sizes), args.min_trajectories))
    result = {"benchmark": "generation", "command": " ".join([sys.executable, *sys.argv]), "model": args.model,
              "machine": machine_info(), "max_steps": args.max_steps, "max_new_tokens": args.max_new_tokens, "runs": []}
    for batch_size in args.batch_sizes:
        count = max(3 * batch_size, args.min_trajectories)
        run = run_batch_size(policy, tokenizer, settings, examples[:count], batch_size, args)
        run["load_average_after"] = os.getloadavg()
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
    base = result["runs"][0]["tokens_per_second"]
    result["speedup_vs_first"] = {str(r["batch_size"]): round(r["tokens_per_second"] / base, 2) for r in result["runs"]}
    queued_base = result["runs"][0]["queued_tokens_per_second"]
    result["queued_speedup_vs_first"] = {str(r["batch_size"]): round(r["queued_tokens_per_second"] / queued_base, 2)
                                         for r in result["runs"]}
    out = Path(args.out)
    write_result(result, out, plot)
    print(f"speed-up over batch {args.batch_sizes[0]}: {result['speedup_vs_first']} on wall time, "
          f"{result['queued_speedup_vs_first']} while the batch was kept full")
    return 0


if __name__ == "__main__":
    sys.exit(main())
