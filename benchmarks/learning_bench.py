"""Learning: does step-wise RL improve a small model? The warm start alone vs + ``sft`` on process+outcome-filtered
samples (the paper's baseline) vs + ``swirl`` on process-filtered states (the paper's method) vs + ``swirl`` on a
larger pool (the good prefixes of every trajectory), at an equal training budget, on held-out questions; with
``--arms ... random format``, two controls: ``swirl`` on the pool with a random reward and with a format-only reward
(if a control gains as much, the gain does not come from the judge).

    python benchmarks/learning_bench.py                 # GSM8K + calculator, the CPU budget (benchmarks/README.md)
    python benchmarks/learning_bench.py --task.name worlds   # generated worlds + search, all five arms
    python benchmarks/learning_bench.py --smoke         # tiny random model, a few steps (run by the test suite)

``--task.name`` picks the configs, the warm start and the defaults (:data:`TASKS`): ``gsm8k`` (SmolLM2-135M-Instruct +
``adapters/gsm8k_warmup``, live calculator, 500 held-out GSM8K questions) or ``worlds`` (+ ``adapters/worlds_warmup``,
live search in each question's own world, 1000 held-out questions of validation worlds, reported by hop count).
The library's settings are its shared groups, spelled as ``swirl`` spells them (``--policy.name``, ``--policy.adapter``,
``--task.name``, ``--task.data_path``, ``--task.limit``, ``--task.offset``, ``--task.max_actions``,
``--sampling.max_new_tokens``, ``--sampling.batch_size``), the task's defaults unless given; the rest are the
benchmark's own. Every stage is a plain ``swirl`` command (recorded in the result), from the warm-start policy,
zero-shot prompt:

1. ``swirl generate``: ``--samples`` trajectories for each of ``--task.limit`` train questions the warm start was
   not trained on (``--task.offset``), temperature 1.
2. ``swirl filter`` with the reference-guided step judge, three ways: ``process+outcome`` (every step GOOD and the
   answer right: the sft data), ``process`` (every step GOOD: the paper's RL states) and ``step`` (every trajectory
   cut after its first BAD step: the states before every GOOD step and before each first mistake); with ``--arms
   ... swirl_none``, also ``none`` (every state of every trajectory: the paper's no-filter variant).
3. ``swirl validate``: the warm start on the ``--val-questions`` held-out questions (greedy); step 0 of every arm.
4. ``swirl fit`` per arm from the task's config (``conf/gsm8k_calculator.yaml``, ``conf/worlds_search.yaml``): the
   same ``--steps`` optimizer steps, learning rate, LoRA and ``--examples-per-step`` (``sft``: trajectories;
   ``swirl``: states x G sampled actions, reference-judge reward), validated every ``--val-every`` steps; a reward
   probe measures the judged reward of fresh samples at a fixed draw of the arm's own training states (the
   training-reward curve). When the fit did not validate its final weights (``--steps`` not a multiple of
   ``--val-every``, or the process killed in that validation), ``swirl validate --ckpt_path .../last.ckpt`` does
   (stage ``validate_<arm>``, part of ``fit_<arm>``).

Reported per arm and validation: accuracy with a Wilson 95% interval (and by hop count where the task has hops), the
step GOOD rate (every step judged again by this checkout's reference judge), mean steps, tool errors, repeated
queries, answered share; at the last step, questions gained and lost and the exact McNemar p-value against the warm
start and against ``+ sft``; the probe and training curves; wall time. A control arm's probe measures its own
(uninformative) reward. An arm whose run folder holds validations past ``--steps`` (trained on further in an earlier
run) lists them as ``beyond_budget`` (a dashed line in the plot), with their p against the warm start: shown, never
taken as the arm's result. The result also proves the held-out questions are unseen: none is among the warm start's
training questions (``adapters/.../training_questions.txt``) or any arm's data, and for worlds no held-out world seed
is a training world's. A stage whose output exists is not run again, an
interrupted fit resumes from its last checkpoint and an interrupted validation from its journal (the questions it
finished), so running the command again goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
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
    log_dirs,
    machine_info,
    parse_with_shared_groups,
    read_probe,
    scalar_curves,
    subplots,
    write_result,
)
from significance import exact_sign_test_p, wilson_interval  # noqa: E402

# arm -> (objective, the filter its data comes from, the step judge that rewards it)
ARMS = {"sft": ("sft", "process+outcome", "reference"), "swirl": ("swirl", "process", "reference"),
        "swirl_step": ("swirl", "step", "reference"), "swirl_none": ("swirl", "none", "reference"),
        "random": ("swirl", "step", "random"), "format": ("swirl", "step", "format")}
LABELS = {"warm": "warm start", "sft": "+ sft (process+outcome)", "swirl": "+ swirl (process)",
          "swirl_step": "+ swirl (step pool)", "swirl_none": "+ swirl (no filter)",
          "random": "+ swirl, random reward (control)", "format": "+ swirl, format-only reward (control)"}

# Per task: the configs every stage starts from (the objective, data and judge are what differs between arms), the
# warm start, and the defaults of the options left unset. The paper's no-filter variant runs only when named.
TASKS = {
    "gsm8k": {"generate": "conf/generate/gsm8k_warm.yaml", "filter": "conf/filter/gsm8k_reference.yaml",
              "train": "conf/gsm8k_calculator.yaml", "adapter": "adapters/gsm8k_warmup", "arms": ["sft", "swirl", "swirl_step"],
              "questions": 512, "offset": 1000, "max_actions": 10, "max_new_tokens": 96, "val_questions": 500,
              "steps": 60, "val_every": 30, "title": "GSM8K + calculator", "run": "runs/learning",
              "out": str(HERE / "results" / "learning.json")},
    "worlds": {"generate": "conf/generate/worlds_warm.yaml", "filter": "conf/filter/worlds_reference.yaml",
               "train": "conf/worlds_search.yaml", "adapter": "adapters/worlds_warmup",
               "arms": ["sft", "swirl", "swirl_step", "random", "format"],
               "questions": 256, "offset": 640, "max_actions": 5, "max_new_tokens": 64, "val_questions": 1000,
               "steps": 30, "val_every": 30, "title": "generated worlds + search", "run": "runs/learning_worlds",
               "out": str(HERE / "results" / "learning_worlds.json")},
}


def paired(outcomes: dict[str, bool], baseline: dict[str, bool]) -> dict:
    """Questions gained and lost against ``baseline`` (the same questions), and the exact McNemar p-value."""
    gained = sum(1 for q, ok in outcomes.items() if ok and not baseline.get(q, False))
    lost = sum(1 for q, ok in outcomes.items() if not ok and baseline.get(q, False))
    return {"gained": gained, "lost": lost, "mcnemar_exact_p": exact_sign_test_p(gained, lost)}


def filter_name(mode: str) -> str:
    return mode.replace("+", "_")


def filter_stage(mode: str) -> str:
    return f"filter_{filter_name(mode)}"


def fit_stage(arm: str) -> str:
    return f"fit_{arm}"


def stage_names(arms: list[str]) -> list[str]:
    """The stages of a comparison of these arms, in the order they run (the names ``--only`` takes)."""
    return ["generate", *(filter_stage(mode) for mode in dict.fromkeys(ARMS[arm][1] for arm in arms)),
            "validate_warm", *(fit_stage(arm) for arm in arms)]


class Benchmark:
    """The stages of one learning comparison in ``--run`` (see the module docstring)."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.run_dir = args, Path(args.run)
        self.stages = Stages(self.run_dir, report_only=args.report_only)
        self.shared, self.task = args.shared, TASKS[args.shared.task.name]
        self.policy = group_flags(args.shared, {"policy": ("name", "adapter")})
        data_path = args.shared.task.data_path
        self.data_path = ["--task.data_path", data_path] if data_path else []

    def kept(self, mode: str) -> Path:
        return self.run_dir / f"kept_{filter_name(mode)}.jsonl"

    def fit_args(self, arm: str) -> list[str]:
        a = self.args
        common = ["--config", self.task["train"], "--trainer.default_root_dir", str(self.run_dir / arm), *self.policy,
                  *self.data_path,
                  "--data.validation.questions", str(a.val_questions), "--trainer.max_steps", str(a.steps),
                  "--trainer.val_check_interval", str(a.val_every), "--model.optimizer.lr", str(a.lr),
                  "--data.train.batch_size", str(a.examples_per_step), "--model.swirl.group_size", str(a.group_size),
                  "--trainer.enable_progress_bar", "false", *a.fit_args.split()]
        if arm == "warm":
            return common + ["--data.train.path", str(self.kept("step"))]
        objective, mode, judge = ARMS[arm]
        # Gradient checkpointing in every arm: without it a swirl fit (8 states x G actions, fp32) peaked at 13.7 GB
        # and an sft fit on whole trajectories would not fit at all; with it, a fit and a 500-question validation
        # (~8 GB: the engine's KV cache) share a 24 GB machine, two lanes at a time.
        extra = ["--model.gradient_checkpointing", "true"]
        probe = ["--trainer.callbacks+=swirl_lightning.training.callbacks.RewardProbe",
                 "--trainer.callbacks.init_args.states", str(a.probe_states),
                 "--trainer.callbacks.init_args.samples", str(a.probe_samples),
                 "--trainer.callbacks.init_args.every_n_steps", str(a.probe_every)]
        # A step-filtered file holds each trajectory up to its first BAD step, marked: swirl takes its states,
        # sft its GOOD steps (swirl_lightning.judging.filter), with no filter in the data module.
        return common + ["--model.objective", objective, "--data.train.path", str(self.kept(mode)), "--judge.name", judge,
                         *extra, *probe]

    def wanted(self, stage: str) -> bool:
        return not self.args.only or stage in self.args.only

    def run(self) -> None:
        a, run = self.args, self.run_dir
        trajectories = run / "trajectories.jsonl"
        if self.wanted("generate"):
            self.stages.run("generate", [
                "generate", "--config", self.task["generate"], *self.policy, *self.data_path,
                *group_flags(self.shared, {"task": ("offset", "limit", "max_actions"),
                                           "sampling": ("max_new_tokens", "batch_size")}),
                "--samples", str(a.samples), "--processes", str(a.generate_processes), "--progress", "false",
                "--output", str(trajectories)],
                done=run / "generate.done", marker=True)
        for mode in dict.fromkeys(ARMS[arm][1] for arm in a.arms):
            name = filter_stage(mode)
            if self.wanted(name):
                self.stages.run(name, ["filter", "--config", self.task["filter"], *self.data_path,
                                       "--mode", "none" if a.smoke else mode, "--progress", "false",
                                       "--input", str(trajectories), "--output", str(self.kept(mode))],
                                done=self.kept(mode))
        if self.wanted("validate_warm"):
            self.stages.run("validate_warm", ["validate", *self.fit_args("warm")], run / "warm.done", marker=True)
        for arm in a.arms:
            if self.wanted(fit_stage(arm)):
                self.stages.run_fit(fit_stage(arm), ["fit", *self.fit_args(arm)], run / arm)
                self.validate_final_weights(arm)

    def validate_final_weights(self, arm: str) -> None:
        """Validate an arm's final weights (``last.ckpt``) when its fit did not: a fit killed in its last validation
        (out of memory, say) has finished training, and resuming it would stop at once (``max_steps`` reached)."""
        last, name = self.run_dir / arm / "checkpoints" / "last.ckpt", f"validate_{arm}"
        ran_before = (self.run_dir / f"{name}.log").exists()  # then the report quotes its command
        missing = last.exists() and self.args.steps not in validation_points(self.run_dir / arm)
        if ran_before or (missing and not self.args.report_only):
            self.stages.run(name, ["validate", *self.fit_args(arm), "--ckpt_path", str(last)],
                            self.run_dir / f"{name}.done", marker=True)


def validation_points(arm_dir: Path) -> dict[int, Path]:
    """step -> the rollouts file of that validation (later versions win: a resumed fit logs to a new version)."""
    points: dict[int, Path] = {}
    for path in (path for folder in log_dirs(arm_dir / "tb") for path in sorted(folder.glob("rollouts/val-step*.jsonl"))):
        points[int(path.stem.split("step")[1])] = path
    return points


def score_rollouts(path: Path, examples: dict) -> tuple[dict, dict[str, bool]]:
    """Accuracy with its Wilson interval (and by hop count when the questions have one) and the other figures of one
    validation's rollouts, and each question's outcome (for the paired comparisons).

    Every step is judged again by this checkout's reference judge (rule-based: seconds), so that the step GOOD rates
    of one result all come from one judge version (``step_good_judge``), also where an arm was validated by an
    earlier one (a run linked from an older run folder)."""
    from swirl_lightning.core.trajectory import read_trajectories
    from swirl_lightning.judging.reference import ReferenceJudge
    from swirl_lightning.judging.steps import judge_trajectories
    from swirl_lightning.rollout.evaluation import summarize

    trajectories = read_trajectories(path)
    judge_trajectories(trajectories, ReferenceJudge(), examples, progress=False)
    summary = summarize(trajectories, ReferenceJudge.judge_id)
    figures = {"questions": len(trajectories), **accuracy_figures(trajectories),
               "step_good_rate": summary["step_good_rate"], "steps_mean": summary["steps_mean"],
               "tool_error_rate": summary["tool_error_rate"], "repeated_query_rate": repeated_query_rate(trajectories),
               "invalid_action_rate": summary["invalid_action_rate"], "answered_rate": summary["answered_rate"]}
    hops = {t.example_id: examples[t.example_id].metadata.get("hops") for t in trajectories}
    if all(isinstance(h, int) for h in hops.values()):
        figures["by_hops"] = {str(h): accuracy_figures([t for t in trajectories if hops[t.example_id] == h])
                              for h in sorted(set(hops.values()))}
    return figures, {t.example_id: bool(t.outcome) for t in trajectories}


def accuracy_figures(trajectories: list) -> dict:
    """Questions, right answers, accuracy and its Wilson 95% interval."""
    correct = sum(1 for t in trajectories if t.outcome)
    low, high = wilson_interval(correct, len(trajectories))
    return {"questions": len(trajectories), "correct": correct, "accuracy": correct / max(len(trajectories), 1),
            "accuracy_ci95": [low, high]}


def repeated_query_rate(trajectories: list) -> float:
    """The share of tool calls that repeat a call (same tool, same query) made earlier in their trajectory."""
    calls = repeated = 0
    for trajectory in trajectories:
        seen = set()
        for step in trajectory.steps:
            if step.action.kind == "tool":
                key = (step.action.tool, " ".join((step.action.query or "").split()).lower())
                calls, repeated = calls + 1, repeated + (key in seen)
                seen.add(key)
    return repeated / max(calls, 1)


def held_out_examples(task: str, data_path: str | None) -> dict:
    """The held-out split by example id, with the gold data the reference judge reads."""
    from swirl_lightning.core.tasks import load_task

    return {example.id: example for example in load_task(task, "validation", path=data_path)}


def data_figures(bench: Benchmark) -> dict:
    """What the generation and each filter produced."""
    from swirl_lightning.core.trajectory import read_trajectories
    from swirl_lightning.rollout.evaluation import summarize

    generated = read_trajectories(bench.run_dir / "trajectories.jsonl")
    summary = summarize(generated)
    figures = {"trajectories": len(generated), "questions": len({t.example_id for t in generated}),
               "outcome_accuracy": summary["accuracy"], "steps_mean": summary["steps_mean"],
               "valid_action_rate": summary["valid_action_rate"],
               # The headroom RL can sharpen: questions the warm start solves at least once in K samples (pass@K).
               "questions_solved_by_a_sample": len({t.example_id for t in generated if t.outcome})}
    for mode in dict.fromkeys(ARMS[arm][1] for arm in bench.args.arms):
        kept = read_trajectories(bench.kept(mode), allow_empty=True)
        stats_path = bench.kept(mode).with_suffix(".stats.json")
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
        # Distinct states, as swirl trains on them: the K samples of a question share their first state.
        states = {(t.example_id, json.dumps(t.messages(upto_step=k))) for t in kept for k in range(len(t.steps))}
        figures[f"kept_{filter_name(mode)}"] = {"trajectories": len(kept), "steps": sum(len(t.steps) for t in kept),
                                                 "states": len(states), "questions": len({t.example_id for t in kept}),
                                                 "step_good_rate": stats.get("step_good_rate")}
    return figures


def held_out_check(bench: Benchmark, held_out: set[str]) -> dict:
    """No held-out question in the warm start's training questions or in any arm's data (must all be 0); for generated
    worlds, no held-out world among the training data's worlds and no training question from a held-out seed."""
    from swirl_lightning.core.trajectory import read_trajectories

    check = {"held_out_questions": len(held_out)}
    generated = {t.example_id for t in read_trajectories(bench.run_dir / "trajectories.jsonl")}
    training = set(generated)
    adapter = Path(bench.shared.policy.adapter) / "training_questions.txt" if bench.shared.policy.adapter else None
    if adapter is not None:
        warm = set(adapter.read_text().split()) if adapter.exists() else None
        check["warm_start_training_questions"] = None if warm is None else len(warm)
        check["overlap_warm_start"] = None if warm is None else len(held_out & warm)
        training |= warm or set()
    check["overlap_generated"] = len(held_out & generated)
    if bench.shared.task.name == "worlds":
        from swirl_lightning.core.tasks.worlds import held_out_seeds_in, world_seed_of

        check["overlap_worlds"] = len({world_seed_of(i) for i in held_out} & {world_seed_of(i) for i in training})
        check["training_questions_from_held_out_seeds"] = len(held_out_seeds_in(sorted(training)))
    return check


def collect(bench: Benchmark) -> dict:
    """Per arm: each validation's figures (step 0 is the warm start's), the last one paired against the warm start and
    against + sft, the probe and training curves, and the wall time."""
    run = bench.run_dir
    warm_points = validation_points(run / "warm")
    if not warm_points:
        raise SystemExit(f"no validation rollouts under {run / 'warm'}")
    examples = held_out_examples(bench.shared.task.name, bench.shared.task.data_path)
    warm, warm_outcomes = score_rollouts(warm_points[min(warm_points)], examples)
    arms: dict[str, dict] = {"warm": {"label": LABELS["warm"], "validations": [{"step": 0, **warm}]}}
    last_outcomes: dict[str, dict[str, bool]] = {}
    for arm in bench.args.arms:
        validations, outcomes, beyond_budget = [{"step": 0, **warm}], warm_outcomes, []
        for step, path in sorted(validation_points(run / arm).items()):
            if step > bench.args.steps:  # an arm trained on past the budget: shown, never compared as its result
                figures, later = score_rollouts(path, examples)
                beyond_budget.append({"step": step, **figures, "vs_warm": paired(later, warm_outcomes)})
            elif step:
                figures, outcomes = score_rollouts(path, examples)
                validations.append({"step": step, **figures})
        last_outcomes[arm] = outcomes
        last_step = validations[-1]["step"]
        probe, probe_rise = read_probe(run / arm) or ([], None)
        # A run cut short says so instead of passing for a finished one.
        arms[arm] = {"label": LABELS[arm], "objective": ARMS[arm][0], "data_filter": ARMS[arm][1], "reward": ARMS[arm][2],
                     "validations": validations, "complete": last_step == bench.args.steps,
                     **({"beyond_budget": beyond_budget} if beyond_budget else {}),
                     "final_vs_warm": {"at_step": last_step, **paired(outcomes, warm_outcomes)},
                     "probe": probe, "probe_first_vs_last": probe_rise,
                     "training_curves": scalar_curves(run / arm, ("train/loss", "train/reward_mean", "train/kl")),
                     "wall_seconds": bench.stages.seconds.get(fit_stage(arm))}
    # Against + sft only once both have a validation after training (step 0 is the warm start for every arm).
    if "sft" in last_outcomes and arms["sft"]["final_vs_warm"]["at_step"]:
        for arm in last_outcomes:
            if arm != "sft" and arms[arm]["final_vs_warm"]["at_step"]:
                arms[arm]["final_vs_sft"] = paired(last_outcomes[arm], last_outcomes["sft"])
    return {"arms": arms, "held_out": held_out_check(bench, set(warm_outcomes))}


COLORS = {"warm": "gray", "sft": "tab:blue", "swirl": "tab:red", "swirl_step": "tab:purple", "swirl_none": "tab:green",
          "random": "tab:olive", "format": "tab:brown"}


def plot(result: dict):  # the figure write_result saves
    by_hops = {name: arm["validations"][-1]["by_hops"] for name, arm in result["arms"].items()
               if "by_hops" in arm["validations"][-1]}
    fig, axes = subplots(1, 5 if by_hops else 4, figsize=(25 if by_hops else 20, 4))
    steps_budget = result["budget"]["steps"]
    for name, arm in result["arms"].items():
        validations = arm["validations"] * (2 if name == "warm" else 1)
        steps = [0, steps_budget] if name == "warm" else [v["step"] for v in validations]
        color, label = COLORS[name], arm["label"]
        axes[0].plot(steps, [100 * v["accuracy"] for v in validations], marker="o", color=color, label=label)
        axes[0].fill_between(steps, [100 * v["accuracy_ci95"][0] for v in validations],
                             [100 * v["accuracy_ci95"][1] for v in validations], color=color, alpha=0.12)
        axes[1].plot(steps, [100 * (v["step_good_rate"] or 0) for v in validations], marker="o", color=color, label=label)
        axes[2].plot(steps, [v["steps_mean"] for v in validations], marker="o", color=color, label=label)
        if arm.get("beyond_budget"):  # dashed: trained on past the equal budget
            later = [validations[-1], *arm["beyond_budget"]]
            axes[0].plot([v["step"] for v in later], [100 * v["accuracy"] for v in later], marker="o", linestyle="--",
                         color=color)
        if arm.get("probe"):
            axes[3].plot([p["step"] for p in arm["probe"]], [p["reward_mean"] for p in arm["probe"]], marker="o",
                         color=color, label=f"{label}: probe")
    n = result["budget"]["val_questions"]
    for axis, title in zip(axes, (f"held-out accuracy % ({n} q, greedy; 95% CI)", "step GOOD rate % (reference judge)",
                                  "mean steps per question", "judged reward of fresh samples at own training states")):
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("optimizer step")
        axis.legend(fontsize=7)
    if by_hops:  # each arm's last validation by hop count, side by side
        hops = sorted({h for figures in by_hops.values() for h in figures}, key=int)
        width = 0.8 / len(by_hops)
        for i, (name, figures) in enumerate(by_hops.items()):
            axes[4].bar([k + i * width for k in range(len(hops))], [100 * figures[h]["accuracy"] if h in figures else 0
                                                                    for h in hops], width, color=COLORS[name],
                        label=result["arms"][name]["label"])
        axes[4].set_xticks([k + width * (len(by_hops) - 1) / 2 for k in range(len(hops))], [f"{h} hop(s)" for h in hops])
        axes[4].set_title("held-out accuracy % by hop count (last validation)", fontsize=10)
        axes[4].legend(fontsize=7)
    fig.suptitle(f"{TASKS[result['task']]['title']}, {result['model']} from the warm start; {steps_budget} steps per arm",
                 fontsize=11)
    return fig


def shared_defaults(args: argparse.Namespace, given) -> dict:
    """The shared groups' starting point: the named task's warm start, questions and caps (smoke: tiny and short);
    a flag on the command line wins."""
    name = given.task.name
    if name not in TASKS:
        raise SystemExit(f"learning_bench.py: error: --task.name: expected one of {', '.join(TASKS)}, got {name!r}")
    task = TASKS[name]
    if args.smoke:
        # A random model's steps are never GOOD: every filter keeps all so that every arm has data to fit.
        return {"policy": {"name": "tiny-random", "adapter": None},
                "task": {"name": name, "limit": 2, "offset": 0, "max_actions": 2},
                "sampling": {"max_new_tokens": 8, "batch_size": 32}}
    return {"policy": {"name": "smollm2-135m-instruct", "adapter": task["adapter"]},
            "task": {"name": name, "limit": task["questions"], "offset": task["offset"],
                     "max_actions": task["max_actions"]},
            "sampling": {"max_new_tokens": task["max_new_tokens"], "batch_size": 32}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's own flags, with the library's shared groups as ``shared``."""
    parser = argparse.ArgumentParser(prog="learning_bench.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4, help="trajectories per training question")
    parser.add_argument("--generate-processes", type=int, default=1,
                        help="data-parallel generation processes (one thread each on a CPU: one per free core)")
    parser.add_argument("--val-questions", type=int, default=None, help="held-out questions (GSM8K: at most 500)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per arm (the equal budget)")
    parser.add_argument("--val-every", type=int, default=None, help="validate every N steps (the validation curve)")
    parser.add_argument("--probe-every", type=int, default=10, help="probe the training reward every N steps")
    parser.add_argument("--examples-per-step", type=int, default=8, help="trajectories (sft) or states (swirl)")
    parser.add_argument("--group-size", type=int, default=4, help="swirl: actions sampled per state")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--probe-states", type=int, default=48, help="states of the reward probe (a fixed draw)")
    parser.add_argument("--probe-samples", type=int, default=4)
    parser.add_argument("--arms", nargs="+", default=None, choices=list(ARMS),
                        help="the task's comparison by default; swirl_none (every state, the paper's no-filter "
                             "variant) runs only when named")
    parser.add_argument("--fit-args", default="", help="extra options for every swirl validate/fit")
    parser.add_argument("--run", default=None, help="working folder (stages found there are not rerun)")
    parser.add_argument("--out", default=None, help="the result JSON (its figure beside it)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, a few steps, no filtering")
    parser.add_argument("--only", nargs="+", metavar="STAGE",
                        help="run only these stages and write no result (e.g. two lanes on two cores: "
                             "--only validate_warm fit_sft, --only fit_swirl_step); then rerun without it")
    parser.add_argument("--report-only", action="store_true",
                        help="run no stage: write the result from what --run holds (e.g. a run copied from a GPU machine)")
    parser.add_argument("--ran-on", help="the machine the stages ran on, when not this one (with --report-only)")
    parser.add_argument("--note", default="", help="a remark kept in the result (e.g. how a run differed)")
    given = list(sys.argv[1:] if argv is None else argv)
    if "--task" in given[:-1] and given[given.index("--task") + 1] in TASKS:
        parser.error("--task is renamed --task.name")
    args = parse_with_shared_groups(parser, given, shared_defaults)
    for name, value in TASKS[args.shared.task.name].items():
        if getattr(args, name, "unset") is None:
            setattr(args, name, value)
    stages = stage_names(list(ARMS))
    if unknown := [stage for stage in args.only or [] if stage not in stages]:
        parser.error(f"--only: no stage {', '.join(unknown)} (the stages: {', '.join(stages)})")
    if args.smoke:
        args.samples, args.val_questions, args.steps, args.val_every, args.probe_every = 2, 2, 2, 1, 1
        args.examples_per_step, args.group_size, args.probe_states, args.probe_samples = 2, 2, 2, 2
        args.fit_args = ("--sampling.max_new_tokens 4 --model.evaluation.sampling.max_new_tokens 4 --task.max_actions 2 "
                         + args.fit_args)
    return args


def main(argv: list[str] | None = None) -> int:
    from swirl_lightning.judging.reference import REFERENCE_VERSION

    args = parse_args(argv)
    Stages.work_from_repository(args, ROOT, ("run", "out"))
    started = time.perf_counter()
    info = machine_info()
    bench = Benchmark(args)
    bench.run()
    if args.only:
        print(f"ran {' '.join(args.only)}; rerun without --only for the result", flush=True)
        return 0
    result = {
        "benchmark": "learning", "command": command_line(argv), "machine": info, "ran_on": args.ran_on or "this machine",
        "note": args.note, "task": args.shared.task.name, "data_path": args.shared.task.data_path,
        "model": args.shared.policy.name, "adapter": args.shared.policy.adapter, "judge": "reference (gold-guided)",
        "step_good_judge": REFERENCE_VERSION,  # the judge that scored every step GOOD rate (score_rollouts)
        "budget": {"steps": args.steps, "val_every": args.val_every, "probe_every": args.probe_every,
                   "val_questions": args.val_questions, "lr": args.lr,
                   "examples_per_step": args.examples_per_step, "group_size": args.group_size},
        "data": data_figures(bench), **collect(bench),
        "stage_commands": bench.stages.commands, "stage_seconds": bench.stages.seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    write_result(result, Path(args.out), plot)
    for arm in result["arms"].values():
        last = arm["validations"][-1]
        versus = {k: arm[k] for k in ("final_vs_warm", "final_vs_sft") if k in arm}
        print(f"{arm['label']:>26}: accuracy {100 * last['accuracy']:.1f}% (95% CI {100 * last['accuracy_ci95'][0]:.1f}-"
              f"{100 * last['accuracy_ci95'][1]:.1f}), GOOD {100 * (last['step_good_rate'] or 0):.1f}%, "
              f"steps {last['steps_mean']:.2f} {versus}")
        for later in arm.get("beyond_budget", []):
            print(f"{'':>26}  past the budget, step {later['step']}: accuracy {100 * later['accuracy']:.1f}% "
                  f"{later['vs_warm']}")
        if (rise := arm.get("probe_first_vs_last")) and rise["rise"] is not None:
            print(f"{'':>26}  probe reward at its training states: {rise['rise']:+.3f} from step {rise['first_step']} "
                  f"to {rise['last_step']} ({rise['states_up']} up, {rise['states_down']} down, "
                  f"sign test p = {rise['sign_test_p']:.3g})")
    print(f"held-out check: {result['held_out']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
