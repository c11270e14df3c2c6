"""Mutated trajectory files (hypothesis) fed to `swirl data stats`, `swirl filter` and training: each ends with a clean
error (exit code 2, one line; a format error names file:line) or with finite losses. Never a traceback, never NaN."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swirl_lightning.cli import main as swirl
from swirl_lightning.core.config import PolicyConfig, TaskConfig
from swirl_lightning.core.tasks import load_task
from swirl_lightning.core.tasks.gsm8k import gsm8k_reference_trajectory
from swirl_lightning.core.trajectory import FormatError, Judgement, to_dict
from swirl_lightning.testing import json_paths
from swirl_lightning.training.config import ExportConfig, LoraConfig, TrainDataConfig, ValidationDataConfig

# Training steps run without a Trainer here; their self.log calls are then no-ops.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")]

# Values that broke runs before: non-finite and huge numbers, wrong types, missing parts.
HOSTILE = [float("nan"), float("inf"), -float("inf"), 1e308, -1e308, -1, 0, 10**30, "", "x", None, True, [], {},
           [[]], [-5], [10**9], "NaN", {"role": 1}]


def base_records() -> list[dict]:
    records = []
    for example in load_task("gsm8k", "train", 3):
        trajectory = gsm8k_reference_trajectory(example, tool_tag="math_exp")
        for step in trajectory.steps:
            step.judgements = [Judgement("reference", "GOOD", 1.0)]
        records.append(to_dict(trajectory))
    return records


@st.composite
def mutated_file(draw) -> str:
    """The text of a JSONL file: valid records with one or two mutations (a value replaced, a key removed, a line
    cut short or given junk)."""
    records = base_records()
    kinds = draw(st.lists(st.sampled_from(["replace", "remove", "truncate", "junk"]), min_size=1, max_size=2))
    for kind in (k for k in kinds if k in ("replace", "remove")):  # on the records first, then on the text
        record = records[draw(st.integers(0, len(records) - 1))]
        path = draw(st.sampled_from([p for p, _ in json_paths(record) if p]))
        parent = record
        for key in path[:-1]:
            parent = parent[key]
        if kind == "remove" and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(st.sampled_from(HOSTILE))
    lines = [json.dumps(r) for r in records]  # writes NaN and Infinity as Python's json does
    for kind in (k for k in kinds if k in ("truncate", "junk")):
        row = draw(st.integers(0, len(lines) - 1))
        if kind == "truncate":
            # max(): a line the first of two truncations already emptied
            lines[row] = lines[row][: draw(st.integers(0, max(len(lines[row]) - 1, 0)))]
        else:
            lines[row] = lines[row] + draw(st.sampled_from(["x", ",", "}", " NaN", "\x00"]))
    return "\n".join(lines) + "\n"


def run_swirl(capsys, argv: list[str]) -> tuple[int, list[str]]:
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for handler in {h for lg in loggers for h in lg.handlers}:
        if type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr  # Lightning's handlers keep the stream of an earlier test
    code = swirl(argv)
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def assert_clean(code: int, lines: list[str], path: Path) -> None:
    assert code in (0, 2), lines
    if code == 2:
        assert len(lines) == 1 and "Traceback" not in lines[0], lines
        if "not valid JSON" in lines[0] or "expected" in lines[0] and str(path) in lines[0]:
            assert f"{path}:" in lines[0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated_file())
def test_stats_and_filter_end_cleanly_on_any_mutation(tmp_path_factory, capsys, text):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "t.jsonl"
    path.write_text(text)
    code, lines = run_swirl(capsys, ["data", "stats", str(path)])
    assert_clean(code, lines, path)
    for mode in ("none", "process+outcome"):
        code, lines = run_swirl(capsys, ["filter", "--input", str(path), "--output", str(folder / f"{mode}.jsonl"),
                                         "--task.name", "gsm8k", "--mode", mode, "--progress", "false",
                                         "--cache", "false"])
        assert_clean(code, lines, path)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated_file())
def test_training_on_any_mutation_errors_cleanly_or_has_finite_losses_and_weights(tmp_path_factory, text):
    from swirl_lightning.training.data import SwirlDataModule
    from swirl_lightning.training.module import SwirlModule

    path = tmp_path_factory.mktemp("fuzz") / "t.jsonl"
    path.write_text(text)
    for objective, reward in (("offline", "judge"), ("offline", "outcome"), ("sft", "outcome")):
        try:
            data = SwirlDataModule(task=TaskConfig("gsm8k"), objective=objective, tokenizer="tiny-random",
                                   train=TrainDataConfig(path=str(path), reward=reward, batch_size=3),
                                   validation=ValidationDataConfig(questions=1, split="validation"))
            data.setup("fit")
            torch.manual_seed(0)
            module = SwirlModule(policy=PolicyConfig("tiny-random"), objective=objective, lora=LoraConfig(r=2),
                                 export=ExportConfig(enabled=False))
            module.configure_model()
            batch = next(iter(data.train_dataloader()))
            loss = module.training_step(batch, 0)
        except (FormatError, ValueError) as error:
            message = str(error)
            assert "\n" not in message.strip() and message
            if isinstance(error, FormatError):
                assert f"{path}:" in message
            continue
        assert math.isfinite(float(loss.detach()))
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in module.scorer.parameters() if p.grad is not None)
