"""Outputs never destroy inputs: no output of a command may be one of its inputs, whatever the spelling.

Two spellings name one file when they resolve to one path (links followed, ``.`` and ``..`` gone) or are one file
(a hard link). An output inside an input folder (a world folder, an adapter) or an input inside an output folder (a
shard folder that ``--overwrite`` removes) counts too. Writers replace a link at the output path instead of writing
through it (:func:`~swirl_lightning.core.trajectory.write_jsonl`), so :func:`output_path` keeps the link.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def output_path(path: str | os.PathLike) -> Path:
    """``path`` made absolute without following a link in its last part: the folders are resolved, so nothing done to
    the working folder later moves the output, and a link named as the output is replaced, never written through."""
    path = Path(path).expanduser()
    return path.parent.resolve() / path.name


def clash(output: str | os.PathLike, source: str | os.PathLike) -> str | None:
    """How writing (or removing) ``output`` would destroy ``source``: ``"is"`` (one file in any spelling), ``"is
    inside"`` (a file in an input folder) or ``"holds"`` (an output folder around the input); ``None`` when apart."""
    out, src = Path(output).resolve(), Path(source).resolve()
    if out == src or (os.path.exists(output) and os.path.exists(source) and os.path.samefile(output, source)):
        return "is"
    if src in out.parents:
        return "is inside"
    if out in src.parents:
        return "holds"
    return None


def check_outputs_apart(outputs: Mapping[str, str | os.PathLike], inputs: Mapping[str, str | os.PathLike | None],
                        ) -> None:
    """Raise ``ValueError`` naming both when an output (by name, e.g. ``output``) would destroy an input (by name,
    e.g. ``task.data_path``; ``None`` for an input not given)."""
    for output_name, output in outputs.items():
        for input_name, source in inputs.items():
            relation = None if source is None else clash(output, source)
            if relation is not None:
                raise ValueError(f"{output_name} {output} {relation} the {input_name} {source}: writing it would "
                                 "destroy the input; choose another path")
