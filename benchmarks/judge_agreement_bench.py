"""Does the gold-free LLM step judge carry signal? The ``process`` judge's P(GOOD) against the reference-guided
judge's verdicts on the same steps of policy rollouts.

    python benchmarks/judge_agreement_bench.py --trajectories runs/learning/trajectories.jsonl   # ~5 min on 2 cores
    python benchmarks/judge_agreement_bench.py --smoke       # tiny random model (run by the test suite)

The steps are drawn from a GSM8K trajectory file (e.g. the learning benchmark's warm-start samples): every step is
judged by the ``reference`` judge (a calculator result equal to a value of the worked solution, or the right final
answer), then ``--steps`` valid steps are drawn, half GOOD and half BAD by that judge (invalid actions are left out:
the process judge scores them 0 without asking its model). The ``process`` judge (``--judge-model``, default the
SmolLM2-135M-Instruct it uses by default) scores each. Reported: ROC AUC of P(GOOD) for the reference verdict
(0.5 = no signal) with a bootstrap 95% interval, the agreement at the judge's threshold, and P(GOOD) by class.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import command_line, machine_info, subplots, write_result  # noqa: E402


def roc_auc(positive: list[float], negative: list[float]) -> float:
    """P(a random positive scores above a random negative), ties counting half (the Mann-Whitney U statistic)."""
    if not positive or not negative:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def bootstrap_auc(positive: list[float], negative: list[float], rounds: int = 1000, seed: int = 0) -> list[float]:
    """A 95% percentile interval of the AUC, resampling each class."""
    rng = random.Random(seed)
    values = sorted(roc_auc(rng.choices(positive, k=len(positive)), rng.choices(negative, k=len(negative)))
                    for _ in range(rounds))
    return [values[int(0.025 * rounds)], values[int(0.975 * rounds) - 1]]


def draw_steps(path: Path, count: int, seed: int) -> tuple[list, dict]:
    """Valid steps with their states and reference verdicts: ``count`` of them, half GOOD, half BAD."""
    from swirl_lightning.core.tasks import load_task
    from swirl_lightning.judging.reference import ReferenceJudge
    from swirl_lightning.judging.steps import judge_trajectories
    from swirl_lightning.core.trajectory import decompose, read_trajectories

    trajectories = read_trajectories(path)
    examples = {e.id: e for e in load_task("gsm8k", "full")}
    judge = ReferenceJudge()
    judge_trajectories(trajectories, judge, examples, progress=False)
    by_verdict: dict[str, list] = {"GOOD": [], "BAD": []}
    for trajectory in trajectories:
        for state, step in decompose(trajectory):
            if step.action.kind == "invalid":
                continue
            verdict = next(j.verdict for j in step.judgements if j.judge == judge.judge_id)
            by_verdict[verdict].append((state, step))
    rng = random.Random(seed)
    half = min(count // 2, len(by_verdict["GOOD"]), len(by_verdict["BAD"]))
    drawn = [(pair, 1) for pair in rng.sample(by_verdict["GOOD"], half)] + \
            [(pair, 0) for pair in rng.sample(by_verdict["BAD"], half)]
    pool = {"trajectories": len(trajectories), "valid_steps_good": len(by_verdict["GOOD"]),
            "valid_steps_bad": len(by_verdict["BAD"])}
    return drawn, pool


def plot(result: dict):  # the figure write_result saves
    fig, axis = subplots(figsize=(6, 4))
    bins = [i / 20 for i in range(21)]
    axis.hist(result["scores"]["GOOD"], bins=bins, alpha=0.6, label="reference GOOD", color="tab:green")
    axis.hist(result["scores"]["BAD"], bins=bins, alpha=0.6, label="reference BAD", color="tab:red")
    axis.set_xlabel(f"P(GOOD) from the process judge ({result['judge_model']})")
    axis.set_ylabel("steps")
    low, high = result["auc_ci95"]
    axis.set_title(f"AUC {result['auc']:.3f} (95% CI {low:.3f}-{high:.3f}), {result['steps']} steps", fontsize=10)
    axis.legend()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectories", default="runs/learning/trajectories.jsonl", help="GSM8K rollouts to draw from")
    parser.add_argument("--steps", type=int, default=200, help="steps to score (half GOOD, half BAD)")
    parser.add_argument("--judge-model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "judge_agreement.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny random judge on reference trajectories")
    args = parser.parse_args(argv)
    from swirl_lightning.judging.local_lm import ProcessJudge

    started = time.perf_counter()
    source = Path(args.trajectories)
    if args.smoke:
        # Reference trajectories hold GOOD steps; a wrong final answer makes a BAD one per trajectory.
        from swirl_lightning.core.tasks import load_task
        from swirl_lightning.core.tasks.gsm8k import gsm8k_reference_trajectory
        from swirl_lightning.core.trajectory import parse_action, write_jsonl

        args.judge_model, args.steps = "tiny-random", 4
        trajectories = [gsm8k_reference_trajectory(e, tool_tag="math_exp") for e in load_task("gsm8k", "train", limit=3)]
        for t in trajectories:
            t.steps[-1].text = "So the answer is <answer>-1</answer>"
            t.steps[-1].action = parse_action(t.steps[-1].text, {})
        source = Path(args.out).with_suffix(".trajectories.jsonl")
        write_jsonl(source, trajectories)
    if not source.exists():
        raise SystemExit(f"{source}: no such trajectory file; run benchmarks/learning_bench.py first (its generate "
                         f"stage writes it) or name GSM8K rollouts with --trajectories")
    drawn, pool = draw_steps(source, args.steps, args.seed)
    judge = ProcessJudge(args.judge_model, batch_size=args.batch_size)
    scored = time.perf_counter()
    scores = [j.score for j in judge.judge_steps([pair for pair, _ in drawn])]
    judge_seconds = time.perf_counter() - scored
    good = [s for s, (_, label) in zip(scores, drawn) if label == 1]
    bad = [s for s, (_, label) in zip(scores, drawn) if label == 0]
    agree = sum((s >= judge.threshold) == bool(label) for s, (_, label) in zip(scores, drawn))
    result = {
        "benchmark": "judge_agreement",
        "command": command_line(argv),
        "machine": machine_info(), "trajectories": str(args.trajectories), "pool": pool,
        "judge_model": args.judge_model, "judge_id": judge.judge_id, "threshold": judge.threshold,
        "steps": len(drawn), "auc": roc_auc(good, bad), "auc_ci95": bootstrap_auc(good, bad),
        "agreement_at_threshold": agree / max(len(drawn), 1),
        "mean_p_good": {"GOOD": sum(good) / max(len(good), 1), "BAD": sum(bad) / max(len(bad), 1)},
        "judged_good_share": {"GOOD": sum(s >= judge.threshold for s in good) / max(len(good), 1),
                              "BAD": sum(s >= judge.threshold for s in bad) / max(len(bad), 1)},
        "judge_seconds": judge_seconds, "wall_seconds": time.perf_counter() - started,
        "scores": {"GOOD": good, "BAD": bad},
    }
    write_result(result, Path(args.out), plot)
    print(f"{len(drawn)} steps: AUC {result['auc']:.3f} (95% CI {result['auc_ci95'][0]:.3f}-{result['auc_ci95'][1]:.3f}), "
          f"agreement at {judge.threshold}: {100 * result['agreement_at_threshold']:.1f}%, mean P(GOOD) "
          f"GOOD {result['mean_p_good']['GOOD']:.3f} / BAD {result['mean_p_good']['BAD']:.3f}; "
          f"{judge_seconds:.0f} s judging")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
