"""Stage 3 of SWiRL: judge the steps and outcomes of generated trajectories, then keep the good ones.

``swirl filter`` reads trajectories (JSONL), judges every step with a step judge (cached on disk, so a
second run calls no model for a step it has seen), scores final answers against the task's gold answers,
keeps the trajectories the mode asks for, and writes them (with their judgements) and a stats JSON.
Judging many steps and the cache are in :mod:`.steps`. Modes:

- ``none``: keep all;
- ``process``: keep a trajectory only if ALL its steps are judged GOOD (a trajectory without steps is not
  kept);
- ``outcome``: keep it if its outcome score (final answer against gold) is at least the threshold;
- ``process+outcome``: both;
- ``step``: the step-level filter: every trajectory is kept, cut after its first BAD step, and
  ``metadata["good_steps"]`` records how many steps before the cut are GOOD. ``swirl`` trains on the states
  before each kept step (so also the state where the first mistake was made); ``sft`` and ``offline`` train on
  the GOOD steps only. The paper's process filter keeps whole trajectories; with a strict judge (one that calls
  a step GOOD only when it is on a gold path) almost none survive, while their good prefixes do.

Judge failures (a served judge that gave no verdict: ``FAILED``, never BAD) are left out, not counted against a
trajectory, and reported (``steps_failed``, ``trajectories_undecided``):

- ``process`` and ``process+outcome``: a trajectory with a BAD step (or a wrong answer) is rejected as usual; one
  whose only missing verdicts are failures is *undecided*: not kept, since it cannot be certified all GOOD;
- ``step``: the trajectory is cut at its first step that is not GOOD; a BAD step stays as the last step (as
  above), a failed step does not (the prefix before it is kept, ``good_steps`` = its length, all GOOD); a
  trajectory whose first step failed is left out (undecided);
- ``outcome``: a trajectory whose answer the grader failed on (``outcome`` null) is undecided, not kept;
- ``none``: keeps every trajectory.

Judgements are cached and failures are not, so running the same filter again asks only for the failed steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swirl_lightning.core.config import JudgeConfig, TaskConfig
from swirl_lightning.core.outputs import check_outputs_apart
from swirl_lightning.core.trajectory import (
    Example,
    Judgement,
    Step,
    Trajectory,
    read_trajectories,
    write_jsonl,
    write_text_atomic,
)
from swirl_lightning.judging.base import BAD, FAILED, GOOD, OutcomeJudge
from swirl_lightning.judging.steps import (
    FailureBudget,
    JudgementCache,
    JudgementStore,
    judge_trajectories,
    judgement_key,
)

FILTER_MODES = ("none", "process", "outcome", "process+outcome", "step")


# ----------------------------------------------------------------------------------------------------
# Final answers against gold answers


def final_answer(trajectory: Trajectory) -> str | None:
    """The trajectory's final answer, or the answer of its last step when that field is unset."""
    if trajectory.final_answer is not None:
        return trajectory.final_answer
    if trajectory.steps and trajectory.steps[-1].action.kind == "answer":
        return trajectory.steps[-1].action.answer
    return None


def score_outcomes(trajectories: Sequence[Trajectory], examples: dict[str, Example], outcome_judge: OutcomeJudge,
                   cache: JudgementStore | None = None, failures: FailureBudget | None = None) -> None:
    """Set ``trajectory.outcome`` to the outcome judge's score and ``metadata["outcome_judge"]`` to its id.

    A judge failure (a ``None`` score) leaves ``outcome`` null with ``metadata["outcome_error"]`` set, counted in
    ``failures``. A judge with ``cacheable`` and ``prompt_version`` (the served grader) has its grades cached.
    """
    missing = sorted({t.example_id for t in trajectories if t.example_id not in examples})
    if missing:
        raise ValueError(f"no example for {len(missing)} trajectory example id(s), e.g. {missing[:3]}; wrong task or split?")
    predictions = [final_answer(t) for t in trajectories]
    golds = [examples[t.example_id].answer for t in trajectories]
    questions = [examples[t.example_id].question for t in trajectories]
    version = outcome_judge.prompt_version
    keys: list[str | None] = [None] * len(trajectories)
    if cache is not None and outcome_judge.cacheable and version:
        keys = [judgement_key(outcome_judge.judge_id, version, [{"role": "user", "content": q}], f"{p}\n=> {g}")
                for p, g, q in zip(predictions, golds, questions)]
    cached = cache.get_many(k for k in keys if k) if cache is not None and any(keys) else {}
    todo = [i for i, key in enumerate(keys) if key not in cached]
    graded = outcome_judge.grade_batch([predictions[i] for i in todo], [golds[i] for i in todo],
                                       [questions[i] for i in todo]) if todo else []
    judgements: list[Judgement | None] = [cached.get(k) if k else None for k in keys]
    for i, fresh in zip(todo, graded):
        judgements[i] = fresh
    if cache is not None:
        cache.put_many({key: j for i, j in zip(todo, graded) if (key := keys[i])})
    if failures is not None:
        failures.judged += len(trajectories) - len(todo)  # the cached grades
        failures.add(graded)
    for trajectory, judgement in zip(trajectories, judgements):
        assert judgement is not None  # each one cached or graded
        trajectory.outcome = judgement.score
        trajectory.metadata["outcome_judge"] = outcome_judge.judge_id
        if judgement.failed:
            trajectory.metadata["outcome_error"] = judgement.error


# ----------------------------------------------------------------------------------------------------
# Filtering and its statistics


def _uses_process(mode: str) -> bool:
    return mode in ("process", "process+outcome", "step")


def _uses_outcome(mode: str) -> bool:
    return mode in ("outcome", "process+outcome")


def step_judgement(step: Step, judge_id: str) -> Judgement | None:
    """The judgement of ``step`` by judge ``judge_id``, if any."""
    return next((j for j in step.judgements if j.judge == judge_id), None)


def _verdicts(trajectory: Trajectory, step_judge_id: str) -> list[str]:
    """The verdict of each step by ``step_judge_id`` (``GOOD``, ``BAD`` or ``FAILED``); a missing one is an error."""
    verdicts = []
    for index, step in enumerate(trajectory.steps):
        judgement = step_judgement(step, step_judge_id)
        if judgement is None:
            raise ValueError(f"trajectory {trajectory.key} step {index}: no judgement by {step_judge_id!r}; "
                             "judge the steps first (judge_trajectories)")
        verdicts.append(judgement.verdict)
    return verdicts


def _outcome_failed(trajectory: Trajectory) -> bool:
    return trajectory.outcome is None and "outcome_error" in trajectory.metadata


def filter_trajectories(trajectories: Sequence[Trajectory], mode: str, step_judge_id: str | None = None,
                        outcome_threshold: float = 1.0) -> tuple[list[Trajectory], dict[str, Any]]:
    """The trajectories ``mode`` keeps (in input order) and the stats of the input and the kept set.

    ``process`` modes need every step judged by ``step_judge_id``; ``outcome`` modes need
    ``trajectory.outcome`` set (see :func:`score_outcomes`). Missing data is an error naming the trajectory.
    Judge failures leave a trajectory undecided, not kept (module docstring); ``trajectories_undecided`` counts them.
    """
    if mode not in FILTER_MODES:
        raise ValueError(f"mode: expected one of {', '.join(FILTER_MODES)}, got {mode!r}")
    if _uses_process(mode) and not step_judge_id:
        raise ValueError(f"mode {mode!r} needs step_judge_id (the judge whose verdicts decide)")
    judge_id = step_judge_id or ""  # read by the process modes only, which have it (checked above)
    kept, undecided = [], 0
    for trajectory in trajectories:
        if mode == "step":
            cut = cut_after_first_bad(trajectory, judge_id)
            if cut.steps or not trajectory.steps:
                kept.append(cut)
            else:  # its first step failed: nothing is known to keep
                undecided += 1
            continue
        # rejected: a known BAD step or a wrong answer; failed: a verdict missing through a judge failure
        rejected = failed = False
        if _uses_process(mode):
            verdicts = _verdicts(trajectory, judge_id)
            rejected = not verdicts or any(v not in (GOOD, FAILED) for v in verdicts)
            failed = FAILED in verdicts
        if _uses_outcome(mode):
            if _outcome_failed(trajectory):
                failed = True
            elif trajectory.outcome is None:
                raise ValueError(f"trajectory {trajectory.key}: outcome not scored; run score_outcomes first")
            else:
                rejected = rejected or trajectory.outcome < outcome_threshold
        if not rejected and not failed:
            kept.append(trajectory)
        elif not rejected:
            undecided += 1
    stats = filter_stats(trajectories, kept, mode, step_judge_id, outcome_threshold)
    stats["trajectories_undecided"] = undecided
    return kept, stats


def cut_after_first_bad(trajectory: Trajectory, step_judge_id: str) -> Trajectory:
    """A copy of ``trajectory`` ending with its first step that ``step_judge_id`` called BAD (all of it when every
    step is GOOD), with ``metadata["good_steps"]`` = the number of steps before that one. A judge failure before
    any BAD step cuts the trajectory *before* the failed step (possibly to no step at all)."""
    good, end = 0, len(trajectory.steps)
    for verdict in _verdicts(trajectory, step_judge_id):
        if verdict == GOOD:
            good += 1
            continue
        end = good + 1 if verdict == BAD else good
        break
    return dataclasses.replace(trajectory, steps=trajectory.steps[:end],
                               metadata={**trajectory.metadata, "good_steps": good})


def good_steps_only(trajectory: Trajectory) -> Trajectory:
    """``trajectory`` without the BAD step a ``step`` filter left at its end (unchanged when it has none)."""
    good = trajectory.metadata.get("good_steps")
    if good is None or good >= len(trajectory.steps):
        return trajectory
    return dataclasses.replace(trajectory, steps=trajectory.steps[:good])


def _share(part: float, whole: int) -> float | None:
    return part / whole if whole else None


def filter_stats(trajectories: Sequence[Trajectory], kept: Sequence[Trajectory], mode: str,
                 step_judge_id: str | None, outcome_threshold: float = 1.0) -> dict[str, Any]:
    """Counts, kept share, per-step GOOD rate (overall and by step index), judge failures and outcome accuracy.

    Step rates count only steps judged by ``step_judge_id`` with a verdict (a failure is no verdict: it is counted
    in ``steps_failed``); outcome figures only trajectories with an outcome.
    """
    good_by_index: list[int] = []
    judged_by_index: list[int] = []
    all_good = failed_steps = with_failures = 0
    for trajectory in trajectories:
        verdicts = []
        for index, step in enumerate(trajectory.steps):
            judgement = step_judgement(step, step_judge_id) if step_judge_id else None
            if judgement is None:
                continue
            verdicts.append(judgement.verdict)
            if judgement.failed:
                failed_steps += 1
                continue
            if index >= len(judged_by_index):
                grow = index + 1 - len(judged_by_index)
                judged_by_index += [0] * grow
                good_by_index += [0] * grow
            judged_by_index[index] += 1
            good_by_index[index] += judgement.verdict == GOOD
        all_good += bool(trajectory.steps) and len(verdicts) == len(trajectory.steps) and all(v == GOOD for v in verdicts)
        with_failures += FAILED in verdicts
    scored = [t for t in trajectories if t.outcome is not None]
    kept_scored = [t for t in kept if t.outcome is not None]
    outcomes = [t.outcome for t in scored if t.outcome is not None]
    kept_outcomes = [t.outcome for t in kept_scored if t.outcome is not None]
    return {
        "mode": mode,
        "step_judge": step_judge_id,
        "outcome_threshold": outcome_threshold,
        "trajectories": len(trajectories),
        "kept": len(kept),
        "kept_share": _share(len(kept), len(trajectories)),
        "steps": sum(len(t.steps) for t in trajectories),
        "kept_steps": sum(len(t.steps) for t in kept),
        "steps_judged": sum(judged_by_index),
        "steps_failed": failed_steps,
        "trajectories_with_failed_steps": with_failures,
        "step_good_rate": _share(sum(good_by_index), sum(judged_by_index)),
        "steps_judged_by_index": judged_by_index,
        "step_good_rate_by_index": [_share(g, n) for g, n in zip(good_by_index, judged_by_index)],
        "trajectories_all_steps_good": all_good if step_judge_id else None,
        "trajectories_with_outcome": len(scored),
        "outcomes_failed": sum(_outcome_failed(t) for t in trajectories),
        "outcome_accuracy": _share(sum(o >= outcome_threshold for o in outcomes), len(scored)),
        "outcome_mean": _share(sum(outcomes), len(scored)),
        "kept_outcome_accuracy": _share(sum(o >= outcome_threshold for o in kept_outcomes), len(kept_scored)),
    }


# ----------------------------------------------------------------------------------------------------
# The `swirl filter` command


@dataclass
class FilterConfig:
    """Judge every step of generated trajectories, score their answers, and keep them by mode."""

    input: str
    """Trajectories to filter (JSONL written by ``swirl generate``)."""
    output: str
    """Where the kept trajectories go, with their judgements (JSONL, written atomically)."""
    stats: str | None = None
    """Where the stats go (JSON); default: the output path with the suffix ``.stats.json``."""
    task: TaskConfig | None = None
    """The task the trajectories answer (its gold answers and reference data); needed by the outcome modes and by
    judges that read gold data (``reference``). ``task.split`` is the split they were generated from."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """The step judge, and the outcome judge (the task's by default)."""
    mode: str = "process"
    """What to keep: none, process (all steps GOOD), outcome (right final answer), process+outcome, or step
    (every trajectory, cut after its first BAD step: its good prefix). A judge failure is never a BAD: a trajectory
    that only a failure keeps from being kept is left out as undecided (``swirl_lightning.judging.filter``)."""
    outcome_threshold: float = 1.0
    """Least outcome score counted as correct (1.0: exact match)."""
    cache: bool = True
    """Reuse and store step judgements (and a served grader's grades) in the on-disk cache (``--cache false`` to judge
    afresh); judge failures are never stored."""
    cache_path: str | None = None
    """Judgement cache file; default ``$SWIRL_CACHE_DIR/judgements/judgements.sqlite``."""
    progress: bool = True
    """Show a progress bar while judging."""
    overwrite: bool = False
    """Replace an existing output (and stats); without it an existing output is refused."""

    def __post_init__(self) -> None:
        if self.mode not in FILTER_MODES:
            raise ValueError(f"mode: expected one of {', '.join(FILTER_MODES)}, got {self.mode!r}")
        if _uses_outcome(self.mode) and self.task is None:
            raise ValueError(f"mode {self.mode!r} compares final answers with gold answers: give the task (task.name)")

    @property
    def stats_path(self) -> Path:
        """The stats file: ``stats`` or the output path with suffix ``.stats.json``."""
        return Path(self.stats) if self.stats else Path(self.output).with_suffix(".stats.json")


def check_outputs(inputs: Mapping[str, str | Path | None], outputs: Mapping[str, Path], overwrite: bool) -> None:
    """Refuse outputs (by name) that would destroy data: an input (by name) in any spelling, two outputs in one file
    (the stats written over the kept trajectories), or an existing file without ``overwrite``."""
    resolved = [path.resolve() for path in outputs.values()]
    names = list(outputs.values())
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            raise ValueError(f"outputs {names[resolved.index(path)]} and {names[index]} are one file: the second "
                             "would replace the first; choose another path")
    check_outputs_apart(outputs, inputs)
    for output in outputs.values():
        if os.path.lexists(output) and not overwrite:
            raise FileExistsError(f"output {output} exists: pass --overwrite true to replace it, or choose another output")


def run_filter(config: FilterConfig) -> dict[str, Any]:
    """Judge, score, filter and write, as configured; returns the stats that were written."""
    from swirl_lightning.core.tasks import get_task, load_task
    from swirl_lightning.judging.base import check_judge_options, make_outcome_judge, make_step_judge

    started = time.perf_counter()
    task = config.task
    check_outputs({"input": config.input, "task.data_path": task.data_path if task else None},
                  {"output": Path(config.output), "stats": config.stats_path}, config.overwrite)
    trajectories = read_trajectories(config.input)
    examples = None if task is None else {e.id: e for e in load_task(task.name, task.split, path=task.data_path)}
    step_judge_id, judging, usage = None, None, {}
    step_failures, outcome_failures = FailureBudget.from_config(config.judge), FailureBudget.from_config(config.judge)
    # The options of both judges are checked, then both are built, before any step is judged: a bad option of either
    # is found before a model loads or a server is called.
    outcome_name = None if task is None else config.judge.outcome or get_task(task.name).outcome_judge
    if _uses_process(config.mode):
        check_judge_options(config.judge.name, config.judge.options)
    if outcome_name is not None:
        check_judge_options(outcome_name, config.judge.outcome_options, "judge.outcome_options")
    judge = make_step_judge(config.judge.name, config.judge.options) if _uses_process(config.mode) else None
    outcome_judge = None if outcome_name is None else make_outcome_judge(outcome_name,
                                                                         options=config.judge.outcome_options)
    cache = JudgementCache(config.cache_path) if config.cache else None
    try:
        if judge is not None:
            step_judge_id = judge.judge_id
            judging = judge_trajectories(trajectories, judge, examples, cache, config.judge.batch_size,
                                         config.progress, step_failures)
            step_failures.check(final=True)
            if judge.usage is not None:
                usage["step_judge"] = judge.usage.as_dict()
        if outcome_judge is not None:
            assert examples is not None  # an outcome judge comes with the task's examples
            score_outcomes(trajectories, examples, outcome_judge, cache, outcome_failures)
            outcome_failures.check(final=True)
            if outcome_judge.usage is not None:
                usage["outcome_judge"] = outcome_judge.usage.as_dict()
    finally:
        if cache is not None:
            cache.close()
    kept, stats = filter_trajectories(trajectories, config.mode, step_judge_id, config.outcome_threshold)
    Path(config.output).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(config.output, kept)
    stats.update(input=str(config.input), output=str(config.output), task=None if task is None else task.name,
                 split=None if task is None else task.split,
                 outcome_judge=None if outcome_judge is None else outcome_judge.judge_id, judging=judging,
                 judge_failures={"steps": step_failures.as_dict(), "outcomes": outcome_failures.as_dict()},
                 judge_usage=usage or None, seconds=round(time.perf_counter() - started, 3))
    write_text_atomic(config.stats_path, json.dumps(stats, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return stats


def cli_main(argv: list[str]) -> int:
    """``swirl filter --config FILE | --input F --output F [--group.field value ...]``; prints a one-line summary."""
    from swirl_lightning.core.config import parse_config
    from swirl_lightning.judging.served import JudgeConfigurationError
    from swirl_lightning.judging.steps import JudgeFailureError

    config = parse_config(FilterConfig, argv, "swirl filter")
    try:
        stats = run_filter(config)
    except (JudgeFailureError, JudgeConfigurationError) as error:
        print(f"swirl filter: error: {error}", file=sys.stderr)
        return 1
    rate, accuracy = stats["step_good_rate"], stats["outcome_accuracy"]
    failed = stats["steps_failed"] + stats["outcomes_failed"]
    tokens = sum(u["total_tokens"] for u in (stats["judge_usage"] or {}).values())
    print(f"kept {stats['kept']}/{stats['trajectories']} trajectories ({(stats['kept_share'] or 0):.1%})"
          + (f", step GOOD rate {rate:.3f}" if rate is not None else "")
          + (f", outcome accuracy {accuracy:.3f}" if accuracy is not None else "")
          + (f", {failed} judge failures ({stats['trajectories_undecided']} trajectories undecided: rerun to ask "
             "again)" if failed else "")
          + (f", {tokens} judge tokens" if tokens else "")
          + f" -> {config.output} (stats: {config.stats_path})")
    return 0
