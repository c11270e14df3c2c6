"""Does a gold-free LLM step judge carry signal? A judge's verdicts against the reference-guided judge's on the same
steps of policy rollouts: the local ``process`` judge (P(GOOD) from a local LM) or the ``served`` judge (any
OpenAI-compatible server), for which its speed at several concurrencies is measured too.

    python benchmarks/judge_agreement_bench.py --judge.options '{batch_size: 8}'
    python benchmarks/judge_agreement_bench.py --judge.name served --trajectories runs/judge/trajectories.jsonl
    python benchmarks/judge_agreement_bench.py --judge.name served --judge.options '{base_url: http://HOST:8000/v1, model: M}'
    python benchmarks/judge_agreement_bench.py --smoke [--judge.name served]   # tiny judge / stub server (the test suite)

The judge is the library's ``judge`` group, spelled as ``swirl filter`` takes it: ``--judge.name`` (``process``, the
default here, or ``served``; ``reference`` is what they are measured against) and ``--judge.options``, the judge's
options as ``swirl judges list`` shows them. A ``served`` judge without ``base_url`` is served by ``transformers
serve``, started here on 127.0.0.1 with the local folder of its ``model`` (SmolLM2-135M-Instruct by default).

The steps are drawn from a GSM8K trajectory file (e.g. the learning benchmark's warm-start samples, or
``swirl generate --config conf/generate/gsm8k_warm.yaml --task.limit 32 --output runs/judge/trajectories.jsonl``):
every step is judged by the ``reference`` judge (a calculator result equal to a value of the worked solution, or the
right final answer), then ``--steps`` valid steps are drawn, half GOOD and half BAD by that judge (invalid actions
are left out: both judges call them BAD without asking a model).

``process``: ROC AUC of P(GOOD) for the reference verdict (0.5 = no signal) with a bootstrap 95% interval, the
agreement at the judge's threshold, and P(GOOD) by class.

``served``: the judge on every drawn step; reported: the share of steps with a verdict (the rest are judge
failures), and on those the agreement with the reference judge (accuracy with a Wilson 95% interval; ROC AUC of the
GOOD/BAD verdict, which for a 0/1 score is the balanced accuracy, with a bootstrap interval). Then the speed: the first
``--throughput-steps`` steps judged afresh (no cache) at each ``--concurrency``, with ``--throughput-max-tokens``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swirl_lightning.core.config import JudgeConfig

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import command_line, machine_info, parse_with_shared_groups, subplots, write_result  # noqa: E402
from significance import wilson_interval  # noqa: E402


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
    from swirl_lightning.core.trajectory import decompose, read_trajectories
    from swirl_lightning.judging.reference import ReferenceJudge
    from swirl_lightning.judging.steps import judge_trajectories

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
    if result.get("judge") == "served":
        return plot_served(result)
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


def plot_served(result: dict):
    fig, (verdicts, speed) = subplots(1, 2, figsize=(10, 4))
    classes = ["GOOD", "BAD"]
    bottom = [0.0, 0.0]
    for verdict, colour in (("GOOD", "tab:green"), ("BAD", "tab:red"), ("FAILED", "tab:gray")):
        shares = [result["verdicts_by_reference"][c][verdict] / max(sum(result["verdicts_by_reference"][c].values()), 1)
                  for c in classes]
        verdicts.bar([f"reference {c}" for c in classes], shares, bottom=bottom, color=colour,
                     label=f"served judge: {verdict}")
        bottom = [b + x for b, x in zip(bottom, shares)]
    verdicts.set_ylabel("share of steps")
    verdicts.legend(fontsize=8)
    accuracy = result["accuracy_on_verdicts"]
    verdicts.set_title(f"verdicts on {result['verdict_rate']:.0%} of {result['steps']} steps; agreement "
                       + ("n/a" if accuracy is None else f"{accuracy:.2f}"), fontsize=9)
    runs = result["throughput"]
    if not runs:
        speed.text(0.5, 0.5, "speed not measured in this run", ha="center", va="center")
        speed.set_axis_off()
        return fig
    speed.plot([r["concurrency"] for r in runs], [r["steps_per_s"] for r in runs], marker="o")
    speed.set_xscale("log", base=2)
    speed.set_xticks([r["concurrency"] for r in runs], [str(r["concurrency"]) for r in runs])
    speed.set_xlabel("concurrent requests")
    speed.set_ylabel("steps judged per second")
    speed.set_ylim(bottom=0)
    speed.set_title(f"{result['judge_model_label']}, max_tokens {result['throughput_max_tokens']}", fontsize=9)
    return fig


def smoke_trajectories(out: Path) -> Path:
    """Reference trajectories (GOOD steps) whose final answer is made wrong (a BAD step each), written beside ``out``."""
    from swirl_lightning.core.tasks import load_task
    from swirl_lightning.core.tasks.gsm8k import gsm8k_reference_trajectory
    from swirl_lightning.core.trajectory import parse_action, write_jsonl

    trajectories = [gsm8k_reference_trajectory(e, tool_tag="math_exp") for e in load_task("gsm8k", "train", limit=3)]
    for t in trajectories:
        t.steps[-1].text = "So the answer is <answer>-1</answer>"
        t.steps[-1].action = parse_action(t.steps[-1].text, {})
    source = out.with_suffix(".trajectories.jsonl")
    write_jsonl(source, trajectories)
    return source


def run_process(args: argparse.Namespace, drawn: list, pool: dict, argv: list[str] | None, started: float) -> dict:
    from swirl_lightning.judging.base import make_step_judge
    from swirl_lightning.judging.local_lm import ProcessOptions

    judge: Any = make_step_judge("process", args.shared.judge.options)
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
        "judge_model": ProcessOptions(**args.shared.judge.options).model,
        "judge_options": args.shared.judge.options, "judge_id": judge.judge_id, "threshold": judge.threshold,
        "steps": len(drawn), "auc": roc_auc(good, bad), "auc_ci95": bootstrap_auc(good, bad),
        "agreement_at_threshold": agree / max(len(drawn), 1),
        "mean_p_good": {"GOOD": sum(good) / max(len(good), 1), "BAD": sum(bad) / max(len(bad), 1)},
        "judged_good_share": {"GOOD": sum(s >= judge.threshold for s in good) / max(len(good), 1),
                              "BAD": sum(s >= judge.threshold for s in bad) / max(len(bad), 1)},
        "judge_seconds": judge_seconds, "wall_seconds": time.perf_counter() - started,
        "scores": {"GOOD": good, "BAD": bad},
    }
    print(f"{len(drawn)} steps: AUC {result['auc']:.3f} (95% CI {result['auc_ci95'][0]:.3f}-{result['auc_ci95'][1]:.3f}), "
          f"agreement at {judge.threshold}: {100 * result['agreement_at_threshold']:.1f}%, mean P(GOOD) "
          f"GOOD {result['mean_p_good']['GOOD']:.3f} / BAD {result['mean_p_good']['BAD']:.3f}; "
          f"{judge_seconds:.0f} s judging")
    return result


def served_judge(options: dict[str, Any], **overrides: Any) -> Any:
    """The ``served`` step judge with ``options`` (the run's ``--judge.options``), some of them overridden."""
    from swirl_lightning.judging.base import make_step_judge

    return make_step_judge("served", {**options, **overrides})


def measure_served(args: argparse.Namespace, drawn: list, options: dict[str, Any]) -> dict:
    """Agreement at the judge's concurrency, then steps per second at each ``--concurrency`` (judged afresh: no
    cache)."""
    pairs = [pair for pair, _ in drawn]
    judge = served_judge(options)
    begun = time.perf_counter()
    judgements = judge.judge_steps(pairs)
    agreement_seconds = time.perf_counter() - begun
    by_reference = {c: {"GOOD": 0, "BAD": 0, "FAILED": 0} for c in ("GOOD", "BAD")}
    for judgement, (_, label) in zip(judgements, drawn):
        by_reference["GOOD" if label else "BAD"][judgement.verdict] += 1
    with_verdict = [(j.score, label) for j, (_, label) in zip(judgements, drawn) if not j.failed]
    agree = sum((score >= 0.5) == bool(label) for score, label in with_verdict)
    good = [score for score, label in with_verdict if label == 1]
    bad = [score for score, label in with_verdict if label == 0]
    throughput = []
    for concurrency in args.concurrency if args.throughput_steps > 0 else []:
        timed = served_judge(options, max_tokens=args.throughput_max_tokens, concurrency=concurrency)
        steps = pairs[: args.throughput_steps]
        begun = time.perf_counter()
        results = timed.judge_steps(steps)
        seconds = time.perf_counter() - begun
        throughput.append({"concurrency": concurrency, "steps": len(steps), "seconds": round(seconds, 3),
                           "steps_per_s": len(steps) / seconds, "failures": sum(j.failed for j in results),
                           "usage": timed.usage.as_dict()})
        print(f"concurrency {concurrency}: {len(steps)} steps in {seconds:.1f} s = {len(steps) / seconds:.2f} steps/s "
              f"({throughput[-1]['failures']} without a verdict)", flush=True)
    return {
        "judge_id": judge.judge_id, "prompt_version": judge.prompt_version, "judge_options": options,
        "steps": len(drawn), "verdicts_by_reference": by_reference,
        "verdict_rate": len(with_verdict) / max(len(drawn), 1),
        "failure_examples": sorted({j.error for j in judgements if j.failed})[:5],
        "steps_with_verdict": len(with_verdict),
        "accuracy_on_verdicts": agree / len(with_verdict) if with_verdict else None,
        "accuracy_ci95": list(wilson_interval(agree, len(with_verdict))) if with_verdict else None,
        "auc_on_verdicts": roc_auc(good, bad) if good and bad else None,
        "auc_ci95": bootstrap_auc(good, bad) if good and bad else None,
        "agreement_seconds": round(agreement_seconds, 3), "agreement_usage": judge.usage.as_dict(),
        "throughput_max_tokens": args.throughput_max_tokens, "throughput": throughput,
    }


def run_served(args: argparse.Namespace, drawn: list, pool: dict, argv: list[str] | None, started: float) -> dict:
    import contextlib

    from swirl_lightning.testing import StubChatServer, transformers_serve

    options = dict(args.shared.judge.options)
    if args.smoke:  # a stub server that calls a step BAD when it holds the made-up wrong answer
        server = StubChatServer(lambda body, seen: "Verdict: BAD" if "answer>-1" in body["messages"][-1]["content"]
                                else "Looks right.\nVerdict: GOOD")
        label = "stub server"
    elif options.get("base_url"):
        server, label = contextlib.nullcontext(options["base_url"]), options["model"]
    else:
        from swirl_lightning.core.models import SMOLLM2_ALIAS, resolve_model_path

        label = options.get("model", SMOLLM2_ALIAS)
        options["model"] = str(resolve_model_path(label))
        server, label = transformers_serve(options["model"]), f"{label} on transformers serve (CPU)"
    with server as running:
        options["base_url"] = running.base_url if isinstance(running, StubChatServer) else running
        measured = measure_served(args, drawn, options)
    result = {"benchmark": "judge_agreement", "judge": "served", "command": command_line(argv),
              "machine": machine_info(), "trajectories": str(args.trajectories), "pool": pool,
              "judge_model_label": label, **measured, "wall_seconds": time.perf_counter() - started}
    accuracy = result["accuracy_on_verdicts"]
    print(f"{result['steps']} steps: a verdict on {result['verdict_rate']:.0%}; agreement with the reference judge on "
          f"those: " + ("n/a" if accuracy is None else
                        f"{accuracy:.3f} (95% CI {result['accuracy_ci95'][0]:.3f}-{result['accuracy_ci95'][1]:.3f})"))
    return result


@dataclass
class JudgeGroup:
    """The library's setting this benchmark takes: the step judge measured."""

    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """The judge measured against the ``reference`` judge: ``process`` or ``served``, with its options."""


RENAMED = {"--judge": "--judge.name", **{old: f"--judge.options '{{{key}: ...}}'" for old, key in (
    ("--judge-model", "model"), ("--batch-size", "batch_size"), ("--base-url", "base_url"),
    ("--api-key-env", "api_key_env"), ("--prompt", "prompt"), ("--max-tokens", "max_tokens"),
    ("--timeout-s", "timeout_s"))}}
"""This benchmark's old flags -> the judge group's spelling that replaced each."""


def judge_defaults(own: argparse.Namespace, given: JudgeGroup) -> dict[str, dict[str, Any]]:
    """``process`` unless a judge is named (``reference`` is the yardstick); a smoke run's tiny judge or stub."""
    name = "process" if given.judge.name == "reference" else given.judge.name
    if not own.smoke:
        return {"judge": {"name": name}}
    # the stub server's base_url is filled in once it runs
    return {"judge": {"name": name, "options": {"model": "tiny-random" if name == "process" else "stub"}}}


def main(argv: list[str] | None = None) -> int:
    from swirl_lightning.judging.base import check_judge_options

    parser = argparse.ArgumentParser(prog="judge_agreement_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectories", default="runs/learning/trajectories.jsonl", help="GSM8K rollouts to draw from")
    parser.add_argument("--steps", type=int, default=200, help="steps to score (half GOOD, half BAD)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="served: concurrencies timed")
    parser.add_argument("--throughput-steps", type=int, default=24,
                        help="served: steps judged at each concurrency (0: no speed runs)")
    parser.add_argument("--throughput-max-tokens", type=int, default=32, help="served: reply tokens when timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="result JSON (default results/judge_agreement.json, or "
                                      "results/judge_agreement_served.json for a served judge)")
    parser.add_argument("--smoke", action="store_true", help="reference trajectories, a tiny random judge or a stub server")
    args = parse_with_shared_groups(parser, argv, judge_defaults, groups=JudgeGroup, renamed=RENAMED)
    judge = args.shared.judge
    if judge.name not in ("process", "served"):
        parser.error(f"--judge.name: expected process or served (measured against the reference judge), got {judge.name}")
    # Checked before any model loads or server starts (a served judge's base_url may come from the server started here).
    served_here = judge.name == "served" and not judge.options.get("base_url")  # the URL and model come from it
    try:
        check_judge_options(judge.name, {"base_url": "http://127.0.0.1:1/v1", "model": "M", **judge.options}
                            if served_here else judge.options)
    except ValueError as error:
        parser.error(str(error))  # usage, then the one line; exit 2
    args.out = args.out or str(HERE / "results" / ("judge_agreement_served.json" if judge.name == "served"
                                                   else "judge_agreement.json"))
    started = time.perf_counter()
    source = Path(args.trajectories)
    if args.smoke:
        args.steps, args.concurrency, args.throughput_steps = 4, [1, 4], 4
        source = smoke_trajectories(Path(args.out))
    if not source.exists():
        raise SystemExit(f"{source}: no such trajectory file; run benchmarks/learning_bench.py first (its generate "
                         f"stage writes it) or name GSM8K rollouts with --trajectories")
    drawn, pool = draw_steps(source, args.steps, args.seed)
    run = run_served if judge.name == "served" else run_process
    write_result(run(args, drawn, pool, argv, started), Path(args.out), plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
