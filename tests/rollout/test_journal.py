"""A killed evaluation resumes from its journal: only the questions it lacked are rolled out again, and the result
equals an uninterrupted evaluation's; other weights or settings never reuse it."""

import dataclasses

import lightning.pytorch as L
import pytest

from swirl_lightning.core.config import PolicyConfig, TaskConfig, greedy
from swirl_lightning.core.trajectory import read_trajectories, to_dict
from swirl_lightning.training.callbacks import JOURNAL_DIR
from swirl_lightning.training.config import EvaluationConfig, LoraConfig, TrainDataConfig, ValidationDataConfig
from swirl_lightning.training.data import SwirlDataModule
from swirl_lightning.training.module import SwirlModule

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

TASK = TaskConfig(name="gsm8k", max_actions=2, few_shot=False, limit=6)
EVALUATION = EvaluationConfig(sampling=greedy(max_new_tokens=6, batch_size=2), log_trajectories=0)


class Killed(Exception):
    """Stands for the process dying mid-evaluation."""


def validate(root, evaluation=EVALUATION, kill_after=None, seed=0):
    """Validate on 4 held-out questions, one per batch; with ``kill_after``, die in the rollout after that many
    batches. Returns the questions each live rollout call got and the rollouts file (None when killed)."""
    L.seed_everything(seed, verbose=False)  # the LoRA initialisation: the trainable weights
    data = SwirlDataModule(task=TASK, train=TrainDataConfig(reference=True), validation=ValidationDataConfig(questions=4),
                           validation_batch_size=1, tokenizer="tiny-random")
    module = SwirlModule(policy=PolicyConfig(name="tiny-random"), task=TASK, evaluation=evaluation,
                         lora=LoraConfig(r=4, alpha=8))
    rolled_out, rollout = [], module.rollout

    def counted_rollout(examples):
        if kill_after is not None and len(rolled_out) == kill_after:
            raise Killed
        rolled_out.append([e.id for e in examples])
        return rollout(examples)

    module.rollout = counted_rollout
    trainer = L.Trainer(accelerator="cpu", default_root_dir=root, logger=L.loggers.TensorBoardLogger(root, name="tb"),
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    try:
        trainer.validate(module, data, verbose=False)
    except Killed:
        return rolled_out, None
    (rollouts,) = (root / "tb").glob("version_*/rollouts/val-step000000.jsonl")
    return rolled_out, read_trajectories(rollouts)


def without_wall_time(trajectory):
    record = to_dict(trajectory)
    record["metadata"].pop("seconds")
    return record


def journals(root):
    return sorted((root / JOURNAL_DIR).glob("*.jsonl")) if (root / JOURNAL_DIR).exists() else []


def test_a_killed_validation_resumes_where_it_stopped_and_equals_an_uninterrupted_one(tmp_path, capsys):
    root = tmp_path / "run"
    first, result = validate(root, kill_after=2)
    assert result is None and len(first) == 2
    (journal,) = journals(root)
    assert [t.example_id for t in read_trajectories(journal)] == [q for batch in first for q in batch]

    second, resumed = validate(root)
    assert len(second) == 2
    assert not {q for batch in second for q in batch} & {q for batch in first for q in batch}
    assert "2 questions already rolled out" in capsys.readouterr().out
    assert journals(root) == []  # finished: the rollouts file holds everything

    _, uninterrupted = validate(tmp_path / "uninterrupted")
    assert len(resumed) == 4
    assert [without_wall_time(t) for t in resumed] == [without_wall_time(t) for t in uninterrupted]


@pytest.mark.parametrize("change", ["settings", "weights"])
def test_other_settings_or_weights_never_reuse_a_journal(tmp_path, change):
    root = tmp_path / "run"
    validate(root, kill_after=2)
    if change == "settings":
        other = dataclasses.replace(EVALUATION, sampling=greedy(max_new_tokens=5, batch_size=2))
        rolled_out, result = validate(root, evaluation=other)
    else:  # another LoRA initialisation: other trainable weights, the same settings
        rolled_out, result = validate(root, seed=1)
    assert len(rolled_out) == 4 and len(result) == 4
    assert len(journals(root)) == 1  # the killed evaluation's, untouched


def test_a_question_with_only_some_samples_journaled_is_rolled_out_again_once(tmp_path):
    from swirl_lightning.core.trajectory import Example, JsonlWriter, Trajectory
    from swirl_lightning.rollout.journal import EvaluationJournal

    def traj(question, k, answer):
        return Trajectory(question, k, [{"role": "user", "content": question}], final_answer=answer)

    examples = [Example(q, q, "1", "test") for q in ("a", "b")]
    calls = []

    def rollout(todo):
        calls.append([e.id for e in todo])
        return [traj(e.id, k, "new") for e in todo for k in range(2)]

    path = tmp_path / "journal.jsonl"
    with JsonlWriter(path) as writer:  # "a" whole, "b" cut short by a crash after its first sample
        for record in (traj("a", 0, "old"), traj("a", 1, "old"), traj("b", 0, "old")):
            writer.write(record)
    journal = EvaluationJournal(path, samples_per_question=2)
    assert journal.resumed == 1
    got = journal.roll_out(examples, rollout)
    journal.close(finished=False)
    assert calls == [["b"]] and [(t.example_id, t.sample_index, t.final_answer) for t in got] == [
        ("a", 0, "old"), ("a", 1, "old"), ("b", 0, "new"), ("b", 1, "new")]
    again = EvaluationJournal(path, samples_per_question=2)  # b's old sample 0 and its new one: the new one wins
    assert again.roll_out(examples, rollout) == got and calls == [["b"]]
    again.close(finished=True)
    assert not path.exists()
