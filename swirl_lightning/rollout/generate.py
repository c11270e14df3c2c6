"""``swirl generate``: sample multi-step trajectories with live tools, resumably and data-parallel.

Each process (rank) takes every ``world``-th question and appends finished trajectories to its own
shard, ``<output>.shards/rank<r>-of-<w>.jsonl``, one fsynced line each. A run killed at any moment and
started again reads every shard and the merged output, skips the (example, sample) pairs already
finished, and goes on; a torn last line is cut off (see :mod:`swirl_lightning.core.trajectory`). When all
ranks are done, the shards are merged into ``<output>`` (atomically, deduplicated, in question order) and
a summary is written to ``<output>.summary.json``.

Several processes: ``processes: N`` spawns N workers itself; under ``torchrun`` each rank reads
``RANK``/``WORLD_SIZE`` and rank 0 merges once every rank has marked its shard done.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from swirl_lightning.core.config import PolicyConfig, SamplingConfig, TaskConfig, ToolsConfig
from swirl_lightning.core.trajectory import Example, JsonlWriter, Trajectory, read_trajectories, write_jsonl


@dataclass
class GenerateConfig:
    """Sample K multi-step trajectories for each of N questions with live tools."""

    output: str = "runs/generate/trajectories.jsonl"
    """Merged trajectories (JSONL); shards go to ``<output>.shards/``."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The policy that answers."""
    task: TaskConfig = field(default_factory=lambda: TaskConfig(limit=50))
    """The questions: ``task.limit`` of them (N), after skipping ``task.offset``."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How turns are sampled."""
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    """The tools the policy may call."""
    samples: int = 4
    """Samples K per question."""
    processes: int = 1
    """Worker processes to spawn (each takes a disjoint share of the questions)."""
    device: str = "auto"
    """``auto`` picks CUDA when present, else CPU."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        for name in ("samples", "processes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")


def shard_dir(output: Path) -> Path:
    return output.with_name(output.name + ".shards")


def finished_keys(output: Path) -> set[tuple[str, int]]:
    """(example id, sample index) pairs already in the merged output or any shard."""
    keys: set[tuple[str, int]] = set()
    for path in _trajectory_files(output):
        keys.update(t.key for t in read_trajectories(path))
    return keys


def _trajectory_files(output: Path) -> list[Path]:
    files = [output] if output.exists() else []
    if shard_dir(output).exists():
        files += sorted(shard_dir(output).glob("rank*.jsonl"))
    return files


def merge_shards(output: Path, example_order: list[str]) -> list[Trajectory]:
    """Merge the output and all shards into ``output``: one trajectory per key, in question order."""
    by_key: dict[tuple[str, int], Trajectory] = {}
    for path in _trajectory_files(output):
        for trajectory in read_trajectories(path):
            by_key.setdefault(trajectory.key, trajectory)
    order = {example_id: i for i, example_id in enumerate(example_order)}
    merged = sorted(by_key.values(), key=lambda t: (order.get(t.example_id, len(order)), t.example_id, t.sample_index))
    write_jsonl(output, merged)
    return merged


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _examples(cfg: GenerateConfig) -> list[Example]:
    from swirl_lightning.core.tasks import load_task

    task = cfg.task
    return load_task(task.name, task.split, task.limit, offset=task.offset, path=task.data_path)


def load_policy(policy: PolicyConfig, device: str):
    """Model and tokenizer of a policy, with its adapter merged in, for generation."""
    from swirl_lightning.core.models import check_adapter_dir, load_model, load_tokenizer

    if policy.adapter:
        check_adapter_dir(policy.adapter)
    tokenizer = load_tokenizer(policy.name)
    model = load_model(policy.name, dtype=policy.dtype, device=_resolve_device(device),
                       attn_implementation=policy.attn_implementation)
    if policy.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, policy.adapter).merge_and_unload().eval()
    return model, tokenizer


def run_rank(cfg: GenerateConfig, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """Generate this rank's share of the missing trajectories into its shard; return throughput stats."""
    import torch
    from tqdm.auto import tqdm

    from swirl_lightning.rollout.conversation import ChatRenderer, RolloutSettings, conversations
    from swirl_lightning.rollout.engine import GenerationEngine

    if world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    output = Path(cfg.output)
    settings = RolloutSettings.for_task(cfg.task, cfg.tools, policy_name=cfg.policy.label)
    mine = [e for i, e in enumerate(_examples(cfg)) if i % world == rank]
    done = finished_keys(output)
    todo = sum((e.id, k) not in done for e in mine for k in range(cfg.samples))
    shard = shard_dir(output) / f"rank{rank}-of-{world}.jsonl"
    stats: dict[str, Any] = {"rank": rank, "trajectories": 0, "seconds": 0.0, "generated_tokens": 0}
    if todo == 0:
        return stats
    policy, tokenizer = load_policy(cfg.policy, cfg.device)
    settings.renderer = ChatRenderer(tokenizer)
    engine = GenerationEngine(policy, tokenizer, cfg.sampling, stop_strings=settings.stop_strings)
    started = time.perf_counter()
    bar = tqdm(total=todo, desc=f"generate[rank {rank}]" if world > 1 else "generate", unit="traj",
               disable=not cfg.progress, position=rank)
    with JsonlWriter(shard) as writer:
        def on_finished(conversation) -> None:
            writer.write(conversation.trajectory)
            stats["trajectories"] += 1
            bar.update(1)
            elapsed = time.perf_counter() - started
            bar.set_postfix(tok_s=f"{engine.stats.generated_tokens / max(elapsed, 1e-9):.1f}", refresh=False)

        engine.run(conversations(mine, cfg.samples, settings, skip=done), on_finished)
    bar.close()
    stats["seconds"] = time.perf_counter() - started
    stats["generated_tokens"] = engine.stats.generated_tokens
    stats["prefill_tokens"] = engine.stats.prefill_tokens
    stats["forward_seconds"] = engine.stats.forward_seconds
    stats["prefill_seconds"] = engine.stats.prefill_seconds
    stats["decode_seconds"] = engine.stats.decode_seconds
    stats["tokens_per_second_by_turn"] = engine.stats.tokens_per_second_by_turn()
    return stats


def _worker(cfg: GenerateConfig, rank: int, world: int) -> None:
    stats = run_rank(cfg, rank, world)
    done_marker = shard_dir(Path(cfg.output)) / f"rank{rank}-of-{world}.done.json"
    done_marker.parent.mkdir(parents=True, exist_ok=True)
    done_marker.write_text(json.dumps(stats))


def run_generate(cfg: GenerateConfig) -> dict[str, Any]:
    """Run ``swirl generate``: all ranks, then merge and summarise (on rank 0). Returns the summary."""
    from swirl_lightning.rollout.evaluation import summarize

    output = Path(cfg.output)
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    started = time.perf_counter()
    if env_world > 1:  # launched by torchrun: this process is one rank
        rank, world = int(os.environ.get("RANK", "0")), env_world
        _clear_done_markers(output, rank, world)
        _worker(cfg, rank, world)
        if rank != 0:
            return {}
        _wait_for_ranks(output, world)
    elif cfg.processes > 1:
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
    output.with_name(output.name + ".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


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
