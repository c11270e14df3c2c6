"""What the benchmark scripts share: the machine description in every result, and running one side of a
comparison in its own subprocess (so its peak memory and threads are its own)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path


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


def add_side_options(parser: argparse.ArgumentParser) -> None:
    """The hidden options :func:`run_side` passes to the subprocess that runs one side."""
    parser.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)


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
