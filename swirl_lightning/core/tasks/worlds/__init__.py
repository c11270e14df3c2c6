"""The ``worlds`` task: multi-hop questions over generated fictional worlds, answered with a search tool.

A *world folder* holds ``questions.jsonl`` (``{id, question, answer, world?, hops?, path?, facts?, ...}`` per line) and
``corpus.jsonl`` (``{id, title, text, world?}``: one article per entity), and ``world.json`` with the generator's
settings when this project wrote it. ``task.data_path`` names a world folder, a questions file (its corpus beside
it), or a folder with one world folder per split (``train/``, ``validation/``, ``test/``); without one, the default
worlds of the split are generated once into the cache. Folders the project never wrote work the same way.

Each question's episode tells the search tool where to look: ``metadata["corpus"]`` is the corpus file's path and
``metadata["world"]`` (when the record has one) restricts the search to that world's articles.

Gold data: the reference trajectory reads the gold path's articles in order (search the entity, state the fact
read, search the next entity, answer), and a search step makes progress when its result brings an article of the
gold path (:meth:`WorldsTask.reference_progress`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from swirl_lightning.core.tasks import DataPath, Task, read_records, text_field, titles_brought
from swirl_lightning.core.tasks.jsonl import load_examples_jsonl
from swirl_lightning.core.tasks.worlds.generator import (
    GENERATOR_VERSION,
    WorldSettings,
    generate_world,
    settings_record,
    world_seeds,
)
from swirl_lightning.core.trajectory import Action, Example, FormatError, Step, Trajectory

QUESTIONS_FILE, CORPUS_FILE, SETTINGS_FILE = "questions.jsonl", "corpus.jsonl", "world.json"
DEFAULT_WORLDS = {"train": 200, "validation": 60, "test": 60}
"""Worlds of each split when no ``task.data_path`` is given (20 questions each)."""


class WorldsTask(Task):
    """Generated worlds: search the entity, read its article, follow the relation, answer in a few words."""

    name = "worlds"
    splits = ("train", "validation", "test")
    max_actions = 5
    tools = ("search",)
    outcome_judge = "qa_em"
    # Written by hand for an invented world that is not generated, so it never leaks into evaluation.
    few_shot = [
        {"role": "user", "content": "Where was the founder of Quorn Mills born?"},
        {"role": "assistant", "content": "<{search}>Quorn Mills</{search}>"},
        {"role": "user", "content": "Quorn Mills -> Quorn Mills: Quorn Mills is a glass company. It was founded by Ebo Tarsk."},
        {"role": "assistant", "content": "Quorn Mills was founded by Ebo Tarsk. <{search}>Ebo Tarsk</{search}>"},
        {"role": "user", "content": "Ebo Tarsk -> Ebo Tarsk: Ebo Tarsk is a pilot. He was born in Vellmouth."},
        {"role": "assistant", "content": "Ebo Tarsk was born in Vellmouth. <answer>Vellmouth</answer>"},
    ]

    def load(self, split: str, limit: int | None = None, path: DataPath | None = None) -> list[Example]:
        return load_worlds(questions_file(split, path), limit)

    def reference_progress(self, example: Example, result: str) -> frozenset[str]:
        """The gold-path articles a search result brings (by title): progress when the state lacked one."""
        path = example.metadata.get("path")
        if not isinstance(path, list) or not path:
            raise ValueError(f"example {example.id}: expected metadata['path'], the titles of its gold articles")
        return titles_brought(result, path)

    def reference_trajectory(self, example: Example, prompt: list[dict[str, str]],
                             tool_tags: Mapping[str, str]) -> Trajectory:
        if "search" not in tool_tags:
            raise ValueError("worlds reference trajectories call the search tool; it is not among the task's tools")
        return worlds_reference_trajectory(example, prompt, read_corpus_texts(example), tool_tags["search"])


def questions_file(split: str, path: DataPath | None) -> Path:
    """The questions file of ``split`` under ``path`` (module docstring); the default worlds when ``path`` is None."""
    if path is None:
        return default_folder(split) / QUESTIONS_FILE
    path = Path(os.fspath(cast("str | os.PathLike[str]", path)))  # a folder on disk
    if path.is_dir() and (path / split / QUESTIONS_FILE).is_file():
        return path / split / QUESTIONS_FILE
    if path.is_dir():
        if not (path / QUESTIONS_FILE).is_file():
            raise FileNotFoundError(f"task.data_path {path}: expected a world folder with {QUESTIONS_FILE} and "
                                    f"{CORPUS_FILE}, or a folder with one per split ({split}/{QUESTIONS_FILE})")
        return path / QUESTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"task.data_path {path}: no such file or folder (expected a world folder, a questions "
                                "file, or a folder with one world folder per split)")
    return path


def load_worlds(path: Path, limit: int | None = None) -> list[Example]:
    """The questions of a world folder's questions file; each example's ``metadata["corpus"]`` is its corpus file
    (the record's ``corpus``, relative to the questions file, or ``corpus.jsonl`` beside it), made absolute."""
    examples = load_examples_jsonl(path, limit, source="worlds")
    for example in examples:
        corpus = example.metadata.get("corpus", CORPUS_FILE)
        if not isinstance(corpus, str):
            raise FormatError(f"{path}: question {example.id}: field 'corpus': expected a file name, got {corpus!r:.60}")
        corpus_path = (path.parent / corpus).resolve()
        if not corpus_path.is_file():
            raise FileNotFoundError(f"{path}: question {example.id}: its corpus {corpus_path} does not exist")
        example.metadata["corpus"] = str(corpus_path)
    return examples


def read_corpus_texts(example: Example) -> dict[str, str]:
    """Title -> article text of the example's world (for its reference trajectory)."""
    corpus = example.metadata["corpus"]
    return _corpus_by_world(corpus, os.stat(corpus).st_mtime_ns).get(example.metadata.get("world"), {})


@functools.lru_cache(maxsize=4)
def _corpus_by_world(corpus: str, stamp: int) -> dict[str | None, dict[str, str]]:
    """World -> title -> text of a corpus file (``stamp``: its modification time, so an edited file is read again);
    the articles of every world are also under ``None``."""
    worlds: dict[str | None, dict[str, str]] = {None: {}}
    for where, _, record in read_records(corpus, None):
        title, text = text_field(record, "title", where), text_field(record, "text", where)
        worlds[None][title] = text
        if isinstance(record.get("world"), str):
            worlds.setdefault(record["world"], {})[title] = text
    return worlds


def worlds_reference_trajectory(example: Example, prompt: list[dict[str, str]], articles: Mapping[str, str],
                                tool_tag: str, tool_name: str = "search") -> Trajectory:
    """The gold trajectory of a question: one search per article of its gold path (the entity's name), each next
    turn stating the fact just read, then the answer. Observations are the articles as the search tool renders
    them (``title: text``)."""
    path, facts = example.metadata.get("path"), example.metadata.get("facts")
    if not isinstance(path, list) or not isinstance(facts, list) or len(path) != len(facts) or not path:
        raise ValueError(f"example {example.id}: expected metadata 'path' and 'facts' of equal length (a generated world)")
    steps, said = [], ""
    for title in path:
        if title not in articles:
            raise ValueError(f"example {example.id}: gold article {title!r} is not in {example.metadata['corpus']}")
        action = Action(kind="tool", tool=tool_name, tag=tool_tag, query=title)
        text = f"{said} <{tool_tag}>{title}</{tool_tag}>".lstrip()
        steps.append(Step(text=text, action=action, observation=f"{title} -> {title}: {articles[title]}"))
        said = facts[len(steps) - 1]
    steps.append(Step(text=f"{said} <answer>{example.answer}</answer>",
                      action=Action(kind="answer", tag="answer", answer=example.answer)))
    return Trajectory(example_id=example.id, sample_index=0, prompt=[dict(m) for m in prompt], steps=steps,
                      final_answer=example.answer, outcome=1.0, gold_answer=example.answer,
                      metadata={"source": "worlds-reference", "hops": len(path)})


# ----------------------------------------------------------------------------------------------------
# Writing world folders


def write_worlds(folder: str | os.PathLike[str], split: str, count: int, settings: WorldSettings = WorldSettings(),
                 first: int = 0) -> dict[str, Any]:
    """Generate worlds ``first`` to ``first + count`` of ``split`` into ``folder`` (``questions.jsonl``,
    ``corpus.jsonl``, ``world.json``); each file is written whole, then renamed into place. Returns the record of
    ``world.json``."""
    from swirl_lightning.core.trajectory import write_jsonl, write_text_atomic

    folder = Path(os.fspath(folder))
    folder.mkdir(parents=True, exist_ok=True)
    seeds = world_seeds(split, count, first)
    questions, documents = [], []
    for seed in seeds:
        world = generate_world(seed, settings)
        questions += [q.record() for q in world.questions]
        documents += world.documents()
    record = {"generator": GENERATOR_VERSION, "split": split, "seeds": [seeds.start, seeds.stop],
              "settings": settings_record(settings), "worlds": count, "questions": len(questions),
              "articles": len(documents)}
    write_jsonl(folder / CORPUS_FILE, documents)
    write_jsonl(folder / QUESTIONS_FILE, questions)
    write_text_atomic(folder / SETTINGS_FILE, json.dumps(record, indent=1) + "\n")
    return record


def default_folder(split: str) -> Path:
    """The default worlds of ``split`` (:data:`DEFAULT_WORLDS`, default settings), generated into the cache once."""
    from swirl_lightning.core.models import cache_dir

    if split not in DEFAULT_WORLDS:
        raise ValueError(f"split for task 'worlds': expected one of {', '.join(DEFAULT_WORLDS)}, got {split!r}")
    folder = cache_dir() / "worlds" / GENERATOR_VERSION / split
    if not (folder / SETTINGS_FILE).is_file():  # written last: a folder without it is unfinished
        write_worlds(folder, split, DEFAULT_WORLDS[split])
    return folder


def world_seed_of(example_id: str) -> int | None:
    """The world seed in a generated question's id (``w1000003-q7`` -> 1000003); ``None`` for other ids."""
    head = example_id.split("-q")[0]
    return int(head[1:]) if head.startswith("w") and head[1:].isdigit() else None


def held_out_seeds_in(example_ids: Sequence[str], split: str = "train") -> list[str]:
    """The ids among ``example_ids`` whose world is not in ``split``'s seed range (a leak when ``split`` is train)."""
    from swirl_lightning.core.tasks.worlds.generator import split_of_seed

    return [i for i in example_ids if (seed := world_seed_of(i)) is not None and split_of_seed(seed) != split]
