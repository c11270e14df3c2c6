"""Transfer: do policies trained on generated worlds (1-3 hops) carry over? Each policy, greedy, on two held-out sets:

- ``hotpotqa``: the 300 shipped HotPotQA dev questions (real Wikipedia multi-hop), the search tool over the pooled
  paragraphs of the shipped HotPotQA questions (dense retrieval: these paragraphs are not one small world);
- ``4hop``: 4-hop questions of test worlds (seeds no training data comes from), a hop count no training data has,
  with one more action allowed (6).

    python benchmarks/transfer_bench.py --policies warm=adapters/worlds_warmup swirl=adapters/worlds_swirl
    python benchmarks/transfer_bench.py --smoke        # tiny random model, 2 questions per set (run by the test suite)

The model is ``--policy.name`` and the action cap ``--task.max_actions`` (5; the 4-hop set gets one more), swirl's
shared groups as every ``swirl`` command spells them. Every stage is a plain ``swirl`` command (``swirl data worlds``,
``swirl validate``), skipped when its output exists, so the same command goes on where it stopped. Reported per set
and policy: accuracy with a Wilson 95% interval, the step GOOD rate (reference judge: a search that brings a gold
article the state lacked), mean steps, and, against the first policy, questions gained and lost with the exact
McNemar p-value. Whatever it shows is the result.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import Stages, command_line, log_dirs, machine_info, parse_with_shared_groups, subplots, write_result  # noqa: E402
from significance import exact_sign_test_p, wilson_interval  # noqa: E402

CONFIG = "conf/worlds_search.yaml"


def set_args(name: str, args: argparse.Namespace, run: Path) -> list[str]:
    """The options that make ``swirl validate`` roll out on one held-out set."""
    max_actions = args.shared.task.max_actions
    if name == "hotpotqa":
        return ["--task.name", "hotpotqa", "--data.validation.split", "validation",
                "--data.validation.questions", str(args.hotpotqa_questions), "--task.max_actions", str(max_actions)]
    return ["--task.data_path", str(run / "worlds_4hop"), "--data.validation.split", "test",
            "--data.validation.questions", str(args.four_hop_questions), "--task.max_actions", str(max_actions + 1)]


def score(path: Path) -> tuple[dict, dict[str, bool]]:
    from swirl_lightning.core.trajectory import read_trajectories
    from swirl_lightning.rollout.evaluation import summarize

    trajectories = read_trajectories(path)
    correct = sum(1 for t in trajectories if t.outcome)
    summary = summarize(trajectories, "reference")
    low, high = wilson_interval(correct, len(trajectories))
    return ({"questions": len(trajectories), "correct": correct, "accuracy": correct / max(len(trajectories), 1),
             "accuracy_ci95": [low, high], "step_good_rate": summary["step_good_rate"],
             "steps_mean": summary["steps_mean"], "answered_rate": summary["answered_rate"]},
            {t.example_id: bool(t.outcome) for t in trajectories})


def plot(result: dict):
    sets = list(result["sets"])
    fig, axes = subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for axis, name in zip(axes[0], sets):
        policies = result["sets"][name]
        values = [100 * p["accuracy"] for p in policies.values()]
        errors = [[100 * (p["accuracy"] - p["accuracy_ci95"][0]) for p in policies.values()],
                  [100 * (p["accuracy_ci95"][1] - p["accuracy"]) for p in policies.values()]]
        axis.bar(list(policies), values, yerr=errors, capsize=4, color="tab:gray")
        axis.set_title(f"{name}: accuracy % ({next(iter(policies.values()))['questions']} q, greedy; 95% CI)",
                       fontsize=10)
    fig.suptitle(f"transfer of {result['model']} policies trained on generated worlds", fontsize=11)
    return fig


def shared_defaults(args: argparse.Namespace, given) -> dict:
    """The shared groups' starting point: SmolLM2-135M-Instruct (smoke: the tiny random model), 5 actions."""
    return {"policy": {"name": "tiny-random" if args.smoke else "smollm2-135m-instruct"}, "task": {"max_actions": 5}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transfer_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", nargs="+", default=["warm=adapters/worlds_warmup", "swirl=adapters/worlds_swirl"],
                        help="NAME=ADAPTER pairs; the first is the baseline of the paired comparisons")
    parser.add_argument("--sets", nargs="+", default=["hotpotqa", "4hop"], choices=["hotpotqa", "4hop"])
    parser.add_argument("--hotpotqa-questions", type=int, default=300)
    parser.add_argument("--four-hop-questions", type=int, default=500, help="4-hop test-world questions (20 per world)")
    parser.add_argument("--fit-args", default="", help="extra options for every swirl validate")
    parser.add_argument("--run", default="runs/transfer")
    parser.add_argument("--out", default=str(HERE / "results" / "transfer.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 2 questions per set")
    args = parse_with_shared_groups(parser, argv, shared_defaults)
    model = args.shared.policy.name
    if args.smoke:
        args.policies, args.hotpotqa_questions, args.four_hop_questions = ["bare="], 2, 2
        args.sets = ["4hop", "hotpotqa"]  # the world first: the smoke run's search corpus
        args.fit_args = "--model.evaluation.sampling.max_new_tokens 4 " + args.fit_args
    policies = dict(pair.split("=", 1) for pair in args.policies)
    Stages.work_from_repository(args, ROOT, ("run", "out"))
    run, started, info = Path(args.run), time.perf_counter(), machine_info()
    stages = Stages(run)
    if "4hop" in args.sets:
        worlds = max(1, -(-args.four_hop_questions // 20))
        stages.run("data_4hop", ["data", "worlds", "--split", "test", "--worlds", str(worlds), "--world.hops", "[4]",
                                 "--output", str(run / "worlds_4hop"), "--overwrite", "true"],
                   run / "worlds_4hop" / "world.json")
    if args.smoke:  # the pooled HotPotQA index takes minutes to build: a smoke run searches the small world instead
        import os

        os.environ["SWIRL_SEARCH_CORPUS"] = str((run / "worlds_4hop" / "corpus.jsonl").resolve())
    result_sets: dict[str, dict] = {}
    for name in args.sets:
        baseline: dict[str, bool] | None = None
        result_sets[name] = {}
        for label, adapter in policies.items():
            root = run / f"{name}_{label}"
            stages.run(f"{name}_{label}", [
                "validate", "--config", CONFIG, "--policy.name", model, "--policy.adapter", adapter or "null",
                "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
                *set_args(name, args, run), *args.fit_args.split()], run / f"{name}_{label}.done", marker=True)
            rollouts = sorted(p for folder in log_dirs(root / "tb") for p in folder.glob("rollouts/val-step*.jsonl"))
            figures, outcomes = score(rollouts[-1])
            if baseline is not None:
                gained = sum(ok and not baseline.get(q, False) for q, ok in outcomes.items())
                lost = sum(not ok and baseline.get(q, False) for q, ok in outcomes.items())
                figures["vs_first"] = {"gained": gained, "lost": lost, "mcnemar_exact_p": exact_sign_test_p(gained, lost)}
            baseline = outcomes if baseline is None else baseline
            result_sets[name][label] = {"adapter": adapter or None, **figures}
    result = {"benchmark": "transfer", "command": command_line(argv), "machine": info, "model": model,
              "policies": policies, "sets": result_sets, "stage_commands": stages.commands,
              "stage_seconds": stages.seconds, "wall_seconds": time.perf_counter() - started}
    write_result(result, Path(args.out), plot)
    for name, by_policy in result_sets.items():
        for label, figures in by_policy.items():
            print(f"{name:>9} {label:>8}: {100 * figures['accuracy']:.1f}% of {figures['questions']} "
                  f"{figures.get('vs_first', '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
