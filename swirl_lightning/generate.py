"""``swirl generate``: sample multi-step trajectories with live tools, resumably and data-parallel.

Each process (rank) takes every ``world``-th question and appends finished trajectories to its own
shard, ``<output>.shards/rank<r>-of-<w>.jsonl``, one fsynced line each. A run killed at any moment and
started again reads every shard and the merged output, skips the (example, sample) pairs already
finished, and goes on; a torn last line is cut off (see :mod:`swirl_lightning.trajectory`). When all
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .trajectory import JsonlWriter, Trajectory, read_trajectories, write_jsonl


@dataclass
class GenerateConfig:
    """Sample K multi-step trajectories for each of N questions with live tools."""

    output: str = "runs/generate/trajectories.jsonl"
    """Merged trajectories (JSONL); shards go to ``<output>.shards/``."""
    model: str = "smollm2-135m-instruct"
    """Policy: an alias (``smollm2-135m-instruct``, ``tiny-random``), a local folder or a hub id."""
    adapter: str | None = None
    """Optional PEFT (LoRA) adapter folder applied to the policy."""
    task: str = "gsm8k"
    """Data set: ``gsm8k``, ``hotpotqa`` or ``jsonl`` (with ``data_path``)."""
    split: str = "train"
    data_path: str | None = None
    """A JSONL file of questions (for ``task: jsonl``, or to override the shipped data)."""
    limit: int | None = 50
    """Number of questions N (``null`` for all)."""
    offset: int = 0
    """Skip this many questions of the split first (e.g. those a warm start was trained on)."""
    samples: int = 4
    """Samples K per question."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_steps: int | None = None
    """Most actions per trajectory; the task's default when ``null`` (10 for math, 5 for QA)."""
    max_new_tokens: int = 192
    """Most tokens per model turn."""
    max_context_tokens: int = 4096
    batch_size: int = 8
    """Conversations decoded together per process."""
    seed: int = 0
    tools: list[str] | None = None
    """Tool names; the task's default when ``null``."""
    tool_timeout_s: float = 10.0
    max_tool_output_chars: int = 1000
    few_shot: bool = True
    """Put the hand-written few-shot example of each tool in the prompt."""
    processes: int = 1
    """Worker processes to spawn (each takes a disjoint share of the questions)."""
    dtype: str = "float32"
    device: str = "auto"
    """``auto`` picks CUDA when present, else CPU."""
    progress: bool = True

    def __post_init__(self) -> None:
        positive = {"samples": self.samples, "max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size,
                    "processes": self.processes, "max_context_tokens": self.max_context_tokens}
        if self.offset < 0:
            raise ValueError(f"offset: expected 0 or more questions to skip, got {self.offset}")
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit: expected a positive integer or null, got {self.limit}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps: expected a positive integer or null, got {self.max_steps}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {self.temperature} and {self.top_p}")


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


def _setup(cfg: GenerateConfig):
    """Examples, tools, and the task spec for a config (no model)."""
    from .plugins import get_plugin_manager
    from .tasks import TASKS, load_task
    from .tools import collect_tools, select_tools

    if cfg.task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {cfg.task!r}")
    spec = TASKS[cfg.task]
    examples = load_task(cfg.task, cfg.split, None if cfg.limit is None else cfg.offset + cfg.limit,
                         path=cfg.data_path)[cfg.offset :]
    all_tools = collect_tools(get_plugin_manager())
    names = cfg.tools if cfg.tools is not None else (list(spec.tools) or None)
    tools = select_tools(all_tools, names)
    return spec, examples, tools


def load_policy(model: str, adapter: str | None, dtype: str, device: str):
    """Model and tokenizer of a policy, with an optional PEFT adapter merged in for generation."""
    from .models import check_adapter_dir, load_model, load_tokenizer

    if adapter:
        check_adapter_dir(adapter)
    tokenizer = load_tokenizer(model)
    policy = load_model(model, dtype=dtype, device=_resolve_device(device))
    if adapter:
        from peft import PeftModel

        policy = PeftModel.from_pretrained(policy, adapter).merge_and_unload().eval()
    return policy, tokenizer


def run_rank(cfg: GenerateConfig, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """Generate this rank's share of the missing trajectories into its shard; return throughput stats."""
    import torch
    from tqdm.auto import tqdm

    from .generation import GenerationEngine, SamplingConfig
    from .judges import make_judge, outcome_for_task
    from .rollout import ChatRenderer, RolloutSettings, conversations
    from .tools import ToolExecutor

    if world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    output = Path(cfg.output)
    spec, examples, tools = _setup(cfg)
    mine = [e for i, e in enumerate(examples) if i % world == rank]
    done = finished_keys(output)
    todo = sum((e.id, k) not in done for e in mine for k in range(cfg.samples))
    shard = shard_dir(output) / f"rank{rank}-of-{world}.jsonl"
    stats: dict[str, Any] = {"rank": rank, "trajectories": 0, "seconds": 0.0, "generated_tokens": 0}
    if todo == 0:
        return stats
    policy, tokenizer = load_policy(cfg.model, cfg.adapter, cfg.dtype, cfg.device)
    sampling = SamplingConfig(
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
        batch_size=cfg.batch_size, max_context_tokens=cfg.max_context_tokens, seed=cfg.seed,
    )
    stop_strings = [f"</{tool.tag}>" for tool in tools.values()] + ["</answer>"]
    engine = GenerationEngine(policy, tokenizer, sampling, stop_strings=stop_strings)
    settings = RolloutSettings(
        tools=tools,
        executor=ToolExecutor(tools, timeout_s=cfg.tool_timeout_s, max_output_chars=cfg.max_tool_output_chars),
        max_steps=cfg.max_steps or spec.max_steps,
        renderer=ChatRenderer(tokenizer),
        few_shot=cfg.few_shot,
        policy_name=cfg.model + (f"+{cfg.adapter}" if cfg.adapter else ""),
        outcome=make_judge(outcome_for_task(cfg.task)).score,
    )
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
    from .evaluation import summarize

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
    _, examples, _ = _setup(cfg)
    merged = merge_shards(output, [e.id for e in examples])
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
    """``swirl generate --config FILE [--field value ...]``."""
    from .config import parse_config

    cfg = parse_config(GenerateConfig, argv, "swirl generate")
    summary = run_generate(cfg)
    if summary:
        print(format_summary(summary))
        print(f"wrote {cfg.output} and {cfg.output}.summary.json")
    return 0
