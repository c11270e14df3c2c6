"""SwirlDataModule: token layout and loss mask, the split by example id, length grouping, rewards,
states, over-long rows, and the resumable batch order."""

import dataclasses

import pytest
import torch

from swirl_lightning.core.config import TaskConfig
from swirl_lightning.core.models import load_tokenizer
from swirl_lightning.core.tasks import load_task
from swirl_lightning.core.tasks.gsm8k import gsm8k_reference_trajectory as _reference
from swirl_lightning.core.trajectory import Judgement, Trajectory, write_jsonl
from swirl_lightning.rollout.conversation import ChatRenderer
from swirl_lightning.testing import make_tool, rollout_once
from swirl_lightning.training.config import TrainDataConfig, ValidationDataConfig
from swirl_lightning.training.data import BatchOrderSampler, DataPosition, SwirlDataModule
from swirl_lightning.training.sequences import action_weights, group_by_length, trajectory_segments

TASK = TaskConfig(name="gsm8k", max_actions=4, few_shot=False, limit=12)


def gsm8k_reference_trajectory(example):
    return _reference(example, tool_tag="math_exp")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-random")


def data_module(objective="sft", validation=ValidationDataConfig(questions=3), task=TASK, **train) -> SwirlDataModule:
    train = {"reference": True, "batch_size": 4, **train}
    data = SwirlDataModule(task=task, train=TrainDataConfig(**train), validation=validation, objective=objective,
                           tokenizer="tiny-random")
    data.setup("fit")
    return data


def calculator_trajectory() -> Trajectory:
    tools = {"calculator": make_tool(lambda q: str(eval(q)), name="calculator", tag="math_exp")}
    script = ["Cost first. <math_exp>3*4</math_exp>", "Change. <math_exp>20-12</math_exp>", "<answer>8</answer>"]
    return rollout_once("Pens cost $3; Tom buys 4 and pays $20. Change?", script, tools, gold="8")


def test_loss_mask_covers_the_action_tokens_only(tokenizer):
    trajectory = calculator_trajectory()
    segments = trajectory_segments(trajectory, tokenizer, ChatRenderer(tokenizer))
    assert [is_action for _, is_action in segments] == [False, True, False, True, False, True]
    actions = [tokenizer.decode(ids) for ids, is_action in segments if is_action]
    assert actions == [step.text for step in trajectory.steps]
    context = tokenizer.decode([t for ids, is_action in segments if not is_action for t in ids])
    assert "3*4 -> 12" in context and "20-12 -> 8" in context  # tool results: context, never targets
    assert "Pens cost $3" in context


def test_stored_token_ids_are_used_as_they_are(tokenizer):
    trajectory = calculator_trajectory()
    renderer = ChatRenderer(tokenizer)
    trajectory.prompt_token_ids = [1, 2, 3]
    for k, step in enumerate(trajectory.steps):
        step.token_ids = [10 + k, 20 + k]
        step.observation_token_ids = [30 + k] if k < 2 else None
    segments = trajectory_segments(trajectory, tokenizer, renderer)
    assert segments == [([1, 2, 3], False), ([10, 20], True), ([30], False), ([11, 21], True), ([31], False),
                        ([12, 22], True)]
    assert trajectory_segments(trajectory, tokenizer, renderer, retokenize=True)[1][0] != [10, 20]


def test_token_ids_of_another_vocabulary_are_refused(tmp_path):
    trajectory = calculator_trajectory()
    trajectory.example_id = "gsm8k-train-0"
    trajectory.prompt_token_ids = [1, 2]
    for step in trajectory.steps:
        step.token_ids, step.observation_token_ids = [10**7], [3]
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [trajectory, gsm8k_reference_trajectory(load_task("gsm8k", "train", 2)[1])])
    with pytest.raises(ValueError, match="retokenize"):
        data_module(reference=False, path=str(path), validation=ValidationDataConfig(questions=1, split="validation"))


def test_split_is_by_example_id_and_batches_group_by_length():
    data = data_module()
    val_ids = {e.id for e in data.val_examples}
    assert len(val_ids) == 3
    train_ids = {row.example_id for row in data.train_items}
    assert len(train_ids) == 9 and not train_ids & val_ids
    batches = list(data.train_dataloader())
    assert sum(len(b.example_ids) for b in batches) == 9 and [len(b.example_ids) for b in batches].count(4) == 2
    lengths = sorted(len(row.input_ids) for row in data.train_items)
    for batch in batches:
        row_lengths = batch.attention_mask.sum(1).tolist()
        # Grouped by length: the rows of a batch are neighbours in the sorted order.
        start = lengths.index(min(row_lengths))
        assert sorted(row_lengths) == lengths[start : start + len(row_lengths)]
        assert batch.num_tokens == sum(row_lengths)
        assert torch.equal(batch.weights > 0, batch.step_index >= 0)
    # The same seed holds out the same questions.
    assert {e.id for e in data_module().val_examples} == val_ids


def test_validation_split_removes_its_questions_from_training():
    validation = load_task("gsm8k", "train", 2)  # the first training questions, used here as validation
    data = data_module(validation=ValidationDataConfig(questions=2, split="train"), task=dataclasses.replace(TASK, limit=6))
    assert [e.id for e in data.val_examples] == [e.id for e in validation]
    assert not {row.example_id for row in data.train_items} & {e.id for e in validation}


def test_overlong_trajectories_are_dropped_or_truncated_with_a_warning():
    full = data_module()
    longest = max(len(r.input_ids) for r in full.train_items)
    limit = sorted(len(r.input_ids) for r in full.train_items)[4]
    with pytest.warns(UserWarning, match="dropped"):
        dropped = data_module(max_length=limit)
    assert dropped.report.dropped == sum(len(r.input_ids) > limit for r in full.train_items) > 0
    assert all(len(r.input_ids) <= limit for r in dropped.train_items)
    with pytest.warns(UserWarning, match="truncated"):
        truncated = data_module(max_length=limit, overlength="truncate")
    assert truncated.report.truncated == dropped.report.dropped and len(truncated.train_items) == 9
    assert longest > limit and max(len(r.input_ids) for r in truncated.train_items) == limit
    for row in truncated.train_items:
        assert len(row.weights) == max(row.segment_ids)  # actions cut off entirely lose their weight


def test_offline_weights_from_judges_outcomes_and_baselines():
    a = Trajectory("q1", 0, [], outcome=1.0)
    b = Trajectory("q1", 1, [], outcome=0.0)
    for trajectory, scores in ((a, [1.0, 0.5]), (b, [0.0, 0.5])):
        from swirl_lightning.core.trajectory import Action, Step

        trajectory.steps = [Step(text="x", action=Action(kind="answer", answer="1"),
                                 judgements=[Judgement("j", "GOOD", s)]) for s in scores]
    assert action_weights([a, b], "j", "reward") == [[1.0, 0.5], [0.0, 0.5]]
    assert action_weights([a, b], "outcome", "reward") == [[1.0, 1.0], [0.0, 0.0]]
    assert action_weights([a, b], "j", "advantage") == [[0.5, 0.0], [-0.5, 0.0]]  # mean of q1's steps: 0.5
    with pytest.raises(ValueError, match="no judgement by 'other'.*judged by: j"):
        action_weights([a], "other", "reward")
    a.steps[1].judgements = [Judgement("j", "FAILED", None, error="timed out")]  # a failure has no score to train on
    with pytest.raises(ValueError, match="step 1: the 'j' judgement failed \\(timed out\\)"):
        action_weights([a], "j", "reward")


def test_swirl_states_are_the_distinct_prefixes_before_each_action(tmp_path, tokenizer):
    example = load_task("gsm8k", "train", 1)[0]
    reference = gsm8k_reference_trajectory(example)
    second = gsm8k_reference_trajectory(example)
    second.sample_index = 1
    second.steps = second.steps[:1]  # shares its only state with the first sample
    other = gsm8k_reference_trajectory(load_task("gsm8k", "train", 2)[1])
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [reference, second, other])
    data = data_module("swirl", reference=False, path=str(path),
                       validation=ValidationDataConfig(questions=1, split="validation"))
    states = [s for s in data.train_items if s.example_id == example.id]
    assert len(data.train_items) == len(states) + len(other.steps)
    assert [s.step_index for s in states] == list(range(len(reference.steps)))
    segments = trajectory_segments(reference, tokenizer, ChatRenderer(tokenizer))
    full = [t for ids, _ in segments for t in ids]
    for state in states:
        assert full[: len(state.token_ids)] == state.token_ids
        assert state.messages == reference.messages(upto_step=state.step_index)
        assert state.example.id == example.id


def test_batch_order_is_seeded_per_epoch_sharded_and_resumable():
    def order(epoch, rank=0, replicas=1, skip=None):
        sampler = BatchOrderSampler(10, shuffle=True, seed=3, num_replicas=replicas, rank=rank)
        if skip is not None:
            sampler.resume(*skip)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0) == order(0) and sorted(order(0)) == list(range(10))
    assert order(0) != order(1)
    shards = order(1, 0, 2) + order(1, 1, 2)
    assert sorted(shards) == list(range(10)) and len(order(1, 0, 2)) == 5
    assert order(1, skip=(1, 4)) == order(1)[4:]
    assert order(2, skip=(1, 4)) == order(2)  # a position from another epoch is not applied


def test_loader_state_is_the_data_position():
    data = data_module()
    loader = data.train_dataloader()
    data.position.advance(0)
    data.position.advance(0)
    assert loader.state_dict() == {"epoch": 0, "consumed": 2}
    resumed = data_module()
    loader = resumed.train_dataloader()
    loader.load_state_dict({"epoch": 0, "consumed": 2})
    loader.sampler.set_epoch(0)
    first = next(iter(loader))
    expected = list(data.train_dataloader())[2]
    assert first.example_ids == expected.example_ids
    assert resumed.position.state_dict() == {"epoch": 0, "consumed": 2}
    position = DataPosition()
    position.advance(1)
    assert position.state_dict() == {"epoch": 1, "consumed": 1}


def test_group_by_length_cuts_sorted_runs():
    assert group_by_length([5, 1, 4, 2, 3], 2) == [[1, 3], [4, 2], [0]]
    with pytest.raises(ValueError, match="batch_size"):
        group_by_length([1], 0)


def test_a_path_or_a_reference_must_be_given():
    with pytest.raises(ValueError, match="exactly one of path"):
        SwirlDataModule(task=TASK, train=TrainDataConfig())
    with pytest.raises(ValueError, match="task 'hotpotqa' has no reference trajectories"):
        data_module(task=TaskConfig(name="hotpotqa", limit=2), validation=ValidationDataConfig(questions=1, split="validation"))


def judged(trajectory: Trajectory, verdicts: str) -> Trajectory:
    """``trajectory`` with reference verdicts G/B per step."""
    for step, verdict in zip(trajectory.steps, verdicts):
        step.judgements = [Judgement("reference", "GOOD" if verdict == "G" else "BAD", float(verdict == "G"))]
    return trajectory


def test_the_step_filter_keeps_good_prefixes_as_states_and_good_steps_as_targets(tmp_path):
    examples = load_task("gsm8k", "train", 3)
    trajectories = [judged(gsm8k_reference_trajectory(e), v) for e, v in zip(examples, ["GGGG", "BGGG", "GBGG"])]
    assert all(len(t.steps) >= 3 for t in trajectories)
    path = tmp_path / "t.jsonl"
    write_jsonl(path, trajectories)
    validation = ValidationDataConfig(questions=1, split="validation")
    swirl = data_module("swirl", reference=False, path=str(path), filter="step", validation=validation)
    states = {(s.example_id, s.step_index) for s in swirl.train_items}
    assert states == ({(examples[0].id, k) for k in range(len(trajectories[0].steps))}
                      | {(examples[1].id, 0)} | {(examples[2].id, 0), (examples[2].id, 1)})
    sft = data_module("sft", reference=False, path=str(path), filter="step", validation=validation)
    assert sorted((r.example_id, max(r.segment_ids)) for r in sft.train_items) == sorted(
        [(examples[0].id, len(trajectories[0].steps)), (examples[2].id, 1)])  # the GOOD steps only
    assert {(s.example_id, s.step_index) for s in sft.training_states()} == states
