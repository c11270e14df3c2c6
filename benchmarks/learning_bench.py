"""Learning: does step-wise RL improve a small model? The warm start alone vs + ``sft`` on process+outcome-filtered
samples (the paper's baseline) vs + ``swirl`` on process-filtered states (the paper's method), at an equal budget.

    python benchmarks/learning_bench.py                 # the CPU budget: about 1 h on 2 cores (benchmarks/README.md)
    python benchmarks/learning_bench.py --questions 512 --samples 8 --batch-size 256 --steps 100 --val-every 25 \
        --fit-args "--model.evaluation.sampling.batch_size 200" \
        --run runs/learning_gpu --out benchmarks/results/learning_gpu.json          # the budget tried on an H100
    python benchmarks/learning_bench.py --smoke         # tiny random model, a few steps (run by the test suite)

Every stage is a plain ``swirl`` command (recorded in the result), run from the warm-start policy (SmolLM2-135M-
Instruct + ``adapters/gsm8k_warmup``), zero-shot prompt, live calculator:

1. ``swirl generate``: ``--samples`` trajectories for each of ``--questions`` GSM8K train questions that the warm
   start was not trained on (``--offset``, default 600), temperature 1.
2. ``swirl filter`` twice with the reference-guided step judge: process+outcome (every step GOOD and the answer
   right) for ``sft``, process (every step GOOD) for ``swirl``.
3. ``swirl validate``: the warm start on the fixed held-out split (``--val-questions`` of the 200 GSM8K
   ``validation`` questions, greedy); this is step 0 of both training arms (their new LoRA starts at zero).
4. ``swirl fit`` per arm from ``conf/gsm8k_calculator.yaml``: the same ``--steps`` optimizer steps, learning rate,
   LoRA and 8 examples per step (``sft``: 8 trajectories; ``swirl``: 8 states x G=4 sampled actions scored by the
   reference judge, KL 0.02 to the warm start), validated every ``--val-every`` steps.

Reported per arm and validation step: accuracy with a Wilson 95% interval, the step GOOD rate (reference judge),
mean steps, tool errors, answered share; for the last step, questions gained and lost against the warm start and the
exact McNemar p-value; the training curves (``train/loss``, ``train/reward_mean``) and wall time. A stage whose
output exists is not run again, so an interrupted run goes on where it stopped (training resumes from its last
checkpoint). The gold-free LLM judge (SmolLM2-135M as ``process`` judge) is not used: on these rollouts it carries
no signal (``judge_agreement_bench.py``: ROC AUC 0.54 against the reference verdicts, 95% CI 0.46-0.63).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import command_line, machine_info, subplots, write_result  # noqa: E402

ARMS = ("sft", "swirl")
# The training config both arms start from; the objective and the data are what differs.
TRAIN_CONFIG = "conf/gsm8k_calculator.yaml"


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sensible at 0 and at small n, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar test on the discordant pairs: under no change, gained ~ Binomial(gained+lost, 1/2)."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


class Pipeline:
    """Runs the stages as ``swirl`` subprocesses in ``run``, skipping those whose output is there, and records
    every command."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.run_dir = Path(args.run)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.commands: list[str] = []
        self.seconds: dict[str, float] = {}
        # `python -m swirl_lightning` is `swirl`, with or without the console script on PATH.
        self.swirl = [sys.executable, "-m", "swirl_lightning"]

    def stage(self, name: str, argv: list[str], done: Path, marker: bool = False) -> None:
        """Run ``swirl <argv>`` unless ``done`` exists; with ``marker``, ``done`` is a file touched on success
        (otherwise it is the stage's own output)."""
        command = " ".join(shlex.quote(a) for a in ["swirl", *argv])
        log_path = self.run_dir / f"{name}.log"
        # The command a stage ran with heads its log; a report of an earlier run quotes that one.
        ran = [line[2:] for line in log_path.read_text().splitlines() if line.startswith("$ ")] \
            if log_path.exists() else []
        if done.exists() or self.args.report_only:
            self.commands.append(ran[0] if ran else command)  # a resumed fit adds only --ckpt_path
            print(f"== {name}: {'not run (--report-only)' if self.args.report_only else f'already done ({done})'}",
                  flush=True)
            return
        self.commands.append(command)
        print(f"== {name} (log: {log_path}): {command}", flush=True)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        started = time.perf_counter()
        with open(log_path, "a") as log:
            print(f"$ {command}", file=log, flush=True)
            completed = subprocess.run([*self.swirl, *argv], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.seconds[name] = time.perf_counter() - started
        if completed.returncode != 0:
            raise SystemExit(f"stage {name} failed (exit {completed.returncode}); end of {log_path}:\n"
                             f"{log_path.read_text()[-3000:]}")
        if marker:
            done.touch()

    def fit_args(self, arm: str) -> list[str]:
        a, run = self.args, self.run_dir
        common = ["--config", TRAIN_CONFIG, "--trainer.default_root_dir", str(run / arm),
                  "--policy.name", a.model, "--policy.adapter", a.adapter or "null",
                  "--data.validation.questions", str(a.val_questions), "--trainer.max_steps", str(a.steps),
                  "--trainer.val_check_interval", str(a.val_every), "--model.optimizer.lr", str(a.lr),
                  "--trainer.enable_progress_bar", "false", *shlex.split(a.fit_args)]
        if arm == "warm":
            return common + ["--data.train.path", str(run / "kept_process.jsonl")]
        if arm == "sft":
            # 8 whole trajectories per batch, as swirl takes 8 states: fp32 activations of 8 x ~450 tokens need
            # gradient checkpointing on a 24 GB machine. (Accumulating 4 + 4 would not do: Lightning counts
            # val_check_interval in batches and steps at every epoch end, so a small kept set would shift the
            # validation steps away from swirl's.)
            return common + ["--model.objective", "sft", "--data.train.path", str(run / "kept_process_outcome.jsonl"),
                             "--model.gradient_checkpointing", "true"]
        return common + ["--model.objective", "swirl", "--data.train.path", str(run / "kept_process.jsonl")]

    def run_all(self) -> None:
        a, run = self.args, self.run_dir
        trajectories = run / "trajectories.jsonl"
        self.stage("generate", ["generate", "--config", "conf/generate/gsm8k_warm.yaml", "--policy.name", a.model,
                                "--policy.adapter", a.adapter or "null", "--task.offset", str(a.offset),
                                "--task.limit", str(a.questions), "--task.max_steps", str(a.max_steps),
                                "--sampling.max_new_tokens", str(a.max_new_tokens),
                                "--sampling.batch_size", str(a.batch_size), "--samples", str(a.samples),
                                "--output", str(trajectories)], run / "generate.done", marker=True)
        for mode, name in ((a.sft_filter, "process_outcome"), (a.swirl_filter, "process")):
            kept = run / f"kept_{name}.jsonl"
            self.stage(f"filter_{name}", ["filter", "--config", "conf/filter/gsm8k_reference.yaml", "--mode", mode,
                                          "--input", str(trajectories), "--output", str(kept)], kept)
        self.stage("validate_warm", ["validate", *self.fit_args("warm")], run / "warm.done", marker=True)
        for arm in ARMS:
            argv = ["fit", *self.fit_args(arm)]
            last = run / arm / "checkpoints" / "last.ckpt"
            if last.exists() and not (run / f"{arm}.done").exists():
                argv += ["--ckpt_path", str(last)]  # an interrupted fit goes on from its last checkpoint
            self.stage(f"fit_{arm}", argv, run / f"{arm}.done", marker=True)


def validation_points(arm_dir: Path) -> dict[int, Path]:
    """step -> the rollouts file of that validation (later versions win: a resumed fit logs to a new version)."""
    points: dict[int, Path] = {}
    for path in sorted(arm_dir.glob("tb/version_*/rollouts/val-step*.jsonl"),
                       key=lambda p: int(p.parts[-3].split("_")[1])):
        points[int(path.stem.split("step")[1])] = path
    return points


def score_rollouts(path: Path) -> tuple[dict, dict[str, bool]]:
    """Accuracy with its Wilson interval and the other figures of one validation's rollouts, and each question's
    outcome (for the paired comparison)."""
    from swirl_lightning.rollout.evaluation import summarize
    from swirl_lightning.core.trajectory import read_trajectories

    trajectories = read_trajectories(path)
    summary = summarize(trajectories, "reference")
    correct = sum(1 for t in trajectories if t.outcome)
    low, high = wilson_interval(correct, len(trajectories))
    return {"questions": len(trajectories), "correct": correct, "accuracy": correct / max(len(trajectories), 1),
            "accuracy_ci95": [low, high], "step_good_rate": summary["step_good_rate"],
            "steps_mean": summary["steps_mean"], "tool_error_rate": summary["tool_error_rate"],
            "invalid_action_rate": summary["invalid_action_rate"], "answered_rate": summary["answered_rate"]}, \
        {t.example_id: bool(t.outcome) for t in trajectories}


def training_curves(arm_dir: Path) -> dict[str, list[list[float]]]:
    """``train/loss``, ``train/reward_mean`` and ``train/kl`` as (step, value) from the arm's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, dict[int, float]] = {}
    for events in sorted(arm_dir.glob("tb/version_*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in ("train/loss", "train/reward_mean", "train/kl"):
            if tag in accumulator.Tags().get("scalars", []):
                curves.setdefault(tag, {}).update({e.step: e.value for e in accumulator.Scalars(tag)})
    return {tag: sorted([step, value] for step, value in points.items()) for tag, points in curves.items()}


def data_figures(run: Path) -> dict:
    """What the generation and the two filters produced."""
    from swirl_lightning.rollout.evaluation import summarize
    from swirl_lightning.core.trajectory import read_trajectories

    generated = read_trajectories(run / "trajectories.jsonl")
    summary = summarize(generated)
    figures = {"trajectories": len(generated), "questions": len({t.example_id for t in generated}),
               "outcome_accuracy": summary["accuracy"], "steps_mean": summary["steps_mean"],
               "valid_action_rate": summary["valid_action_rate"]}
    for name in ("process", "process_outcome"):
        kept = read_trajectories(run / f"kept_{name}.jsonl")
        stats_path = run / f"kept_{name}.stats.json"
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
        figures[f"kept_{name}"] = {"trajectories": len(kept), "states": sum(len(t.steps) for t in kept),
                                   "questions": len({t.example_id for t in kept}),
                                   "step_good_rate": stats.get("step_good_rate")}
    return figures


def collect(pipeline: Pipeline) -> dict:
    """Per arm: each validation's figures (step 0 is the warm start's), the last one paired against the warm start
    question by question, the training curves and the wall time."""
    run = pipeline.run_dir
    warm_points = validation_points(run / "warm")
    if not warm_points:
        raise SystemExit(f"no validation rollouts under {run / 'warm'}")
    warm, warm_outcomes = score_rollouts(warm_points[min(warm_points)])
    arms: dict[str, dict] = {"warm start": {"validations": [{"step": 0, **warm}]}}
    for arm in ARMS:
        validations, outcomes = [{"step": 0, **warm}], warm_outcomes
        for step, path in sorted(validation_points(run / arm).items()):
            if step:
                figures, outcomes = score_rollouts(path)
                validations.append({"step": step, **figures})
        gained = sum(1 for q, ok in outcomes.items() if ok and not warm_outcomes.get(q, False))
        lost = sum(1 for q, ok in outcomes.items() if not ok and warm_outcomes.get(q, False))
        last_step = validations[-1]["step"]
        # A run cut short (e.g. when a GPU lease ran out) says so instead of passing for a finished one.
        arms[f"+ {arm}"] = {
            "validations": validations,
            "complete": last_step == pipeline.args.steps,
            "final_vs_warm": {"at_step": last_step, "gained": gained, "lost": lost,
                              "mcnemar_exact_p": mcnemar_exact_p(gained, lost)},
            "training_curves": training_curves(run / arm),
            "wall_seconds": pipeline.seconds.get(f"fit_{arm}"),
        }
    return arms


def plot(result: dict):  # the figure write_result saves
    fig, axes = subplots(1, 4, figsize=(19, 4))
    colors = {"warm start": "gray", "+ sft": "tab:blue", "+ swirl": "tab:red"}
    for name, arm in result["arms"].items():
        steps = [v["step"] for v in arm["validations"]]
        if name == "warm start":
            steps, arm = [0, result["budget"]["steps"]], {"validations": arm["validations"] * 2}
        acc = [100 * v["accuracy"] for v in arm["validations"]]
        low = [100 * v["accuracy_ci95"][0] for v in arm["validations"]]
        high = [100 * v["accuracy_ci95"][1] for v in arm["validations"]]
        axes[0].plot(steps, acc, marker="o", color=colors[name], label=name)
        axes[0].fill_between(steps, low, high, color=colors[name], alpha=0.15)
        axes[1].plot(steps, [100 * (v["step_good_rate"] or 0) for v in arm["validations"]], marker="o",
                     color=colors[name], label=name)
        axes[2].plot(steps, [v["steps_mean"] for v in arm["validations"]], marker="o", color=colors[name], label=name)
    for name, tag, axis in (("+ sft", "train/loss", axes[3]), ("+ swirl", "train/reward_mean", axes[3])):
        curve = result["arms"][name]["training_curves"].get(tag)
        if curve:
            axis.plot([s for s, _ in curve], [v for _, v in curve], color=colors[name], label=f"{name}: {tag}")
    n = result["budget"]["val_questions"]
    for axis, title in zip(axes, (f"held-out accuracy % ({n} q, greedy; 95% CI)", "step GOOD rate % (reference judge)",
                                  "mean steps per question", "training curves")):
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("optimizer step")
        axis.legend(fontsize=8)
    fig.suptitle(f"GSM8K + calculator, {result['model']} from the warm start; {result['budget']['steps']} steps per arm",
                 fontsize=11)
    return fig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--adapter", default="adapters/gsm8k_warmup", help="warm-start LoRA; empty: the bare model")
    parser.add_argument("--questions", type=int, default=192, help="training questions for the synthetic data")
    parser.add_argument("--samples", type=int, default=4, help="trajectories per training question")
    parser.add_argument("--offset", type=int, default=600, help="skip the questions the warm start was trained on")
    parser.add_argument("--max-steps", type=int, default=10, help="steps per trajectory (GSM8K: 10)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="tokens per generated turn")
    parser.add_argument("--batch-size", type=int, default=32, help="generation slots")
    parser.add_argument("--val-questions", type=int, default=200, help="held-out questions (at most 200)")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per arm (the equal budget)")
    parser.add_argument("--val-every", type=int, default=12, help="validate every N steps (the learning curve)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--sft-filter", default="process+outcome")
    parser.add_argument("--swirl-filter", default="process")
    parser.add_argument("--fit-args", default="", help="extra options for every swirl validate/fit")
    parser.add_argument("--run", default="runs/learning", help="working folder (stages found there are not rerun)")
    parser.add_argument("--out", default=str(HERE / "results" / "learning.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny random model, a few steps, no filtering")
    parser.add_argument("--report-only", action="store_true",
                        help="run no stage: write the result from what --run holds (e.g. a run copied from a GPU machine)")
    parser.add_argument("--ran-on", help="the machine the stages ran on, when not this one (with --report-only)")
    parser.add_argument("--note", default="", help="a remark kept in the result (e.g. how a run differed)")
    args = parser.parse_args(argv)
    if args.smoke:
        # A random model's steps are never GOOD: keep every trajectory so both arms have data to fit.
        args.model, args.adapter, args.questions, args.samples = "tiny-random", "", 2, 2
        args.max_steps, args.max_new_tokens, args.val_questions, args.steps, args.val_every = 2, 8, 2, 2, 1
        args.sft_filter = args.swirl_filter = "none"
        args.fit_args = ("--sampling.max_new_tokens 4 --model.evaluation.sampling.max_new_tokens 4 --task.max_steps 2 "
                         "--model.swirl.group_size 2 " + args.fit_args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The stages name configs and the adapter relative to the repository, so everything runs from there; the paths
    # given are taken from where the command was typed (and kept relative to the repository when inside it).
    for name in ("run", "out"):
        path = Path(getattr(args, name)).resolve()
        setattr(args, name, str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
    os.chdir(ROOT)
    started = time.perf_counter()
    info = machine_info()
    pipeline = Pipeline(args)
    pipeline.run_all()
    result = {
        "benchmark": "learning", "command": command_line(argv),
        "machine": info, "ran_on": args.ran_on or "this machine", "note": args.note, "model": args.model, "adapter": args.adapter or None, "judge": "reference (gold-guided)",
        "budget": {"steps": args.steps, "val_every": args.val_every, "val_questions": args.val_questions,
                   "lr": args.lr, "examples_per_step": 8, "group_size": 4},
        "data": data_figures(pipeline.run_dir), "arms": collect(pipeline),
        "stage_commands": pipeline.commands, "stage_seconds": pipeline.seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    write_result(result, Path(args.out), plot)
    for name, arm in result["arms"].items():
        last = arm["validations"][-1]
        extra = arm.get("final_vs_warm", {})
        print(f"{name:>10}: accuracy {100 * last['accuracy']:.1f}% (95% CI {100 * last['accuracy_ci95'][0]:.1f}-"
              f"{100 * last['accuracy_ci95'][1]:.1f}), GOOD {100 * (last['step_good_rate'] or 0):.1f}%, "
              f"steps {last['steps_mean']:.2f} {extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
