"""The settings of ``swirl generate``: the shared groups (policy, task, sampling, engine, tools) and its own.

A module of its own so that :mod:`.shards` (the run record a resume must match) and :mod:`.generate` both read it
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swirl_lightning.core.config import EngineConfig, PolicyConfig, SamplingConfig, TaskConfig, ToolsConfig


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
    engine: EngineConfig = field(default_factory=EngineConfig)
    """What samples them: the in-process engine, or a vLLM server."""
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
    overwrite: bool = False
    """Start over when the output exists. Without it an existing output is resumed, and only when it was made with
    the same policy, sampling, samples, tools and task framing (``<output>.run.json``): two runs never mix."""

    def __post_init__(self) -> None:
        for name in ("samples", "processes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device: expected auto, cpu or cuda[:N], got {self.device!r}")
        if self.engine.name == "vllm" and self.processes > 1:
            raise ValueError("processes: engine.name vllm takes one process (the server batches the requests of "
                             "sampling.batch_size conversations); raise sampling.batch_size instead")
