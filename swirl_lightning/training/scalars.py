"""The training scalars of one batch, written once, at the optimizer step they describe.

Every training figure of a batch (loss, rewards, GOOD rate, gradient norm, throughput, learning rate) is written to
the loggers at the optimizer step the batch started from: the step of the policy that produced the batch's samples,
the same axis as live evaluation (``val/*`` at step N describes the policy after N optimizer steps) and the reward
probe. Lightning's ``self.log`` is not used for the loggers here, for two reasons:

- it writes training figures at its count of *batches*, which is not the optimizer step when one batch makes
  several updates (``swirl.ppo_epochs > 1``);
- a name logged at one step and not at the next keeps its last value in Lightning's per-epoch results and is written
  again at every later step: ``train/reward_by_step/k``, present only in batches that hold states at step index k,
  carried stale values forward.

The dense figures still go through ``self.log(..., logger=False)`` so that the progress bar and callbacks (early
stopping, checkpoint monitors) see them; figures present only in some batches (reward by step index) go to the
loggers only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor


class BatchScalars:
    """Collects one batch's scalars (:meth:`add`) and writes them at the batch's starting step (:meth:`write`).

    With gradient accumulation, the batches of one optimizer step are one window: each figure is written once, as
    its mean over the window's batches."""

    def __init__(self) -> None:
        self.step = -1
        self.open = False
        self.values: dict[str, list[float]] = defaultdict(list)
        self.histograms: dict[str, list[Tensor]] = defaultdict(list)

    def start(self, step: int) -> None:
        """A batch starts at optimizer step ``step``: a new window unless it continues the open one."""
        if not self.open or step != self.step:
            self.step, self.open = step, True
            self.values, self.histograms = defaultdict(list), defaultdict(list)

    def add(self, values: dict[str, float | Tensor]) -> None:
        """Figures of this batch (a figure measured several times, once per update for instance, is averaged)."""
        for name, value in values.items():
            self.values[name].append(_number(value))

    def add_histogram(self, name: str, values: Tensor) -> None:
        self.histograms[name].append(values.detach().float().cpu().flatten())

    def metrics(self) -> dict[str, float]:
        """Everything to write: each figure's mean over the window."""
        return {name: sum(values) / len(values) for name, values in self.values.items() if values}

    def write(self, loggers: list[Any], every_n_steps: int, stepped: bool) -> None:
        """Once the window made its optimizer step (``stepped``), write to every logger at :attr:`step` (when it is
        a multiple of ``every_n_steps``); TensorBoard loggers also get the histograms."""
        if not stepped:
            return  # the window goes on: its figures are written with its last batch
        self.open = False
        if every_n_steps <= 0 or self.step % every_n_steps:
            return
        from lightning.pytorch.loggers import TensorBoardLogger

        metrics = self.metrics()
        for logger in loggers:
            if metrics:
                logger.log_metrics(metrics, step=self.step)
            if isinstance(logger, TensorBoardLogger):
                for name, parts in self.histograms.items():
                    values = torch.cat(parts)
                    if values.numel():
                        logger.experiment.add_histogram(name, values, self.step)


def _number(value: float | Tensor) -> float:
    return float(value.detach()) if isinstance(value, Tensor) else float(value)


def reward_figures(rewards: Tensor, step_index: Tensor, good: Tensor | None = None) -> dict[str, float]:
    """Mean and spread of the rewards, the mean at each step index present (``train/reward_by_step/k``: only the
    indices this batch holds), and with ``good`` (the judge's verdicts) the GOOD rate."""
    rewards, step_index = rewards.detach().float().cpu().flatten(), step_index.detach().cpu().flatten()
    figures = {"train/reward_mean": rewards.mean(), "train/reward_std": rewards.std(correction=0)}
    for k in sorted(set(step_index.tolist())):
        figures[f"train/reward_by_step/{k}"] = rewards[step_index == k].mean()
    if good is not None:
        figures["train/good_rate"] = good.detach().float().mean()
    return {name: float(value) for name, value in figures.items()}


def gradient_norm(parameters) -> Tensor | None:
    """The total 2-norm of the gradients (before clipping), ``None`` when no parameter has one."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    norm = torch.nn.utils.get_total_norm(grads)
    full_tensor = getattr(norm, "full_tensor", None)  # a DTensor under FSDP2: the norm over every shard
    return full_tensor() if full_tensor is not None else norm
