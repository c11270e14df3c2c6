"""Callbacks of training: live evaluation's figures and files, and the reward probe.

:class:`LiveEvaluation` (the module adds it itself) collects the rollouts of validation, test and predict, and at
the end of each logs ``<stage>/accuracy``, ``steps_mean``, ``tool_error_rate``, ``invalid_action_rate``,
``step_good_rate`` and ``answered_rate``, prints them, writes the rollouts to
``<log_dir>/rollouts/<stage>-step<N>.jsonl`` (what the Trajectories dashboard of the ``swirl-tensorboard`` plugin
reads) and shows them as text in TensorBoard: ``<stage>/rollouts``, a table of every rollout, and
``<stage>/trajectory/<question>/<sample>``, the first ``evaluation.log_trajectories`` step by step (the same
questions at every evaluation, so TensorBoard's text tab shows each one before and after training). Predict writes
its trajectories to one file instead. Without a progress bar (``--trainer.enable_progress_bar false``, e.g. output to a
log file) it prints a line every tenth of an evaluation: batches done, rollouts, correct so far, minutes. Each
evaluation keeps a journal of its finished rollouts in ``<default_root_dir>/evaluation_journal/`` while it runs, so
that a killed one, run again on the same weights, settings, questions and gold answers, rolls out only the questions
it lacked (:mod:`swirl_lightning.rollout.journal`); a finished evaluation deletes its journal, and one of other
questions or gold answers is deleted, with a line saying so, when the evaluation starts afresh.

Every record of one evaluation (scalars, text, rollout file) has one step: the optimizer step of the weights
evaluated (during ``fit``, the steps taken so far; in ``swirl validate --ckpt_path``, the checkpoint's).

:class:`RewardProbe` shows the first thing an RL trainer must show: the judged reward of *fresh* samples at a
fixed set of training states rises as training goes on. Before the first update, every ``every_n_steps`` optimizer steps
and after the last one, it samples ``samples`` new actions at each of ``states`` training states (drawn once, with
``seed``) with the current policy, scores them with the module's reward judge (the sampler and judge the ``swirl``
objective uses, given by the module's ``objective_parts()``) and logs ``probe/reward_mean`` (and
``probe/good_rate``, the share scored 1). Every probe uses the same sampling seeds, so two probes differ only
because the policy did (common random numbers: the difference has less noise than two independent draws).
The history (with each state's mean reward, for paired comparisons) is written to ``<log_dir>/probe.json``.

``train/reward_mean`` cannot show this: each batch holds other states, so it moves with the batch.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from swirl_lightning.core.digests import examples_digest
from swirl_lightning.core.trajectory import Example, Trajectory
from swirl_lightning.rollout.journal import EvaluationJournal, fingerprint, journals_of_other_questions
from swirl_lightning.training.action_rewards import judged_rewards
from swirl_lightning.training.objectives.base import ObjectiveParts

JOURNAL_DIR = "evaluation_journal"
"""Below the trainer's root folder: the journals of unfinished evaluations (:mod:`swirl_lightning.rollout.journal`)."""


EVALUATION_FIGURES = ("accuracy", "steps_mean", "tool_error_rate", "invalid_action_rate", "step_good_rate",
                      "answered_rate")
"""The figures of one evaluation, logged as ``<stage>/<name>``."""


class LiveEvaluation(L.Callback):
    """Summarises, logs and saves the live rollouts of validation, test and predict (see the module docstring)."""

    PROGRESS_LINES = 10
    """Without a progress bar (e.g. output to a log file), a long evaluation prints about this many progress lines."""

    def __init__(self) -> None:
        self.trajectories: list[Trajectory] = []
        self.started = time.monotonic()
        self.journal: EvaluationJournal | None = None

    def _start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.trajectories, self.started = [], time.monotonic()
        self._close_journal(finished=False)  # one an exception left open (e.g. a run interrupted in this process)
        if trainer.sanity_checking:
            return
        stage = evaluation_stage(trainer)
        rank = f"-rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        identity = evaluation_fingerprint(module, evaluation_examples(trainer, stage))
        path = Path(trainer.default_root_dir) / JOURNAL_DIR / f"{stage}-step{evaluation_step(trainer, module):06d}-" \
            f"{identity}{rank}.jsonl"
        for stale in journals_of_other_questions(path):  # its outcomes were scored against other gold answers
            print(f"{stage}: not resuming from {stale}: it was rolled out on other questions or gold answers; "
                  "starting afresh", flush=True)
            stale.unlink(missing_ok=True)
        self.journal = EvaluationJournal(path, module.evaluation.num_samples)
        if self.journal.resumed:
            print(f"{stage}: resuming from {self.journal.path}: {self.journal.resumed} questions already rolled out",
                  flush=True)

    def _close_journal(self, finished: bool) -> None:
        if self.journal is not None:
            self.journal.close(finished)
            self.journal = None

    on_validation_epoch_start = on_test_epoch_start = on_predict_epoch_start = _start

    def _collect(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
                 dataloader_idx: int = 0) -> None:
        self.trajectories.extend(outputs or [])
        self.print_progress(trainer, batch_idx + 1)

    on_validation_batch_end = on_test_batch_end = on_predict_batch_end = _collect

    def print_progress(self, trainer: L.Trainer, batches_done: int) -> None:
        """A line every tenth of an evaluation when no progress bar shows how far it is (an hour-long validation
        would otherwise be silent until its end)."""
        if trainer.progress_bar_callback is not None or not trainer.is_global_zero or trainer.sanity_checking:
            return
        stage = evaluation_stage(trainer)
        totals = getattr(trainer, f"num_{stage}_batches")  # num_val_batches, num_test_batches, num_predict_batches
        total = int(sum(totals)) if all(t != float("inf") for t in totals) else 0  # inf: a loader of unknown length
        every = max(1, round(total / self.PROGRESS_LINES))
        if total <= 1 or batches_done >= total or batches_done % every:
            return
        correct = sum(1 for t in self.trajectories if t.outcome)  # rank 0's share under several processes
        minutes = (time.monotonic() - self.started) / 60
        print(f"{stage}: {batches_done}/{total} batches, {len(self.trajectories)} rollouts ({correct} correct so far) "
              f"in {minutes:.1f} min", flush=True)

    def gathered(self, trainer: L.Trainer) -> list[Trajectory]:
        """This epoch's trajectories of every process, once each (distributed samplers repeat questions)."""
        trajectories = self.trajectories
        if torch.distributed.is_available() and torch.distributed.is_initialized() and trainer.world_size > 1:
            parts: list[list[Trajectory] | None] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, trajectories)
            trajectories = [t for part in parts if part is not None for t in part]
        unique = {t.key: t for t in trajectories}
        return [unique[key] for key in sorted(unique)]

    def finish(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> dict[str, Any]:
        """Summarise, log, print and save one evaluation; returns the summary."""
        from swirl_lightning.core.trajectory import write_jsonl
        from swirl_lightning.rollout.evaluation import summarize

        trajectories = self.gathered(trainer)
        judge_id = module.step_judge.judge_id if module.evaluation.judge_steps else None
        summary = summarize(trajectories, judge_id)
        metrics = {f"{stage}/accuracy": summary["accuracy"] or 0.0}
        for name in EVALUATION_FIGURES[1:]:
            if summary[name] is not None:
                metrics[f"{stage}/{name}"] = float(summary[name])
        if not trainer.sanity_checking:
            step = evaluation_step(trainer, module)
            # Every rank holds the same gathered figures; syncing averages equal values and keeps Lightning quiet.
            # `step` is Lightning's way to give the loggers the step (it would use its count of training batches).
            module.log_dict({**metrics, "step": float(step)}, batch_size=max(len(trajectories), 1), sync_dist=True)
            log_dir = trainer.log_dir  # a collective call: every rank asks, once
            if trainer.is_global_zero:
                figures = ", ".join(f"{name.split('/')[1]} {value:.3f}" for name, value in metrics.items())
                print(f"{stage} at step {step} ({len(trajectories)} rollouts): {figures}", flush=True)
                link = None
                if log_dir:
                    # The rollouts themselves, for reading or re-scoring later (and for the Trajectories dashboard).
                    rollouts = Path(log_dir) / "rollouts" / rollouts_file_name(stage, step)
                    rollouts.parent.mkdir(parents=True, exist_ok=True)
                    write_jsonl(rollouts, trajectories)
                    link = dashboard_link(rollouts, trainer.default_root_dir)
                writer = tensorboard_writer(trainer)
                if writer is not None:
                    log_trajectory_text(writer, stage, step, trajectories, module.evaluation.log_trajectories, link)
        self._close_journal(finished=True)
        self.trajectories = []
        return summary

    def on_train_batch_start(self, trainer: L.Trainer, *_: Any) -> None:
        # The `step` an evaluation logged stays in Lightning's callback metrics, where ModelCheckpoint would read it
        # as the step of later checkpoints' file names: training's own step is the trainer's.
        trainer.callback_metrics.pop("step", None)

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
        self._close_journal(finished=True)
        self.trajectories = []


def evaluation_stage(trainer: L.Trainer) -> str:
    """``val``, ``test`` or ``predict``: the evaluation the trainer is running (the prefix of its metrics and files)."""
    return "val" if trainer.validating else "test" if trainer.testing else "predict"


def evaluation_step(trainer: L.Trainer, module: L.LightningModule) -> int:
    """The optimizer step of the weights being evaluated: the trainer's while fitting, else the step of the checkpoint
    they were loaded from (0 without one)."""
    if trainer.state.fn == "fit":
        return trainer.global_step
    return max(trainer.global_step, module.loaded_step)


def evaluation_fingerprint(module: L.LightningModule, examples: Sequence[Example]) -> str:
    """What decides a :class:`SwirlModule`'s rollouts and their outcomes, as ``<digest>-q<digest>``: the policy, task,
    tools, judge, LoRA and evaluation settings, and the weights (:func:`swirl_lightning.rollout.journal.fingerprint`);
    then the questions with their gold answers (:func:`swirl_lightning.core.digests.examples_digest`), apart, so that
    a journal of other gold data can be told from one of other weights."""
    e = module.evaluation
    weights = fingerprint((module.policy, module.task, module.tools, module.judge, module.lora, e.sampling,
                           e.num_samples, e.judge_steps), module.policy.adapter, module.scorer.named_parameters())
    return f"{weights}-q{examples_digest(examples)}"


def evaluation_examples(trainer: L.Trainer, stage: str) -> list[Example]:
    """The questions of the evaluation the trainer is running: its loaders' datasets (those that are lists of
    examples, as :class:`~swirl_lightning.training.data.SwirlDataModule` makes them)."""
    loaders = {"val": trainer.val_dataloaders, "test": trainer.test_dataloaders,
               "predict": trainer.predict_dataloaders}[stage]
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    datasets = [getattr(loader, "dataset", None) for loader in loaders]
    return [e for dataset in datasets if isinstance(dataset, Sequence) for e in dataset if isinstance(e, Example)]


def rollouts_file_name(stage: str, step: int) -> str:
    """``<stage>-step<N>.jsonl``: the rollouts of one evaluation, in ``<log_dir>/rollouts/``."""
    return f"{stage}-step{step:06d}.jsonl"


MAX_TABLE_ROWS = 200
DASHBOARD_PAGE = "data/plugin/trajectories/index.html"
"""The Trajectories dashboard as a page of its own, relative to TensorBoard's address (``swirl-tensorboard``)."""


def dashboard_link(rollouts: Path, root: str | Path) -> str:
    """A link from TensorBoard's text tab to these rollouts in the Trajectories dashboard. It names the file by its
    path below ``root`` (the trainer's root folder): the dashboard finds the file whose path ends so, whatever log
    folder TensorBoard was started on."""
    from urllib.parse import quote

    try:
        suffix = rollouts.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        suffix = "/".join(rollouts.parts[-4:])
    return f"{DASHBOARD_PAGE}?find={quote(suffix)}"


def log_trajectory_text(writer: Any, stage: str, step: int, trajectories: list[Trajectory], detailed: int,
                        link: str | None = None) -> None:
    """TensorBoard text of one evaluation: a table of every rollout (with ``link``, to the dashboard), and the
    first ``detailed`` step by step."""
    from swirl_lightning.rollout.view import summary_table_markdown, trajectory_summary, trajectory_view, view_markdown

    table = summary_table_markdown([trajectory_summary(t) for t in trajectories[:MAX_TABLE_ROWS]])
    if link:
        table = (f"[Open these {len(trajectories)} rollouts in the Trajectories dashboard]({link}) "
                 "(the swirl-tensorboard plugin)\n\n" + table)
    if len(trajectories) > MAX_TABLE_ROWS:
        table += f"\n\n{len(trajectories) - MAX_TABLE_ROWS} more in rollouts/{rollouts_file_name(stage, step)}"
    writer.add_text(f"{stage}/rollouts", table, step)
    for trajectory in trajectories[:detailed]:
        tag = f"{stage}/trajectory/{trajectory.example_id}/{trajectory.sample_index}"
        writer.add_text(tag, view_markdown(trajectory_view(trajectory)), step)


class RewardProbe(L.Callback):
    """Judged reward of fresh samples at a fixed pool of training states, before, during and after training."""

    def __init__(self, states: int = 32, samples: int = 8, every_n_steps: int = 10, seed: int = 1234) -> None:
        """
        Args:
            states: Training states in the pool (drawn once with ``seed``; all of them when fewer).
            samples: Fresh actions sampled at each state per probe.
            every_n_steps: Probe every this many optimizer steps (and before the first and after the last; a resumed
                run keeps the points it restored and probes on at the schedule).
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
        rewards = self.rewards(module.objective_parts())
        judged = ~rewards.isnan()  # a judge failure is no reward: left out of the means
        # With no verdict at all there is no mean: None in probe.json (valid JSON), nothing on the scalar charts.
        scored = rewards[judged]
        point = {"step": step, "reward_mean": float(scored.mean()) if len(scored) else None,
                 "good_rate": float((scored >= 1).float().mean()) if len(scored) else None,
                 "judge_failures": int((~judged).sum()),
                 "states": len(self._pool), "samples": self.samples, "seconds": time.perf_counter() - started,
                 "state_rewards": [round(float(r), 6) if ok.any() else None
                                   for r, ok in zip(rewards.nanmean(dim=1), judged)]}
        self.history.append(point)
        if trainer.is_global_zero:
            reward = "no verdict" if not judged.any() else f"{point['reward_mean']:.3f}"
            print(f"probe at step {step}: reward {reward} of {self.samples} fresh samples at "
                  f"{len(self._pool)} training states ({point['seconds']:.0f} s)", flush=True)
        for logger in trainer.loggers if judged.any() else ():
            logger.log_metrics({"probe/reward_mean": point["reward_mean"], "probe/good_rate": point["good_rate"]}, step)
        log_dir = trainer.log_dir
        if trainer.is_global_zero and log_dir:
            path = Path(log_dir) / "probe.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.history, indent=1) + "\n")

    @torch.no_grad()
    def rewards(self, parts: ObjectiveParts) -> Tensor:
        """Rewards ``[N, samples]`` of fresh actions sampled at the pool's states with the fixed seed. A probe's judge
        failures are counted apart from training's (each probe has a budget of its own)."""
        assert self._pool is not None  # drawn before the first probe
        samples, _ = parts.policy.sample(self._pool, self.samples, self.seed)
        failures = dataclasses.replace(parts.failures, judged=0, failed=0, last_error=None)
        return judged_rewards(parts.judge, parts.policy.action_tags, self._pool, samples, failures)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # A resumed run has its baseline in the restored history: probing again at the resumed step would cost a probe
        # (minutes on a CPU) for a point off the schedule.
        if not self.history:
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


class PeriodicCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint that keeps its count of periodic checkpoints across kills and resumes.

    Without a monitored metric, ModelCheckpoint saves the new checkpoint and then removes the one before. A run killed
    between the two leaves the old file behind, and the resumed run, restored from a state that never saw the new
    one, does not know it: each kill can add a file for good. After every save this one removes files in its own
    folder with Lightning's default name (``epoch=E-step=S.ckpt``) beyond ``save_top_k``, keeping the newest by step.

    Its folder has one ``last.ckpt``, always the newest: Lightning's version counter is off by default. With it on,
    a run continued from a checkpoint copied in from another folder (a finished run trained for more steps) finds a
    ``last.ckpt`` it did not write and saves ``last-v1.ckpt`` beside it; whatever then reads ``last.ckpt`` by name
    (the benchmarks' resume, ``swirl validate --ckpt_path .../last.ckpt``) gets the copied step. (``--ckpt_path last``
    picks the newest ``last*.ckpt``.) The periodic names carry their step, so nothing collides.
    """

    _NAME = re.compile(r"^epoch=(\d+)-step=(\d+)(?:-v\d+)?\.ckpt$")

    def __init__(self, *args: Any, enable_version_counter: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, enable_version_counter=enable_version_counter, **kwargs)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if self.monitor is None and self.save_top_k >= 1 and trainer.is_global_zero and self.dirpath:
            self._prune(Path(self.dirpath))

    def _prune(self, folder: Path) -> None:
        periodic = sorted((int(m.group(2)), path) for path in folder.glob("epoch=*-step=*.ckpt")
                          if (m := self._NAME.match(path.name)))
        for _, path in periodic[: max(len(periodic) - self.save_top_k, 0)]:
            if str(path) not in (self.last_model_path, self.best_model_path):
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)  # sharded: a folder


def tensorboard_writer(trainer: L.Trainer):
    """The TensorBoard writer of the trainer's TensorBoard logger (``None`` without one)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None
