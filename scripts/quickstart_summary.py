"""The end of `make quickstart`: what training did, in plain words.

    python scripts/quickstart_summary.py RUN_FOLDER

Reads the quickstart's TensorBoard folder: the reward probe of the fit (the judged reward of fresh samples at the
training states, before the first update and after the last) and the validation rollouts before training (the warm
start: the ``swirl validate`` run, ``tb/quickstart/validate``) and after it (the fit's last validation).
It prints the reward at the first and last step, then accuracy and tool errors before and after on the same held-out
questions, says plainly whether training lifted accuracy (or that it did not), and whether validation got worse, and
why when it can tell: a handful of questions decides a change this small (the exact McNemar p-value says how likely
it is by chance), and a tool-error rate can move because one rollout repeats a failing call.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from swirl_lightning.core.trajectory import Trajectory, read_trajectories
from swirl_lightning.training.cli import log_dirs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from significance import exact_sign_test_p  # noqa: E402  (the benchmarks' statistics)


def tool_errors(trajectories: list[Trajectory]) -> tuple[int, int, int]:
    """(errored calls, calls, errored calls of the rollout with the most)."""
    per_rollout = [sum(s.tool_error for s in t.steps if s.action.kind == "tool") for t in trajectories]
    calls = sum(s.action.kind == "tool" for t in trajectories for s in t.steps)
    return sum(per_rollout), calls, max(per_rollout, default=0)


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def summarize(run: Path) -> list[str]:
    """The summary's lines for a quickstart run folder."""
    validations = [sorted(v.glob("rollouts/val-step*.jsonl")) for v in log_dirs(run / "tb", "validate")]
    fits = log_dirs(run / "tb", "fit")
    before = next((files[0] for files in reversed(validations) if files), None)
    after = next((files[-1] for files in (sorted(v.glob("rollouts/val-step*.jsonl")) for v in reversed(fits))
                  if files), None)
    probes = [v / "probe.json" for v in fits if (v / "probe.json").exists()]
    lines = []
    if probes:
        history = json.loads(probes[-1].read_text())
        first, last = history[0], history[-1]
        shown = ["no verdict" if p["reward_mean"] is None else f"{p['reward_mean']:.3f}" for p in (first, last)]
        # None when every judgement of a probe failed: nothing to compare.
        rewards = (first["reward_mean"], last["reward_mean"])
        moved = None if None in rewards else rewards[1] - rewards[0]
        lines.append(f"training reward (fresh samples at the {first['states']} training states, judged): "
                     f"{shown[0]} at step {first['step']} -> {shown[1]} at step {last['step']} "
                     f"({'no verdict to compare' if moved is None else f'{moved:+.3f}'})")
        if moved is None or round(moved, 3) <= 0:
            lines.append(f"  it did not rise in {last['step'] - first['step']} steps: too few for a measurable change "
                         "with this model (benchmarks/README.md, RL sanity: the same measure over 40 steps)")
    if before is None or after is None:
        return lines + ["no validation before and after training to compare"]
    warm, trained = read_trajectories(before), read_trajectories(after)
    warm_right = {t.example_id for t in warm if t.outcome}
    trained_right = {t.example_id for t in trained if t.outcome}
    gained, lost = len(trained_right - warm_right), len(warm_right - trained_right)
    n = len(trained)
    lines.append(f"validation accuracy on the same {n} held-out questions: {percent(len(warm_right), n)} -> "
                 f"{percent(len(trained_right), n)} ({gained} gained, {lost} lost; exact McNemar p = "
                 f"{exact_sign_test_p(gained, lost):.2g})")
    (warm_errors, warm_calls, _), (errors, calls, worst) = tool_errors(warm), tool_errors(trained)
    lines.append(f"tool errors: {percent(warm_errors, warm_calls)} of {warm_calls} calls -> "
                 f"{percent(errors, calls)} of {calls} calls")
    worse = []
    if lost > gained:
        worse.append(f"accuracy is lower by {lost - gained} question(s) of {n}"
                     + (", within chance at this size" if exact_sign_test_p(gained, lost) >= 0.05 else ""))
    if calls and errors / calls > (warm_errors / warm_calls if warm_calls else 0):
        why = (f"; {worst} of the {errors} come from one rollout repeating a failing call" if errors and
               worst >= errors / 2 else "")
        worse.append(f"tool errors rose{why}")
    p = exact_sign_test_p(gained, lost)
    if gained > lost:
        lines.append(f"training lifted accuracy by {gained - lost} question(s) of {n}"
                     + (f" (p = {p:.2g}: unlikely by chance)" if p < 0.05 else
                        f", but p = {p:.2f}: at this size that can be chance"))
    else:
        lines.append(f"no gain: training did not lift accuracy on these {n} held-out questions.")
    if worse:
        lines.append("validation got worse: " + "; ".join(worse) + ". A slice this small shows the machinery more than "
                     "learning: benchmarks/README.md has the measured comparison.")
    else:
        lines.append("validation is no worse than the warm start's on accuracy and tool errors.")
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.split("\n\n")[1].strip())
    print("\n".join(summarize(Path(sys.argv[1]))))
