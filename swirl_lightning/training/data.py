"""Training data: trajectories -> token rows (``sft``/``offline``) or states (``swirl``), batched by length,
and held-out questions for live validation.

What a batch holds is the objective's choice (:attr:`~.objectives.base.Objective.trains_on`).

Rows (``sft``/``offline``): a trajectory ``[prompt, a_1, o_1, ..., a_K]`` is ONE row of token ids;
``segment_ids`` marks action k's tokens with k (prompt, tool results and padding get 0), so one forward
pass scores all K actions. Stored token ids are used as they are (token-in/token-out); trajectories
without them (GSM8K reference trajectories, other models' runs) are rendered with the chat template in
the same layout (:class:`~swirl_lightning.rollout.conversation.ChatRenderer`).

States (``swirl``): every distinct state (everything before action k), deduplicated: the K samples of one
question share their first state.

Split: by example id, never by step. Validation questions are either held out from the training
questions (``validation.questions`` of them, drawn with ``train.order_seed``) or taken from another split;
either way, no training row belongs to a validation question.

Rows, states and their batching live in :mod:`.sequences`.

Order and resume: rows are grouped by length into fixed batches once, so padding stays small. Each epoch
visits the batches in an order drawn from ``order_seed + epoch`` (the same on every run), each process taking
its share. The data module counts the batches the training loop has taken in the current epoch; the train
loader reports that count as its state, which Lightning keeps in every checkpoint (:class:`ResumableLoader`),
and a resumed run skips that many batches, so ``--ckpt_path last`` goes on with the next unseen batch.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, cast

import lightning.pytorch as L
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from swirl_lightning.core.config import JudgeConfig, TaskConfig, ToolsConfig
from swirl_lightning.core.tasks import load_task
from swirl_lightning.core.trajectory import Example, State, Trajectory, read_trajectories
from swirl_lightning.training.config import TrainDataConfig, ValidationDataConfig
from swirl_lightning.training.sequences import (
    LengthReport,
    TrainingBatch,
    TrajectoryRow,
    build_rows,
    build_states,
    collate_rows,
    group_by_length,
)


class _Batches(Dataset):
    """Item i is batch i, collated."""

    def __init__(self, items: Sequence[Any], batches: list[list[int]], collate):
        self.items, self.batches, self.collate = items, batches, collate

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        return self.collate([self.items[i] for i in self.batches[index]])


class _CollateRows:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: Sequence[TrajectoryRow]) -> TrainingBatch:
        return collate_rows(rows, self.pad_id)


def _as_list(items: Sequence[Any]) -> list[Any]:
    return list(items)


def _unchanged(batch: Any) -> Any:
    return batch


class BatchOrderSampler(DistributedSampler):
    """Indices of precomputed batches: a seeded order per epoch (``seed + epoch``), this process's share.

    Subclassing :class:`DistributedSampler` tells Lightning the sharding is done (it would otherwise wrap
    the sampler again). :meth:`resume` makes the first pass over ``epoch`` skip the batches already taken.
    The order is drawn when the first batch is asked for, after the loop has called :meth:`set_epoch`.
    """

    def __init__(self, num_batches: int, *, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(range(num_batches), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self._resume: tuple[int, int] | None = None

    def resume(self, epoch: int, consumed: int) -> None:
        """Skip the first ``consumed`` batches of ``epoch`` (once)."""
        self._resume = (epoch, consumed)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip = self._resume[1]
        self._resume = None
        yield from indices[skip:]


class DataPosition:
    """How far training got: the epoch and how many of its batches the loop has taken."""

    def __init__(self) -> None:
        self.epoch, self.consumed = 0, 0

    def advance(self, epoch: int) -> None:
        """Count one more batch taken in ``epoch``."""
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0
        self.consumed += 1

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.epoch, self.consumed = int(state_dict["epoch"]), int(state_dict["consumed"])


class ResumableLoader(DataLoader):
    """A DataLoader whose state is the :class:`DataPosition`, so that Lightning saves it in every checkpoint
    and hands it back on resume (before the first batch is drawn); the sampler then skips what was consumed.

    The data module advances the position as the loop takes each batch: a count of the batches drawn
    here would overshoot whenever batches are fetched ahead (worker processes).
    """

    def __init__(self, *args: Any, position: DataPosition, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.position = position

    def state_dict(self) -> dict[str, int]:
        return self.position.state_dict()

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.position.load_state_dict(state_dict)
        self.sampler.resume(self.position.epoch, self.position.consumed)


# ----------------------------------------------------------------------------------------------------
# The data module


class SwirlDataModule(L.LightningDataModule):
    """Trajectories -> training batches for the objective (``sft``, ``offline``, ``swirl`` or a plugin's); held-out
    questions for live validation (the batches of the validation, test and predict loaders are lists
    of :class:`~swirl_lightning.core.trajectory.Example`)."""

    # Config instances as defaults (never mutated): LightningCLI shows their fields as the options' defaults.
    def __init__(
        self,
        task: TaskConfig = TaskConfig(),
        tools: ToolsConfig = ToolsConfig(),
        judge: JudgeConfig = JudgeConfig(),
        train: TrainDataConfig = TrainDataConfig(),
        validation: ValidationDataConfig = ValidationDataConfig(),
        objective: str = "sft",
        tokenizer: str = "smollm2-135m-instruct",
        validation_batch_size: int = 8,
        num_workers: int = 0,
    ):
        """
        Args:
            task: The questions (the CLI links it to the shared ``task`` group).
            tools: The tools, whose tags reference trajectories use (linked to ``tools``).
            judge: The step judge whose stored verdicts the process filters read (linked to ``judge``).
            train: Which trajectories train, and how they are batched.
            validation: The questions of live validation, test and predict.
            objective: The training objective (linked to ``model.objective``).
            tokenizer: Tokenizer of the policy (linked to ``policy.name``).
            validation_batch_size: Questions per validation batch (linked to ``model.evaluation.sampling.batch_size``).
            num_workers: DataLoader worker processes.
        """
        super().__init__()
        from swirl_lightning.training.objectives import objective_class

        self.objective = objective_class(objective)  # what its batches hold and weigh: the class says
        if (train.path is None) == (not train.reference):
            raise ValueError("data.train: give exactly one of path (a trajectory JSONL) and reference: true")
        self.task, self.tools, self.judge = task, tools, judge
        self.train_config, self.validation_config = train, validation
        self.tokenizer_name, self.validation_batch_size, self.num_workers = tokenizer, validation_batch_size, num_workers
        self.tokenizer = None
        self.examples: dict[str, Example] = {}
        self.train_items: list[TrajectoryRow] | list[State] = []
        self.train_trajectories: list[Trajectory] = []
        self.val_examples: list[Example] = []
        self.report = LengthReport()
        self._batches: list[list[int]] = []
        self.position = DataPosition()

    # -- building -------------------------------------------------------------------------------

    def _judge_id(self) -> str:
        from swirl_lightning.judging.base import step_judge_id

        return step_judge_id(self.judge.name, self.judge.options)  # from its options: no client, no model

    def _questions(self, split: str | None = None, limit: int | None = None, offset: int = 0) -> list[Example]:
        return load_task(self.task.name, split or self.task.split, limit, offset=offset, path=self.task.data_path)

    def _load_pool(self) -> list[Trajectory]:
        """The training trajectories before the validation split: the task's reference trajectories of its first
        ``task.limit`` questions, or a file's trajectories of those questions, filtered."""
        config, task = self.train_config, self.task
        chosen = self._questions(limit=task.limit, offset=task.offset)
        if config.reference:
            from swirl_lightning.core.tasks import get_task
            from swirl_lightning.rollout.conversation import RolloutSettings

            settings = RolloutSettings.for_task(task, self.tools)
            tags = {tool.name: tool.tag for tool in settings.tools.values()}
            spec = get_task(task.name)
            pool = [spec.reference_trajectory(example, settings.prompt(example.question), tags) for example in chosen]
            if any(t is None for t in pool):
                raise ValueError(f"data.train.reference: task {task.name!r} has no reference trajectories")
            return cast("list[Trajectory]", pool)
        assert config.path is not None  # __init__ checked: a path or reference
        trajectories = read_trajectories(config.path)
        if task.limit is not None or task.offset:
            keep = {e.id for e in chosen}
            trajectories = [t for t in trajectories if t.example_id in keep]
        if config.filter != "none":
            from swirl_lightning.judging.filter import filter_trajectories

            trajectories, _ = filter_trajectories(trajectories, config.filter, self._judge_id())
        return trajectories

    def _split(self, pool: list[Trajectory]) -> tuple[list[Trajectory], list[Example]]:
        """Training trajectories and validation questions, disjoint by example id."""
        ids = list(dict.fromkeys(t.example_id for t in pool))
        config = self.validation_config
        if config.split is not None:
            val_examples = self._questions(config.split, config.questions)
            held_out = {e.id for e in val_examples}
        else:
            if config.questions >= len(ids):
                raise ValueError(f"data.validation.questions={config.questions} holds out every one of the "
                                 f"{len(ids)} training questions; lower it or give validation.split")
            order = sorted(ids)
            random.Random(self.train_config.order_seed).shuffle(order)
            held_out = set(order[: config.questions])
            missing = sorted(held_out - set(self.examples))
            if missing:
                raise ValueError(f"validation questions {missing[:3]} are not in task {self.task.name!r} split "
                                 f"{self.task.split!r}; set data.task to the task the trajectories answer")
            val_examples = [self.examples[i] for i in ids if i in held_out]
        return [t for t in pool if t.example_id not in held_out], val_examples

    def setup(self, stage: str | None = None) -> None:
        if self.train_items:
            return
        from swirl_lightning.core.models import load_tokenizer
        from swirl_lightning.rollout.conversation import ChatRenderer

        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.tokenizer_name)
        renderer = ChatRenderer(self.tokenizer)
        config = self.train_config
        self.examples = {e.id: e for e in self._questions()}
        # Rollouts on questions of their own split need no training data, which may not exist yet (validating the
        # warm start before anything is filtered). Validation without a split holds out questions of the pool, below.
        if stage in ("test", "predict"):
            return
        if stage == "validate" and self.validation_config.split is not None:
            self.val_examples = self._questions(self.validation_config.split, self.validation_config.questions)
            return
        pool = self._load_pool()
        if not pool:
            raise ValueError(f"no training trajectories (path {config.path!r}, filter {config.filter!r})")
        trajectories, self.val_examples = self._split(pool)
        self.train_trajectories = trajectories
        if self.objective.trains_on == "states":
            self.train_items, self.report = build_states(trajectories, self.examples, self.tokenizer, renderer,
                                                         max_length=config.max_length, retokenize=config.retokenize)
            lengths = [len(cast("list[int]", s.token_ids)) for s in self.train_items]  # build_states sets them
        else:
            from swirl_lightning.judging.filter import good_steps_only

            # A step-filtered trajectory ends with its first BAD step: a state for swirl, never a target here.
            trajectories = [t for t in map(good_steps_only, trajectories) if t.steps]
            reward = self._judge_id() if config.reward == "judge" else config.reward
            weights = self.objective.weights(trajectories, reward, config.weighting)
            self.train_items, self.report = build_rows(trajectories, weights,
                                                       self.tokenizer, renderer, max_length=config.max_length,
                                                       overlength=config.overlength, retokenize=config.retokenize)
            lengths = [len(r.input_ids) for r in self.train_items]
        if not self.train_items:
            raise ValueError(f"no training rows left out of {len(trajectories)} trajectories "
                             f"(max_length {config.max_length}: {self.report})")
        self._batches = group_by_length(lengths, config.batch_size, config.order_seed)
        self._announce(trajectories, lengths)

    def training_states(self) -> list[State]:
        """The distinct states of the training trajectories (what ``swirl`` samples from), whatever the objective."""
        if self.objective.trains_on == "states":
            return list(cast("list[State]", self.train_items))
        from swirl_lightning.rollout.conversation import ChatRenderer

        states, _ = build_states(self.train_trajectories, self.examples, self.tokenizer, ChatRenderer(self.tokenizer),
                                 max_length=self.train_config.max_length, retokenize=self.train_config.retokenize)
        return states

    def _announce(self, trajectories: Sequence[Trajectory], lengths: Sequence[int]) -> None:
        report, config = self.report, self.train_config
        if report.dropped or report.truncated or report.empty:
            what = "states" if self.objective.trains_on == "states" else "trajectories"
            warnings.warn(f"data: {report.dropped} of {report.total} {what} over max_length={config.max_length} "
                          f"tokens dropped, {report.truncated} truncated, {report.empty} without action tokens skipped",
                          stacklevel=2)
        kind = self.objective.trains_on
        padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in self._batches)
        rank_zero_info(
            f"data: {len(trajectories)} trajectories of {len({t.example_id for t in trajectories})} questions -> "
            f"{len(self.train_items)} {kind} in {len(self._batches)} batches (padding {1 - sum(lengths) / padded:.1%}); "
            f"{len(self.val_examples)} validation questions held out"
        )

    # -- loaders --------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        sharding = (self.trainer.distributed_sampler_kwargs if self.trainer is not None else None) or {}
        sampler = BatchOrderSampler(len(self._batches), shuffle=self.train_config.shuffle, seed=self.train_config.order_seed,
                                    num_replicas=sharding.get("num_replicas", 1), rank=sharding.get("rank", 0))
        collate = _as_list if self.objective.trains_on == "states" else _CollateRows(self.pad_id)
        return ResumableLoader(_Batches(self.train_items, self._batches, collate), batch_size=None, sampler=sampler,
                               collate_fn=_unchanged, num_workers=self.num_workers, position=self.position)

    def _loader(self, examples: list[Example]) -> DataLoader:
        return DataLoader(examples, batch_size=self.validation_batch_size, shuffle=False, collate_fn=_as_list)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_examples)

    def test_dataloader(self) -> DataLoader:
        config = self.validation_config
        return self._loader(self._questions(config.test_split, config.test_limit))

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    @property
    def pad_id(self) -> int:
        if self.tokenizer is None:
            raise RuntimeError("call setup() first")
        return self.tokenizer.pad_token_id

    # -- data position, for resuming mid-epoch ----------------------------------------------------

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Called as the loop takes each batch, so the count never includes a batch fetched ahead.
        if self.trainer is not None and self.trainer.training:
            self.position.advance(self.trainer.current_epoch)
        return batch
