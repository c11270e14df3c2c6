"""Where ``swirl generate`` writes: the run record that a resume must match, the per-rank shards, and their merge.

``<output>.run.json`` holds the run's identity (:func:`run_identity`: the settings that make two runs' trajectories
comparable, and digests of the files read); a resume with other settings, or after an input changed, is refused.
Each rank appends to ``<output>.shards/rank<r>-of-<w>.jsonl``; :func:`merge_shards` writes the merged ``<output>``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from swirl_lightning.core.outputs import check_outputs_apart
from swirl_lightning.core.trajectory import Trajectory, read_trajectories, write_jsonl, write_text_atomic
from swirl_lightning.rollout.config import GenerateConfig


def run_identity(cfg: GenerateConfig) -> dict[str, Any]:
    """What makes trajectories of one run comparable: a resume must match it (limit and offset may grow). Besides the
    settings, ``content`` holds digests of the files read (names alone would miss a file edited in place)."""
    from swirl_lightning.core.digests import adapter_digest, path_digest
    from swirl_lightning.core.prompts import PROMPT_VERSION

    sampling = {k: v for k, v in asdict(cfg.sampling).items()
                if k in ("temperature", "top_p", "max_new_tokens", "max_context_tokens", "seed")}
    task = {k: v for k, v in asdict(cfg.task).items() if k in ("name", "split", "data_path", "max_actions", "few_shot")}
    content = {"task.data_path": path_digest(cfg.task.data_path), "policy.adapter": adapter_digest(cfg.policy.adapter)}
    identity = {"policy": asdict(cfg.policy), "sampling": sampling, "task": task, "tools": cfg.tools.names,
                "samples": cfg.samples, "prompt_version": PROMPT_VERSION, "content": content}
    if cfg.tools.plugins:  # which servers, indexes, ... the tools use (absent without: older records still resume)
        identity["tools.plugins"] = cfg.tools.plugins
    if cfg.engine.name != "in_process":  # (absent for the default engine: records written before it still resume)
        identity["engine"] = {"name": cfg.engine.name, "dtype": cfg.engine.dtype, "base_url": cfg.engine.base_url}
    return identity


def run_file(output: Path) -> Path:
    return output.with_name(output.name + ".run.json")


def _differences(stored: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(stored, dict) and isinstance(current, dict):
        return [d for key in sorted(set(stored) | set(current))
                for d in _differences(stored.get(key), current.get(key), f"{prefix}{key}.")]
    return [] if stored == current else [f"{prefix.rstrip('.')}: {stored!r} then, {current!r} now"]


def _changed_content(stored: dict[str, Any], current: dict[str, Any], cfg: GenerateConfig) -> str:
    """The inputs whose content differs from the run record's digests, named with their paths ('' when none). A record
    without digests (an older version wrote it) cannot vouch for its inputs: every one counts as changed."""
    content = stored.get("content")
    then = content if isinstance(content, dict) else {}
    paths = {"task.data_path": cfg.task.data_path, "policy.adapter": cfg.policy.adapter}
    return ", ".join(f"the content of {name} {paths[name]}" for name, digest in current["content"].items()
                     if digest is not None and then.get(name, "") != digest)


def prepare_output(cfg: GenerateConfig) -> None:
    """Refuse an output that is an input (the questions, the policy), or one this run would mix with another (or
    replace it with ``overwrite``: a link there is removed, not what it points to); record this run's identity beside
    it."""
    output = Path(cfg.output)
    summary = output.with_name(output.name + ".summary.json")
    model_folder = cfg.policy.name if os.path.isdir(cfg.policy.name) else None  # not an alias or a hub id
    check_outputs_apart({"output": output, "run record": run_file(output), "summary": summary,
                         "shard folder": shard_dir(output)},
                        {"task.data_path": cfg.task.data_path, "policy.adapter": cfg.policy.adapter,
                         "policy.name": model_folder})
    if cfg.overwrite:
        for path in (output, run_file(output), summary):
            path.unlink(missing_ok=True)
        shutil.rmtree(shard_dir(output), ignore_errors=True)
    current = run_identity(cfg)
    if output.exists() or shard_dir(output).exists():
        if not run_file(output).exists():
            raise FileExistsError(f"{output} exists and {run_file(output).name} does not say how it was made; resuming "
                                  "could mix two runs: pass --overwrite true to start over, or choose another --output")
        stored = json.loads(run_file(output).read_text())
        differences = _differences({k: v for k, v in stored.items() if k != "content"},
                                   {k: v for k, v in current.items() if k != "content"})
        if differences:
            raise FileExistsError(f"{output} was generated with other settings ({'; '.join(differences)}); resuming "
                                  "would mix two runs: pass --overwrite true to start over, or choose another --output")
        changed = _changed_content(stored, current, cfg)
        if changed:
            raise FileExistsError(f"{output} was started before {changed} changed; resuming would mix two runs: pass "
                                  "--overwrite true to start over, or choose another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_file(output), json.dumps(current, indent=2) + "\n")


def shard_dir(output: Path) -> Path:
    return output.with_name(output.name + ".shards")


def finished_keys(output: Path) -> set[tuple[str, int]]:
    """(example id, sample index) pairs already in the merged output or any shard."""
    return {t.key for t in _finished(output)}


def _finished(output: Path) -> Iterator[Trajectory]:
    """The trajectories of the merged output, then of every shard (a shard's torn last line, from a crash, is
    skipped: the writer owns it)."""
    if output.exists():
        yield from read_trajectories(output, allow_empty=True)
    if shard_dir(output).exists():
        for shard in sorted(shard_dir(output).glob("rank*.jsonl")):
            yield from read_trajectories(shard, torn_tail="skip", allow_empty=True)


def merge_shards(output: Path, example_order: list[str]) -> list[Trajectory]:
    """Merge the output and all shards into ``output``: one trajectory per key, in question order."""
    by_key: dict[tuple[str, int], Trajectory] = {}
    for trajectory in _finished(output):
        by_key.setdefault(trajectory.key, trajectory)
    order = {example_id: i for i, example_id in enumerate(example_order)}
    merged = sorted(by_key.values(), key=lambda t: (order.get(t.example_id, len(order)), t.example_id, t.sample_index))
    write_jsonl(output, merged)
    return merged
