"""HotPotQA (multi-hop questions over Wikipedia, CC BY-SA 4.0) with the search tool: 300 train and 300 dev questions
of the distractor setting ship in the package; ``validation`` is ``dev``. The outcome is a normalised exact match; a
search makes progress (the ``reference`` judge) when it brings a supporting paragraph the state did not have."""

from __future__ import annotations

from swirl_lightning.core.tasks import DataPath, Task, data_dir, read_records, text_field, titles_brought
from swirl_lightning.core.trajectory import Example, FormatError

HOTPOTQA_SPLITS = ("train", "dev")


class HotpotQATask(Task):
    """HotPotQA: search, then answer in a few words."""

    name = "hotpotqa"
    splits = ("train", "dev", "validation")  # "validation" is "dev", so every task's configs can name it
    max_actions = 5
    tools = ("search",)
    outcome_judge = "qa_em"
    # Written by hand, not drawn from the data set, so it never leaks into evaluation.
    few_shot = [
        {"role": "user", "content": "In which country was the composer of the opera Rusalka born?"},
        {"role": "assistant", "content": "I need the composer of Rusalka first. <{search}>Rusalka opera composer</{search}>"},
        {"role": "user", "content": "Rusalka opera composer -> Rusalka (opera): Rusalka is an opera by Antonín Dvořák."},
        {"role": "assistant", "content": "Now where Dvořák was born. <{search}>Antonín Dvořák birthplace</{search}>"},
        {"role": "user",
         "content": "Antonín Dvořák birthplace -> Antonín Dvořák: Antonín Dvořák was a Czech composer, born in Nelahozeves, "
                    "Bohemia."},
        {"role": "assistant", "content": "Nelahozeves is in today's Czech Republic. <answer>Czech Republic</answer>"},
    ]

    def load(self, split: str, limit: int | None = None, path: DataPath | None = None) -> list[Example]:
        return load_hotpotqa("dev" if split == "validation" else split, path, limit)

    def reference_progress(self, example: Example, result: str) -> frozenset[str]:
        """The supporting paragraphs (by title) a search result brings."""
        return titles_brought(result, example.metadata.get("supporting_titles") or [])


def load_hotpotqa(split: str = "train", path: DataPath | None = None, limit: int | None = None) -> list[Example]:
    """HotPotQA questions in the HF distractor layout (``train`` or ``dev``, 300 each packaged).

    ``metadata`` holds ``supporting_titles`` (in order, de-duplicated), ``supporting_facts``
    (``[title, sentence id]`` pairs), ``type`` and ``level``; the context paragraphs are left out.
    """
    if path is None:
        if split not in HOTPOTQA_SPLITS:
            raise ValueError(f"split: expected one of {', '.join(HOTPOTQA_SPLITS)}, got {split!r}")
        path = data_dir() / "hotpotqa" / f"{split}.jsonl"
    examples = []
    for where, _, record in read_records(path, limit):
        facts = record.get("supporting_facts") or {}
        if not isinstance(facts, dict) or len(facts.get("title", [])) != len(facts.get("sent_id", [])):
            raise FormatError(f"{where}: field 'supporting_facts': expected {{'title': [...], 'sent_id': [...]}} of equal length")
        titles = list(facts.get("title", []))
        metadata = {
            "supporting_titles": list(dict.fromkeys(titles)),
            "supporting_facts": [[t, s] for t, s in zip(titles, facts.get("sent_id", []))],
            "type": record.get("type"),
            "level": record.get("level"),
        }
        example_id, question, answer = (text_field(record, name, where) for name in ("id", "question", "answer"))
        examples.append(Example(example_id, question, answer, source="hotpotqa", metadata=metadata))
    return examples
