"""RL sanity: does step-wise RL raise the judged reward of fresh samples at the very states it trains on?

    python benchmarks/rl_sanity_bench.py           # the CPU budget (benchmarks/README.md)
    python benchmarks/rl_sanity_bench.py --smoke   # tiny random model, a few steps (run by the test suite)

The library's settings are its shared groups, spelled as ``swirl`` spells them: ``--policy.name``, ``--policy.adapter``
(null: the bare model), ``--task.limit`` (training questions), ``--task.offset``, ``--task.max_actions``,
``--sampling.max_new_tokens``; the rest are the benchmark's own.

The first thing an RL trainer must show. Every stage is a plain ``swirl`` command (recorded in the result), from the
warm-start policy (SmolLM2-135M-Instruct + ``adapters/gsm8k_warmup``), zero-shot prompt, live calculator:

1. ``swirl generate``: ``--samples`` trajectories for each of ``--task.limit`` GSM8K train questions the warm start
   was not trained on (``--task.offset``), temperature 1.
2. ``swirl filter --mode step`` with the reference judge: each trajectory's good prefix. The pool is their distinct
   states: the states before every GOOD step and before each trajectory's first BAD one.
3. ``swirl fit`` with ``swirl`` on the pool, ``--steps`` optimizer steps of ``--states-per-step`` states x G sampled
   actions, with the :class:`~swirl_lightning.training.callbacks.RewardProbe` on every state of the pool: before the
   first update, every ``--probe-every`` steps and after the last, ``--probe-samples`` fresh actions per state with
   the same seeds each time, scored by the reference judge.

Reported: the probe's mean reward against the step, the rise from the first probe to the last with a paired
bootstrap 95% interval over states and an exact sign test over the states that moved, and ``train/reward_mean``
(which moves with the batch: each batch holds other states). A stage whose output is there is not run again, and an
interrupted fit resumes from its last checkpoint, so running the command again goes on where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    Stages,
    command_line,
    group_flags,
    machine_info,
    parse_with_shared_groups,
    read_probe,
    scalar_curves,
    subplots,
    write_result,
)

STAGE_SETTINGS = {"policy": ("name", "adapter"), "task": ("offset", "limit", "max_actions"),
                  "sampling": ("max_new_tokens",)}
"""The shared settings the generate stage gets from the command line (fit gets the policy)."""


def run(args: argparse.Namespace) -> dict:
    groups = args.shared
    run_dir = Path(args.run)
    stages = Stages(run_dir, report_only=args.report_only)
    trajectories, pool = run_dir / "trajectories.jsonl", run_dir / "pool.jsonl"
    policy = group_flags(groups, {"policy": STAGE_SETTINGS["policy"]})
    stages.run("generate", ["generate", "--config", "conf/generate/gsm8k_warm.yaml",
                            *group_flags(groups, STAGE_SETTINGS),
                            "--samples", str(args.samples), "--progress", "false", "--output", str(trajectories)],
               done=run_dir / "generate.done", marker=True)
    stages.run("filter", ["filter", "--config", "conf/filter/gsm8k_reference.yaml", "--mode", "step",
                          "--progress", "false", "--input", str(trajectories), "--output", str(pool)], done=pool)
    fit_dir = run_dir / "fit"
    fit = ["fit", "--config", "conf/rl_sanity.yaml", *policy, "--trainer.default_root_dir", str(fit_dir),
           "--data.train.path", str(pool), "--trainer.max_steps", str(args.steps),
           "--data.train.batch_size", str(args.states_per_step), "--model.optimizer.lr", str(args.lr),
           "--trainer.callbacks.init_args.every_n_steps", str(args.probe_every),
           "--trainer.callbacks.init_args.samples", str(args.probe_samples), *args.fit_args.split()]
    stages.run_fit("fit", fit, fit_dir)
    probe = read_probe(fit_dir)
    if probe is None:
        raise SystemExit(f"no probe.json under {fit_dir}/tb: did the fit run?")
    points, rise = probe
    if rise is None:
        raise SystemExit(f"the probe under {fit_dir}/tb has one point (step {points[0]['step']}): no rise to measure")
    if rise["rise"] is None:
        raise SystemExit(f"no state has a judge verdict at both step {rise['first_step']} and {rise['last_step']}: "
                         "no rise to measure")
    return {
        "probe": points,
        "first_vs_last": rise,
        "pool": {"states": points[0]["states"], "questions": groups.task.limit, "samples_per_question": args.samples},
        "training_curves": scalar_curves(fit_dir, ("train/reward_mean", "train/loss", "train/kl", "train/entropy")),
        "stage_commands": stages.commands, "stage_seconds": stages.seconds,
    }


def plot(result: dict):  # the figure write_result saves
    fig, axes = subplots(1, 2, figsize=(12, 4))
    probe = result["probe"]
    axes[0].plot([p["step"] for p in probe], [p["reward_mean"] for p in probe], marker="o", color="tab:red",
                 label=f"fresh samples at the {result['pool']['states']} training states (probe)")
    curve = result["training_curves"].get("train/reward_mean", [])
    axes[0].plot([s for s, _ in curve], [v for _, v in curve], color="gray", alpha=0.5, label="train/reward_mean (batch)")
    rise = result["first_vs_last"]
    axes[0].set_title(f"judged reward: {probe[0]['reward_mean']:.3f} -> {probe[-1]['reward_mean']:.3f} "
                      f"(rise {rise['rise']:+.3f}, 95% CI {rise['rise_ci95'][0]:+.3f}..{rise['rise_ci95'][1]:+.3f})",
                      fontsize=10)
    for tag, color in (("train/kl", "tab:blue"), ("train/entropy", "tab:green")):
        points = result["training_curves"].get(tag, [])
        axes[1].plot([s for s, _ in points], [v for _, v in points], color=color, label=tag)
    axes[1].set_title("KL to the warm start, entropy", fontsize=10)
    for axis in axes:
        axis.set_xlabel("optimizer step")
        axis.legend(fontsize=8)
    fig.suptitle(f"RL sanity: swirl on a fixed pool of states, {result['model']}", fontsize=11)
    return fig


def defaults(args: argparse.Namespace, given) -> dict:
    """The shared groups' starting point: the warm start on 16 questions from offset 1000 (smoke: tiny and short)."""
    if args.smoke:
        return {"policy": {"name": "tiny-random", "adapter": None},
                "task": {"limit": 2, "offset": 1000, "max_actions": 2},
                "sampling": {"max_new_tokens": 8}}
    return {"policy": {"name": "smollm2-135m-instruct", "adapter": "adapters/gsm8k_warmup"},
            "task": {"limit": 16, "offset": 1000, "max_actions": 10}, "sampling": {"max_new_tokens": 96}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's own flags and the library's shared groups."""
    parser = argparse.ArgumentParser(prog="rl_sanity_bench.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4, help="trajectories per question")
    parser.add_argument("--steps", type=int, default=40, help="swirl optimizer steps")
    parser.add_argument("--states-per-step", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--probe-every", type=int, default=10)
    parser.add_argument("--probe-samples", type=int, default=8)
    parser.add_argument("--fit-args", default="", help="extra options for swirl fit")
    parser.add_argument("--run", default="runs/rl_sanity", help="working folder (stages found there are not rerun)")
    parser.add_argument("--out", default=str(HERE / "results" / "rl_sanity.json"))
    parser.add_argument("--report-only", action="store_true", help="run no stage: report from what --run holds")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, a few steps")
    args = parse_with_shared_groups(parser, argv, defaults)
    if args.smoke:
        args.samples, args.steps, args.states_per_step, args.probe_every, args.probe_samples = 2, 2, 2, 1, 2
        args.fit_args = ("--sampling.max_new_tokens 4 --task.max_actions 2 --model.swirl.group_size 2 " + args.fit_args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    groups = args.shared
    Stages.work_from_repository(args, ROOT, ("run", "out"))
    started = time.perf_counter()
    info = machine_info()
    result = {"benchmark": "rl_sanity", "command": command_line(argv), "machine": info, "model": groups.policy.name,
              "adapter": groups.policy.adapter, "judge": "reference (gold-guided)",
              "budget": {"steps": args.steps, "states_per_step": args.states_per_step, "lr": args.lr,
                         "probe_every": args.probe_every, "probe_samples": args.probe_samples},
              **run(args), "wall_seconds": time.perf_counter() - started}
    write_result(result, Path(args.out), plot)
    rise = result["first_vs_last"]
    print(f"probe reward {result['probe'][0]['reward_mean']:.3f} -> {result['probe'][-1]['reward_mean']:.3f} "
          f"(rise {rise['rise']:+.3f}, 95% CI {rise['rise_ci95'][0]:+.3f}..{rise['rise_ci95'][1]:+.3f}; "
          f"{rise['states_up']} states up, {rise['states_down']} down, sign test p = {rise['sign_test_p']:.3g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
