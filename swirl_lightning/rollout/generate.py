"""``swirl generate``: sample multi-step trajectories with live tools, resumably and data-parallel.

Each process (rank) takes every ``world``-th question and appends finished trajectories to its own
shard, ``<output>.shards/rank<r>-of-<w>.jsonl``, one fsynced line each. A run killed at any moment and
started again reads every shard and the merged output, skips the (example, sample) pairs already
finished, and goes on; a torn last line is cut off (see :mod:`swirl_lightning.core.trajectory`). When all
ranks are done, the shards are merged into ``<output>`` (atomically, deduplicated, in question order) and
a summary is written to ``<output>.summary.json``.

Several processes: ``processes: N`` spawns N workers itself; under ``torchrun`` each rank reads
``RANK``/``WORLD_SIZE`` and rank 0 merges once every rank has marked its shard done. With ``engine.name: vllm`` one
process drives the server (which batches): ``sampling.batch_size`` conversations have a request in flight at once, and
a managed server logs to ``<output>.vllm.log``.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swirl_lightning.core.config import PolicyConfig, ToolsConfig
from swirl_lightning.core.outputs import output_path
from swirl_lightning.core.prompts import observation_result
from swirl_lightning.core.trajectory import Example, JsonlWriter, Trajectory, write_text_atomic
from swirl_lightning.rollout.config import GenerateConfig
from swirl_lightning.rollout.inflight import InFlightToolCalls
from swirl_lightning.rollout.shards import finished_keys, merge_shards, prepare_output, shard_dir

if TYPE_CHECKING:
    from swirl_lightning.rollout.conversation import RolloutSettings


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for, but this machine has no CUDA device (use auto or cpu)")
    return device


def _examples(cfg: GenerateConfig) -> list[Example]:
    from swirl_lightning.core.tasks import load_task

    task = cfg.task
    return load_task(task.name, task.split, task.limit, offset=task.offset, path=task.data_path)


def load_policy(policy: PolicyConfig, device: str):
    """Model and tokenizer of a policy, with its adapter merged in, for generation."""
    from swirl_lightning.core.models import check_adapter_dir, load_model, load_tokenizer, merge_adapter

    if policy.adapter:
        check_adapter_dir(policy.adapter)
    tokenizer = load_tokenizer(policy.name)
    model = load_model(policy.name, dtype=policy.dtype, device=_resolve_device(device),
                       attn_implementation=policy.attn_implementation)
    if policy.adapter:
        model = merge_adapter(model, policy.adapter).eval()
    return model, tokenizer


def run_rank(cfg: GenerateConfig, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """Generate this rank's share of the missing trajectories into its shard; return throughput stats."""
    import torch

    from swirl_lightning.rollout.conversation import ChatRenderer, RolloutSettings

    if world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    output = Path(cfg.output)
    settings = RolloutSettings.for_task(cfg.task, cfg.tools, policy_name=cfg.policy.label)
    mine = [e for i, e in enumerate(_examples(cfg)) if i % world == rank]
    done = finished_keys(output)
    shard = shard_dir(output) / f"rank{rank}-of-{world}.jsonl"
    in_flight = InFlightToolCalls(shard.with_suffix(".inflight"))
    failed = _fail_poison_pill(in_flight, mine, settings, shard, done, cfg.samples)
    stats: dict[str, Any] = {"rank": rank, "trajectories": failed, "seconds": 0.0, "generated_tokens": 0}
    todo = sum((e.id, k) not in done for e in mine for k in range(cfg.samples))
    if todo == 0:
        in_flight.close()
        return stats
    with contextlib.ExitStack() as stack:
        engine, tokenizer = _backend(cfg, settings, stack)
        settings.renderer = ChatRenderer(tokenizer)
        return _run_backend(cfg, engine, settings, rank, world, mine, done, shard, in_flight, stats, todo)


def _backend(cfg: GenerateConfig, settings: RolloutSettings, stack: contextlib.ExitStack):
    """The generation backend of ``cfg.engine`` and the policy's tokenizer (a managed vLLM server is stopped when
    ``stack`` closes)."""
    from swirl_lightning.core.models import load_tokenizer
    from swirl_lightning.rollout.engine import GenerationEngine

    if cfg.engine.name == "vllm":
        from swirl_lightning.rollout.vllm_backend import VllmBackend
        from swirl_lightning.rollout.vllm_server import VllmServer

        tokenizer = load_tokenizer(cfg.policy.name)
        log = Path(cfg.output).with_name(Path(cfg.output).name + ".vllm.log")
        server = stack.enter_context(VllmServer.connect(cfg.engine, cfg.policy, log,
                                                        max_context_tokens=cfg.sampling.max_context_tokens))
        return VllmBackend(server, tokenizer, cfg.sampling, cfg.engine, settings.stop_strings), tokenizer
    policy, tokenizer = load_policy(cfg.policy, cfg.device)
    return GenerationEngine(policy, tokenizer, cfg.sampling, stop_strings=settings.stop_strings), tokenizer


def _run_backend(cfg: GenerateConfig, engine, settings: RolloutSettings, rank: int, world: int, mine: list[Example],
                 done: set[tuple[str, int]], shard: Path, in_flight: InFlightToolCalls, stats: dict[str, Any],
                 todo: int) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from swirl_lightning.rollout.conversation import conversations

    errors = ToolErrorWatch(cfg.tools)
    started = time.perf_counter()
    label = f"generate[rank {rank}]" if world > 1 else "generate"
    bar = tqdm(total=todo, desc=label, unit="traj", disable=not cfg.progress, position=rank)
    every = max(1, round(todo / 10))  # without a bar, a line every tenth: an hour-long run is not silent until its end
    correct = 0
    with JsonlWriter(shard) as writer, settings.executor:
        def on_finished(conversation) -> None:
            nonlocal correct
            writer.write(conversation.trajectory)
            stats["trajectories"] += 1
            correct += bool(conversation.trajectory.outcome)
            bar.update(1)
            elapsed = time.perf_counter() - started
            tokens_per_second = engine.stats.generated_tokens / max(elapsed, 1e-9)
            bar.set_postfix(tok_s=f"{tokens_per_second:.1f}", refresh=False)
            errors.add(conversation.trajectory)
            errors.check()
            done_now = stats["trajectories"]
            if not cfg.progress and done_now % every == 0 and done_now < todo:
                print(f"{label}: {done_now}/{todo} trajectories ({correct} correct, {errors.errors} of {errors.calls} "
                      f"tool calls failed) in {elapsed / 60:.1f} min, {tokens_per_second:.0f} tokens/s", flush=True)

        settings.in_flight = in_flight
        engine.run(conversations(mine, cfg.samples, settings, skip=done), on_finished)
    in_flight.close()
    bar.close()
    stats["seconds"] = time.perf_counter() - started
    stats["generated_tokens"] = engine.stats.generated_tokens
    stats["prefill_tokens"] = engine.stats.prefill_tokens
    stats["forward_seconds"] = engine.stats.forward_seconds
    stats["prefill_seconds"] = engine.stats.prefill_seconds
    stats["decode_seconds"] = engine.stats.decode_seconds
    stats["tokens_per_second_by_turn"] = engine.stats.tokens_per_second_by_turn()
    return stats


def _fail_poison_pill(in_flight: InFlightToolCalls, examples: list[Example], settings: RolloutSettings, shard: Path,
                     done: set[tuple[str, int]], samples: int) -> int:
    """Record as failed the unfinished samples of the question whose tool call the last run died in (see
    :mod:`~swirl_lightning.rollout.inflight`): its other samples would likely kill this run the same way. Adds their
    keys to ``done``; returns how many were recorded."""
    from swirl_lightning.rollout.conversation import RolloutConversation, sample_seed

    mark = in_flight.left_behind()
    example = next((e for e in examples if mark is not None and e.id == mark["example_id"]), None)
    if mark is None or example is None:
        return 0
    reason = (f"the run died during a call of tool {mark.get('tool')!r} by sample {mark['sample_index']} of this "
              "question (the tool may have killed it); recorded as failed, not run again, so that the resumed run "
              "does not die at the same place")
    recorded = 0
    with JsonlWriter(shard) as writer:
        for k in range(samples):
            if (example.id, k) not in done:
                conversation = RolloutConversation(example, k, settings, seed=sample_seed(example.id, k))
                conversation.on_failure(reason)
                writer.write(conversation.trajectory)
                done.add((example.id, k))
                recorded += 1
    return recorded


class ToolErrorRateExceeded(ValueError):
    """More tool calls failed than ``tools.max_error_rate`` allows, with ``tools.on_error_rate: fail``."""


class ToolErrorWatch:
    """Counts tool calls and errors as trajectories finish; with ``on_error_rate: fail``, stops the run once 20 calls
    show a rate over the limit (a misconfigured tool: every later call would fail the same way)."""

    def __init__(self, tools: ToolsConfig, min_calls: int = 20):
        self.config, self.min_calls = tools, min_calls
        self.calls = self.errors = 0
        self.example: str | None = None

    def add(self, trajectory: Trajectory) -> None:
        """Count the tool calls of a finished trajectory."""
        for step in trajectory.steps:
            if step.action.kind == "tool":
                self.calls += 1
                if step.tool_error:
                    self.errors += 1
                    self.example = self.example or observation_result(step.observation)

    def check(self, final: bool = False) -> None:
        """With ``on_error_rate: fail``, raise once the rate is over the limit (after ``min_calls``, or at the end)."""
        if self.config.on_error_rate == "fail" and (final or self.calls >= self.min_calls) and self.exceeded():
            raise ToolErrorRateExceeded(f"{self.message()}; stopped (tools.on_error_rate: fail). The trajectories so "
                                        "far are kept; fix the tool, then run again with --overwrite true")

    def exceeded(self) -> bool:
        return bool(self.calls) and self.errors / self.calls > self.config.max_error_rate

    def message(self) -> str:
        return (f"{self.errors} of {self.calls} tool calls failed ({self.errors / max(self.calls, 1):.0%}, over the "
                f"limit tools.max_error_rate={self.config.max_error_rate:g}), e.g. {self.example!r:.200}")


def _worker(cfg: GenerateConfig, rank: int, world: int) -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:  # spawned by `--processes N` (not torchrun): a worker of a killed parent must not go on
        from swirl_lightning.core.quiet import quiet_dependencies
        from swirl_lightning.core.tool_executor import die_with_parent

        die_with_parent(parent.pid)
        quiet_dependencies()  # a fresh interpreter: the parent's warning filters are not inherited
    stats = run_rank(cfg, rank, world)
    done_marker = shard_dir(Path(cfg.output)) / f"rank{rank}-of-{world}.done.json"
    done_marker.parent.mkdir(parents=True, exist_ok=True)
    done_marker.write_text(json.dumps(stats))


def _check_tools(cfg: GenerateConfig) -> None:
    """Build the run's tools once, as each spawned worker will (with ``tools.plugins``): an unknown tool or a bad
    plugin option is then one error here, not a traceback from each worker."""
    from swirl_lightning.rollout.conversation import RolloutSettings

    RolloutSettings.for_task(cfg.task, cfg.tools).executor.close()


def run_generate(cfg: GenerateConfig) -> dict[str, Any]:
    """Run ``swirl generate``: all ranks, then merge and summarise (on rank 0). Returns the summary."""
    import dataclasses

    from swirl_lightning.rollout.evaluation import summarize

    # An absolute output: nothing a tool or a library does to the working folder can move where results go. Its
    # last part is kept as given: a link there is replaced by the output, the file it points to is left alone.
    cfg = dataclasses.replace(cfg, output=str(output_path(cfg.output)))
    output = Path(cfg.output)
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    started = time.perf_counter()
    if env_world > 1:  # launched by torchrun: this process is one rank
        rank, world = int(os.environ.get("RANK", "0")), env_world
        if cfg.overwrite:
            raise ValueError("overwrite under torchrun: remove the output and its shards by hand, then run again")
        prepare_output(cfg)
        _clear_done_markers(output, rank, world)
        _worker(cfg, rank, world)
        if rank != 0:
            return {}
        _wait_for_ranks(output, world)
    elif cfg.processes > 1:
        _check_tools(cfg)
        prepare_output(cfg)
        world = cfg.processes
        for rank in range(world):
            _clear_done_markers(output, rank, world)
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_worker, args=(cfg, rank, world)) for rank in range(world)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        failed = [rank for rank, worker in enumerate(workers) if worker.exitcode != 0]
        if failed:
            raise RuntimeError(f"generate: worker rank(s) {failed} failed; finished trajectories are kept in "
                               f"{shard_dir(output)}; run the same command again to resume")
    else:
        prepare_output(cfg)
        world = 1
        _clear_done_markers(output, 0, 1)
        _worker(cfg, 0, 1)
    rank_stats = _read_done_markers(output, world)
    merged = merge_shards(output, [e.id for e in _examples(cfg)])
    shutil.rmtree(shard_dir(output), ignore_errors=True)
    summary = summarize(merged)
    generated = sum(s.get("generated_tokens", 0) for s in rank_stats)
    summary.update(
        wall_seconds=round(time.perf_counter() - started, 2),
        new_trajectories=sum(s.get("trajectories", 0) for s in rank_stats),
        generated_tokens=generated,
        tokens_per_second=generated / max(max((s.get("seconds", 0.0) for s in rank_stats), default=0.0), 1e-9),
        tokens_per_second_by_turn=_merge_by_turn(rank_stats),
        config=asdict(cfg),
    )
    write_text_atomic(output.with_name(output.name + ".summary.json"), json.dumps(summary, indent=2) + "\n")
    _warn_about(merged, cfg.tools)
    return summary


def _warn_about(trajectories: list[Trajectory], tools: ToolsConfig) -> None:
    """Say loudly what a user must look at: failed rollouts, and a tool error rate over the limit."""
    import sys

    failed = [t for t in trajectories if t.metadata.get("finish_reason") == "failed"]
    if failed:
        print(f"swirl generate: warning: {len(failed)} rollout(s) failed and were recorded as failed, not retried; "
              f"e.g. {failed[0].key}: {failed[0].metadata.get('failure')}", file=sys.stderr)
    watch = ToolErrorWatch(tools)
    for trajectory in trajectories:
        watch.add(trajectory)
    watch.check(final=True)
    if watch.exceeded():
        print(f"swirl generate: warning: {watch.message()}: check the tool's configuration", file=sys.stderr)


def _clear_done_markers(output: Path, rank: int, world: int) -> None:
    (shard_dir(output) / f"rank{rank}-of-{world}.done.json").unlink(missing_ok=True)


def _wait_for_ranks(output: Path, world: int, timeout_s: float = 24 * 3600) -> None:
    deadline = time.time() + timeout_s
    markers = [shard_dir(output) / f"rank{r}-of-{world}.done.json" for r in range(world)]
    while not all(m.exists() for m in markers):
        if time.time() > deadline:
            raise TimeoutError(f"generate: ranks did not finish within {timeout_s} s: {markers}")
        time.sleep(1.0)


def _read_done_markers(output: Path, world: int) -> list[dict[str, Any]]:
    stats = []
    for rank in range(world):
        marker = shard_dir(output) / f"rank{rank}-of-{world}.done.json"
        if marker.exists():
            stats.append(json.loads(marker.read_text()))
    return stats


def _merge_by_turn(rank_stats: list[dict[str, Any]]) -> dict[str, float]:
    """Mean over ranks of tokens/s by turn index."""
    by_turn: dict[str, list[float]] = {}
    for stats in rank_stats:
        for turn, rate in stats.get("tokens_per_second_by_turn", {}).items():
            by_turn.setdefault(str(turn), []).append(rate)
    return {turn: round(sum(rates) / len(rates), 2) for turn, rates in sorted(by_turn.items(), key=lambda kv: int(kv[0]))}


def format_summary(summary: dict[str, Any]) -> str:
    """A few readable lines of a generate or evaluation summary."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    lines = [
        f"trajectories: {summary['trajectories']} ({summary.get('new_trajectories', 0)} new)",
        f"accuracy: {pct(summary['accuracy'])}   answered: {pct(summary['answered_rate'])}",
        f"steps: mean {summary['steps_mean'] or 0:.2f}, histogram {summary['steps_histogram']}",
        f"valid actions: {pct(summary['valid_action_rate'])}   tool errors: {pct(summary['tool_error_rate'])}"
        f" of {summary['tool_calls']} calls",
        f"invalid reasons: {summary['invalid_reasons']}",
        f"finish reasons: {summary['finish_reasons']}",
    ]
    if "wall_seconds" in summary:
        lines.append(f"wall time: {summary['wall_seconds']:.1f} s   generated tokens: {summary['generated_tokens']}"
                     f"   tokens/s: {summary['tokens_per_second']:.1f}")
        lines.append(f"tokens/s by turn: {summary['tokens_per_second_by_turn']}")
    return "\n".join(lines)


def cli_main(argv: list[str]) -> int:
    """``swirl generate --config FILE [--group.field value ...]``."""
    from swirl_lightning.core.config import parse_config

    cfg = parse_config(GenerateConfig, argv, "swirl generate")
    summary = run_generate(cfg)
    if summary:
        print(format_summary(summary))
        print(f"wrote {cfg.output} and {cfg.output}.summary.json")
    return 0
