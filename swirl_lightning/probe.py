"""The first thing an RL trainer must show: the judged reward of *fresh* samples at a fixed set of training
states rises as training goes on.

:class:`RewardProbe` is a Lightning callback. Before the first update, every ``every_n_steps`` optimizer steps
and after the last one, it samples ``samples`` new actions at each of ``states`` training states (drawn once, with
``seed``) with the current policy, scores them with the module's reward judge and logs ``probe/reward_mean`` (and
``probe/good_rate``, the share scored 1). Every probe uses the same sampling seeds, so two probes differ only
because the policy did (common random numbers: the difference has less noise than two independent draws).
The history is written to ``<log_dir>/probe.json``.

``train/reward_mean`` cannot show this: each batch holds other states, so it moves with the batch.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L


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
        rewards = module.probe_rewards(self._pool, self.samples, self.seed)
        point = {"step": step, "reward_mean": float(rewards.mean()), "good_rate": float((rewards >= 1).float().mean()),
                 "states": len(self._pool), "samples": self.samples, "seconds": time.perf_counter() - started}
        self.history.append(point)
        if trainer.is_global_zero:
            print(f"probe at step {step}: reward {point['reward_mean']:.3f} of {self.samples} fresh samples at "
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
