"""Callbacks of training: live evaluation's figures and files, and the reward probe.

:class:`LiveEvaluation` (the module adds it itself) collects the rollouts of validation, test and predict, and at
the end of each logs ``<stage>/accuracy``, ``steps_mean``, ``tool_error_rate``, ``invalid_action_rate``,
``step_good_rate`` and ``answered_rate``, prints them, writes the rollouts to
``<log_dir>/rollouts/<stage>-step<N>.jsonl`` and shows a few as text in TensorBoard (predict writes its
trajectories to one file instead).

:class:`RewardProbe` shows the first thing an RL trainer must show: the judged reward of *fresh* samples at a
fixed set of training states rises as training goes on. Before the first update, every ``every_n_steps`` optimizer steps
and after the last one, it samples ``samples`` new actions at each of ``states`` training states (drawn once, with
``seed``) with the current policy, scores them with the module's reward judge and logs ``probe/reward_mean`` (and
``probe/good_rate``, the share scored 1). Every probe uses the same sampling seeds, so two probes differ only
because the policy did (common random numbers: the difference has less noise than two independent draws).
The history (with each state's mean reward, for paired comparisons) is written to ``<log_dir>/probe.json``.

``train/reward_mean`` cannot show this: each batch holds other states, so it moves with the batch.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch

from swirl_lightning.core.trajectory import Trajectory
from swirl_lightning.training.objectives import SwirlObjective


class LiveEvaluation(L.Callback):
    """Summarises, logs and saves the live rollouts of validation, test and predict (see the module docstring)."""

    def __init__(self) -> None:
        self.trajectories: list[Trajectory] = []

    def _start(self, *_: Any) -> None:
        self.trajectories = []

    on_validation_epoch_start = on_test_epoch_start = on_predict_epoch_start = _start

    def _collect(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *_: Any) -> None:
        self.trajectories.extend(outputs or [])

    on_validation_batch_end = on_test_batch_end = on_predict_batch_end = _collect

    def gathered(self, trainer: L.Trainer) -> list[Trajectory]:
        """This epoch's trajectories of every process, once each (distributed samplers repeat questions)."""
        trajectories = self.trajectories
        if torch.distributed.is_available() and torch.distributed.is_initialized() and trainer.world_size > 1:
            parts: list[list[Trajectory] | None] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, trajectories)
            trajectories = [t for part in parts for t in part]
        unique = {t.key: t for t in trajectories}
        return [unique[key] for key in sorted(unique)]

    def finish(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> dict[str, Any]:
        """Summarise, log, print and save one evaluation; returns the summary."""
        from swirl_lightning.core.trajectory import write_jsonl
        from swirl_lightning.rollout.evaluation import summarize, trajectory_markdown

        trajectories = self.gathered(trainer)
        judge_id = module.step_judge().judge_id if module.evaluation.judge_steps else None
        summary = summarize(trajectories, judge_id)
        metrics = {f"{stage}/accuracy": summary["accuracy"] or 0.0}
        for name in ("steps_mean", "tool_error_rate", "invalid_action_rate", "step_good_rate", "answered_rate"):
            if summary[name] is not None:
                metrics[f"{stage}/{name}"] = float(summary[name])
        if not trainer.sanity_checking:
            # Every rank holds the same gathered figures; syncing averages equal values and keeps Lightning quiet.
            module.log_dict(metrics, batch_size=max(len(trajectories), 1), sync_dist=True)
            log_dir = trainer.log_dir  # a collective call: every rank asks, once
            if trainer.is_global_zero:
                figures = ", ".join(f"{name.split('/')[1]} {value:.3f}" for name, value in metrics.items())
                print(f"{stage} at step {trainer.global_step} ({len(trajectories)} rollouts): {figures}", flush=True)
                if log_dir:
                    # The rollouts themselves, for reading or re-scoring later (TensorBoard shows a few).
                    rollouts = Path(log_dir) / "rollouts"
                    rollouts.mkdir(parents=True, exist_ok=True)
                    write_jsonl(rollouts / f"{stage}-step{trainer.global_step:06d}.jsonl", trajectories)
                writer = module.tensorboard()
                if writer is not None and module.evaluation.log_trajectories > 0:
                    shown = trajectories[: module.evaluation.log_trajectories]
                    writer.add_text(f"{stage}/trajectories", "\n\n---\n\n".join(map(trajectory_markdown, shown)),
                                    trainer.global_step)
        self.trajectories = []
        return summary

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.finish(trainer, module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.finish(trainer, module, "test")

    def on_predict_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        from swirl_lightning.core.trajectory import write_jsonl

        trajectories = self.gathered(trainer)
        log_dir = trainer.log_dir  # a collective call: every rank asks, once
        if trainer.is_global_zero:
            path = Path(module.evaluation.predictions or Path(log_dir or ".") / "predictions.jsonl")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(path, trajectories)
            print(f"wrote {len(trajectories)} trajectories to {path}", flush=True)
        self.trajectories = []


class RewardProbe(L.Callback):
    """Judged reward of fresh samples at a fixed pool of training states, before, during and after training."""

    def __init__(self, states: int = 32, samples: int = 8, every_n_steps: int = 10, seed: int = 1234) -> None:
        """
        Args:
            states: Training states in the pool (drawn once with ``seed``; all of them when fewer).
            samples: Fresh actions sampled at each state per probe.
            every_n_steps: Probe every this many optimizer steps (and before the first and after the last).
            seed: Seed of the pool draw and of the sampling (the same at every probe).
        """
        if states < 1 or samples < 1 or every_n_steps < 1:
            raise ValueError("RewardProbe: states, samples and every_n_steps must be at least 1")
        self.states, self.samples, self.every_n_steps, self.seed = states, samples, every_n_steps, seed
        self.history: list[dict[str, Any]] = []
        self._pool: list[Any] | None = None

    def _probe(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        step = trainer.global_step
        if any(point["step"] == step for point in self.history):
            return
        if self._pool is None:
            pool = trainer.datamodule.training_states()
            order = list(range(len(pool)))
            random.Random(self.seed).shuffle(order)
            self._pool = [pool[i] for i in sorted(order[: self.states])]
        started = time.perf_counter()
        rewards = SwirlObjective().probe_rewards(module, self._pool, self.samples, self.seed)
        judged = ~rewards.isnan()  # a judge failure is no reward: left out of the means
        point = {"step": step, "reward_mean": float(rewards[judged].mean()),
                 "good_rate": float((rewards[judged] >= 1).float().mean()), "judge_failures": int((~judged).sum()),
                 "states": len(self._pool), "samples": self.samples, "seconds": time.perf_counter() - started,
                 "state_rewards": [round(float(r), 6) if ok.any() else None
                                   for r, ok in zip(rewards.nanmean(dim=1), judged)]}
        self.history.append(point)
        if trainer.is_global_zero:
            reward = "no verdict" if not judged.any() else f"{point['reward_mean']:.3f}"
            print(f"probe at step {step}: reward {reward} of {self.samples} fresh samples at "
                  f"{len(self._pool)} training states ({point['seconds']:.0f} s)", flush=True)
        for logger in trainer.loggers:
            logger.log_metrics({"probe/reward_mean": point["reward_mean"], "probe/good_rate": point["good_rate"]}, step)
        log_dir = trainer.log_dir
        if trainer.is_global_zero and log_dir:
            path = Path(log_dir) / "probe.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.history, indent=1) + "\n")

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._probe(trainer, module)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._probe(trainer, module)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._probe(trainer, module)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
