"""The journal of an unfinished evaluation: its rollouts so far, so that a killed evaluation resumes where it stopped.

A 500-question validation takes an hour on a CPU. Killed at minute 50 (out of memory, a lease running out, Ctrl-C),
it should not start over. While an evaluation runs, every batch's rollouts are appended to a journal named for that
evaluation: its stage, the optimizer step of the weights, a fingerprint of the weights and the settings
(:func:`fingerprint`) and a digest of the questions with their gold answers (a rollout's outcome was scored against
them). The next run of the *same* evaluation (``swirl validate --ckpt_path`` on the same checkpoint, say) reads the
journal and rolls out only the questions it lacks; any other weights, settings, questions or gold answers give
another name, so another journal. A finished evaluation deletes its journal: the rollouts file of the evaluation
holds them all.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from swirl_lightning.core.trajectory import Example, JsonlWriter, Trajectory, read_trajectories

if TYPE_CHECKING:
    import torch


class EvaluationJournal:
    """The rollouts one evaluation has finished, by question, appended to ``path`` as they finish."""

    def __init__(self, path: str | Path, samples_per_question: int) -> None:
        self.path, self.samples_per_question = Path(path), samples_per_question
        found: dict[str, dict[int, Trajectory]] = defaultdict(dict)
        if self.path.exists():
            for trajectory in read_trajectories(self.path, torn_tail="skip", allow_empty=True):
                found[trajectory.example_id][trajectory.sample_index] = trajectory  # a later rollout of it wins
        # A question counts as done with all its samples (a crash can leave some of a batch's written).
        self.done = {q: [samples[k] for k in sorted(samples)] for q, samples in found.items()
                     if len(samples) >= samples_per_question}
        self.resumed = len(self.done)
        self._writer: JsonlWriter | None = None

    def roll_out(self, examples: Sequence[Example], rollout: Callable[[list[Example]], list[Trajectory]]
                 ) -> list[Trajectory]:
        """The trajectories of ``examples``: the journal's for the questions it holds, ``rollout``'s for the others
        (recorded before they are returned), in the order of ``examples``."""
        todo = [e for e in examples if e.id not in self.done]
        fresh = rollout(todo) if todo else []
        self.record(fresh)
        by_question: dict[str, list[Trajectory]] = defaultdict(list)
        for trajectory in fresh:
            by_question[trajectory.example_id].append(trajectory)
        return [t for e in examples for t in (self.done.get(e.id) or by_question[e.id])]

    def record(self, trajectories: Sequence[Trajectory]) -> None:
        """Append finished rollouts to the journal (each line flushed to disk)."""
        if not trajectories:
            return
        if self._writer is None:
            self._writer = JsonlWriter(self.path)
        for trajectory in trajectories:
            self._writer.write(trajectory)

    def close(self, finished: bool) -> None:
        """Close the file; a ``finished`` evaluation's journal is deleted (its rollouts file holds everything)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if finished:
            self.path.unlink(missing_ok=True)


def fingerprint(settings: object, adapter: str | None, parameters: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A digest of what decides an evaluation's rollouts: ``settings`` (by ``repr``), the warm-start ``adapter``'s
    content (merged into the frozen weights, it stands for them: :func:`~swirl_lightning.core.digests.adapter_digest`),
    and the parameters that train (a float64 sum and sum of squares of each, of this process's shard under FSDP2).
    Cheap for any model size."""
    import torch

    from swirl_lightning.core.digests import adapter_digest

    digest = hashlib.sha256(repr(settings).encode())
    digest.update(f"adapter {adapter_digest(adapter)}".encode())
    with torch.no_grad():
        for name, parameter in parameters:
            if parameter.requires_grad:
                local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
                values = local.detach().double()
                digest.update(name.encode())
                digest.update(struct.pack("<dd", float(values.sum()), float((values * values).sum())))
    return digest.hexdigest()[:16]


_NAME = re.compile(r"^(?P<head>.+)-q(?P<questions>[0-9a-f]{16})(?P<tail>(?:-rank\d+)?\.jsonl)$")
"""A journal's name: ``<stage, step, fingerprint>-q<questions digest>[-rank<r>].jsonl``."""


def journals_of_other_questions(path: Path) -> list[Path]:
    """The journals named as ``path`` but for other questions or gold answers: the same evaluation of the same weights
    and settings, whose outcomes were scored against data that has changed since (so never to be reused)."""
    own = _NAME.match(path.name)
    if own is None or not path.parent.is_dir():
        return []
    return sorted(other for other in path.parent.iterdir() if (match := _NAME.match(other.name)) is not None
                  and match["head"] == own["head"] and match["tail"] == own["tail"]
                  and match["questions"] != own["questions"])
