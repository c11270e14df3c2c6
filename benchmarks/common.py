"""What the benchmark scripts share: the machine description in every result, running one side of a comparison in its
own subprocess (so its peak memory and threads are its own), and the parsing of the library's shared groups
(``--policy.*``, ``--task.*``, ``--sampling.*``, ``--tools.*``) beside a benchmark's own flags."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from swirl_lightning.core.config import PolicyConfig, SamplingConfig, TaskConfig, ToolsConfig


def machine_info() -> dict:
    """Platform, CPU count, torch threads and versions, GPU name, and the load average at the start."""
    import torch
    import transformers

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": os.getloadavg(),
    }


def run_side(script: str, arguments: list[str], result: Path, label: str) -> dict:
    """Run ``script`` with ``arguments`` in a fresh Python process that writes its JSON to ``result``; return it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    completed = subprocess.run([sys.executable, script, *arguments, "--result", str(result)], env=env, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"the {label} side failed (exit {completed.returncode})")
    return json.loads(result.read_text())


CHECKPOINTING = {"auto": "auto", "true": True, "false": False}
"""``--gradient-checkpointing`` as ``SwirlModule`` takes it (TRL's configs checkpoint by default)."""


def add_micro_batch_argument(parser: argparse.ArgumentParser) -> None:
    """``--micro-batch-tokens``: our side's ``model.micro_batch_tokens`` (``SwirlModule``'s default when not given)."""
    parser.add_argument("--micro-batch-tokens", type=int, default=None,
                        help="our side's model.micro_batch_tokens (default: SwirlModule's; 0: one pass per batch)")


def micro_batch_arguments(args: argparse.Namespace) -> list[str]:
    """``--micro-batch-tokens`` as given, passed on to a side's process."""
    return [] if args.micro_batch_tokens is None else ["--micro-batch-tokens", str(args.micro_batch_tokens)]


def micro_batch_option(args: argparse.Namespace) -> dict:
    """``SwirlModule``'s ``micro_batch_tokens`` as ``--micro-batch-tokens`` asks (nothing: its default)."""
    return {} if args.micro_batch_tokens is None else {"micro_batch_tokens": args.micro_batch_tokens}


def peak_rss_mb() -> float:
    """This process's peak resident set size (MB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def peak_memory_mb() -> float:
    """This process's peak memory (MB): the GPU's peak allocation on CUDA, else the peak RSS."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()


def add_heap_argument(parser: argparse.ArgumentParser) -> None:
    """``--mmap-threshold-mib``: our side's glibc mmap threshold (``swirl``'s own when not given)."""
    parser.add_argument("--mmap-threshold-mib", type=float, default=None,
                        help="our side's glibc mmap threshold in MiB, as MALLOC_MMAP_THRESHOLD_ would set it for swirl "
                        "(default: swirl's 1 MiB; larger is faster and keeps more freed memory)")


def heap_arguments(args: argparse.Namespace) -> list[str]:
    """``--mmap-threshold-mib`` as given, passed on to a side's process."""
    return [] if args.mmap_threshold_mib is None else ["--mmap-threshold-mib", str(args.mmap_threshold_mib)]


def set_up_side_heap(side: str, threshold_mib: float | None = None) -> str:
    """The heap as each side's own command leaves it: ``swirl`` returns freed blocks to the OS (at ``threshold_mib``
    if given, as ``MALLOC_MMAP_THRESHOLD_`` would for ``swirl``) and backs large tensors with huge pages
    (``swirl_lightning.core.memory``), TRL leaves glibc's and PyTorch's defaults. Returns what was done, for the
    record. Call it before the side's first tensor."""
    if side != "ours":
        return "glibc default"
    from swirl_lightning.core.memory import DEFAULT_MMAP_THRESHOLD_BYTES, set_up_heap

    threshold = DEFAULT_MMAP_THRESHOLD_BYTES if threshold_mib is None else int(threshold_mib * 2**20)
    return set_up_heap(threshold) + (" (as swirl sets it)" if threshold_mib is None else "")


def add_side_options(parser: argparse.ArgumentParser) -> None:
    """The hidden options :func:`run_side` passes to the subprocess that runs one side."""
    parser.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)


SHARED_SPELLINGS = {"--model": "--policy.name", "--adapter": "--policy.adapter", "--questions": "--task.limit",
                    "--offset": "--task.offset", "--max-actions": "--task.max_actions",
                    "--data-path": "--task.data_path", "--max-new-tokens": "--sampling.max_new_tokens"}
"""The flags a benchmark had of its own for the library's settings -> the shared group's flag that replaced each."""


@dataclass
class SharedGroups:
    """The library's settings of a benchmark: the shared groups, as every ``swirl`` command takes them."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The policy."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """The questions."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How turns are sampled."""
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    """The tools."""


def _add_print_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--print-config", action="store_true", help="print the settings as JSON and exit")


def _print_config_and_exit(args: argparse.Namespace, groups: Any = None) -> None:
    """With ``--print-config``: the parsed settings (and the ``groups`` dataclass's) as JSON, then exit 0."""
    if args.print_config:
        settings = {k: v for k, v in vars(args).items() if k not in ("shared", "print_config")}
        print(json.dumps({**settings, **(asdict(groups) if groups is not None else {})}, indent=2, default=str))
        raise SystemExit(0)


def parse_benchmark_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """A benchmark's flags, for one that takes none of the library's settings; ``--print-config`` prints them and
    exits, as it does for :func:`parse_with_shared_groups` (a test parses every result's stated command that way)."""
    _add_print_config(parser)
    args = parser.parse_args(argv)
    _print_config_and_exit(args)
    return args


def parse_with_shared_groups(parser: argparse.ArgumentParser, argv: list[str] | None,
                             defaults: Callable[[argparse.Namespace, Any], dict[str, dict[str, Any]]],
                             groups: type = SharedGroups,
                             renamed: dict[str, str] | None = None) -> argparse.Namespace:
    """A benchmark's own flags (``parser``: ``--threads``, ``--smoke``, ...), with the library's shared groups
    as their ``shared`` (a ``groups`` dataclass, :class:`SharedGroups` unless given: ``--policy.*``, ``--task.*``,
    ``--sampling.*``, ``--tools.*``), parsed by ``parse_config``, as every ``swirl`` command parses them.
    ``defaults(own, given)`` is the benchmark's starting point for the groups (its smoke mode's too, or the task's
    that ``given`` names), applied as the first config: a flag on the command line wins. ``renamed``: old flags of
    the benchmark -> what replaced them (a one-line error, as for :data:`SHARED_SPELLINGS`). ``--print-config``
    prints the settings as JSON and exits."""
    from swirl_lightning.core.config import parse_config

    renamed = {**SHARED_SPELLINGS, **(renamed or {})}
    argv = list(sys.argv[1:] if argv is None else argv)
    for token in argv:
        if token.partition("=")[0] in renamed:
            old = token.partition("=")[0]
            parser.error(f"{old} is renamed {renamed[old]}")  # usage, then one line; exit 2
    parser.allow_abbrev = False  # --task.limit is no abbreviation of a flag of the benchmark's
    names = ", ".join(f"--{f.name}.*" for f in fields(groups))
    parser.epilog = f"The library's settings are swirl's groups, spelled as the `swirl` commands take them: {names}."
    _add_print_config(parser)
    own, rest = parser.parse_known_args(argv)
    given = parse_config(groups, rest, parser.prog)
    own.shared = parse_config(groups, ["--config", json.dumps(defaults(own, given)), *rest], parser.prog)
    _print_config_and_exit(own, own.shared)
    return own


def group_flags(groups: SharedGroups, keys: dict[str, tuple[str, ...]]) -> list[str]:
    """``--group.key value`` of the parsed ``groups`` for ``keys`` (group -> keys): the settings a stage's ``swirl``
    command gets, spelled as it takes them."""
    flags = []
    for group, names in keys.items():
        for name in names:
            value = getattr(getattr(groups, group), name)
            flags += [f"--{group}.{name}", value if isinstance(value, str) else json.dumps(value)]
    return flags


def command_line(argv: list[str] | None) -> str:
    """The command that ran this benchmark, as a user would type it (``argv``: the arguments given to ``main``)."""
    import shlex

    return shlex.join(["python", os.path.relpath(sys.argv[0]), *(sys.argv[1:] if argv is None else argv)])


def subplots(*args, **kwargs):
    """``matplotlib.pyplot.subplots`` on the Agg backend (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def write_result(result: dict, out: Path, plot) -> None:
    """Write ``result`` as JSON to ``out`` and the figure ``plot(result)`` returns to ``<out>.png``; say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    figure = plot(result)
    figure.tight_layout()
    figure.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out} and {out.with_suffix('.png')}")


class Stages:
    """Runs a benchmark's stages as ``swirl`` subprocesses (``python -m swirl_lightning``), skipping those whose output
    is there, each with its log (the command heads it) in the run folder; records every command and its time."""

    def __init__(self, run_dir: Path, report_only: bool = False):
        self.run_dir, self.report_only = Path(run_dir), report_only
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.commands: list[str] = []
        self.seconds: dict[str, float] = {}

    @staticmethod
    def work_from_repository(args: argparse.Namespace, root: Path, path_options: tuple[str, ...]) -> None:
        """Resolve the path options from where the command was typed (relative to the repository when inside it),
        then work from the repository: the stages name configs and adapters relative to it."""
        for name in path_options:
            path = Path(getattr(args, name)).resolve()
            setattr(args, name, str(path.relative_to(root) if path.is_relative_to(root) else path))
        os.chdir(root)

    def run(self, name: str, argv: list[str], done: Path, marker: bool = False) -> None:
        """Run ``swirl <argv>`` unless ``done`` exists; with ``marker``, ``done`` is a file touched on success
        (otherwise it is the stage's own output)."""
        import shlex
        import time

        command = shlex.join(["swirl", *argv])
        log_path = self.run_dir / f"{name}.log"
        # The command a stage ran with heads its log; a report of an earlier run quotes that one.
        ran = [line[2:] for line in log_path.read_text().splitlines() if line.startswith("$ ")] \
            if log_path.exists() else []
        if done.exists() or self.report_only:
            self.commands.append(ran[0] if ran else command)  # a resumed fit adds only --ckpt_path
            print(f"== {name}: {'not run (--report-only)' if self.report_only else f'already done ({done})'}", flush=True)
            return
        self.commands.append(command)
        print(f"== {name} (log: {log_path}): {command}", flush=True)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        started = time.perf_counter()
        with open(log_path, "a") as log:
            print(f"$ {command}", file=log, flush=True)
            completed = subprocess.run([sys.executable, "-m", "swirl_lightning", *argv], env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
        self.seconds[name] = time.perf_counter() - started
        if completed.returncode != 0:
            raise SystemExit(f"stage {name} failed (exit {completed.returncode}); end of {log_path}:\n"
                             f"{log_path.read_text()[-3000:]}")
        if marker:
            done.touch()

    def run_fit(self, name: str, argv: list[str], root: Path) -> None:
        """A ``swirl fit`` stage: done when its marker is there; an interrupted one resumes from its last checkpoint."""
        last = root / "checkpoints" / "last.ckpt"
        marker = self.run_dir / f"{name}.done"
        if last.exists() and not marker.exists():
            argv = [*argv, "--ckpt_path", str(last)]
        self.run(name, argv, marker, marker=True)


def log_dirs(root: Path, stage: str | None = None) -> list[Path]:
    """The runs' log folders under ``root`` (``<config>/<stage>/version_N``), oldest first: see
    :func:`swirl_lightning.training.cli.log_dirs`."""
    from swirl_lightning.training.cli import log_dirs as find

    return find(root, stage)


def scalar_curves(root: Path, tags: tuple[str, ...]) -> dict[str, list[list[float]]]:
    """(step, value) series of ``tags`` from the TensorBoard events under ``root/tb`` (later versions win: a resumed
    fit logs to a new version)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, dict[int, float]] = {}
    for events in log_dirs(Path(root) / "tb"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in tags:
            if tag in accumulator.Tags().get("scalars", []):
                curves.setdefault(tag, {}).update({e.step: e.value for e in accumulator.Scalars(tag)})
    return {tag: sorted([step, value] for step, value in points.items()) for tag, points in curves.items()}


def read_probe(fit_root: Path) -> tuple[list[dict], dict | None] | None:
    """The ``RewardProbe`` history of the fit under ``fit_root`` (None when it wrote none): its points without the
    per-state figures, and the paired change of the per-state rewards from the first point to the last
    (:func:`significance.paired_rise`; None before two points: a rise needs two). A resumed fit logs to a new
    version; the history travels in the checkpoint, so the newest file is whole."""
    from significance import paired_rise

    probes = [folder / "probe.json" for folder in log_dirs(fit_root / "tb", "fit") if (folder / "probe.json").exists()]
    if not probes:
        return None
    history = json.loads(probes[-1].read_text())
    first, last = history[0], history[-1]
    rise = {"first_step": first["step"], "last_step": last["step"],
            **paired_rise(first["state_rewards"], last["state_rewards"])} if len(history) > 1 else None
    return [{k: v for k, v in point.items() if k != "state_rewards"} for point in history], rise
