"""Any questions with answers: one ``{"id"?, "question", "answer"}`` object per line of ``task.data_path``."""

from __future__ import annotations

from pathlib import Path

from swirl_lightning.core.tasks import DataPath, Task, read_records, text_field
from swirl_lightning.core.trajectory import Example, FormatError


class JsonlTask(Task):
    """User data: the file is the data set (the split name is not used); every registered tool by default, no
    example turns, outcome by normalised exact match. A ``solution`` field in GSM8K's worked-solution format
    (``<<expr=result>>`` annotations, ``#### answer``) gives the ``reference`` judge its values."""

    name = "jsonl"

    def load(self, split: str, limit: int | None = None, path: DataPath | None = None) -> list[Example]:
        if path is None:
            raise ValueError("task 'jsonl': expected task.data_path=<file.jsonl> with {id?, question, answer} per line")
        return load_examples_jsonl(path, limit)

    def reference_values(self, example: Example) -> tuple[str, ...] | None:
        from swirl_lightning.core.tasks.gsm8k import reference_values

        solution = example.metadata.get("solution")
        return reference_values(solution) if isinstance(solution, str) else None


def load_examples_jsonl(path: DataPath, limit: int | None = None, source: str = "jsonl") -> list[Example]:
    """User data: one ``{"id"?, "question", "answer"}`` object per line; other fields go to ``metadata``.

    A missing id becomes ``<file stem>-<0-based line index>``; a numeric answer becomes a string.
    Duplicate ids are an error.
    """
    stem = Path(str(path)).stem
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for where, index, record in read_records(path, limit):
        example_id = text_field(record, "id", where, numbers=True) if "id" in record else f"{stem}-{index}"
        if example_id in seen:
            raise FormatError(f"{where}: duplicate id {example_id!r} (first at line {seen[example_id]})")
        seen[example_id] = index + 1
        extras = {k: v for k, v in record.items() if k not in ("id", "question", "answer")}
        question = text_field(record, "question", where)
        answer = text_field(record, "answer", where, numbers=True)
        examples.append(Example(example_id, question, answer, source, extras))
    return examples
