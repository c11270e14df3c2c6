"""A short run's logs (tiny random model: `swirl validate` before training, then `swirl fit` with a validation) and a
real `tensorboard` process serving them on 127.0.0.1, shared by the HTTP and browser tests.

``SWIRL_TB_LOGDIR=<folder>`` runs the tests on existing logs instead (a quickstart's ``runs/quickstart/tb``, say);
it must hold a ``validate`` run and a ``fit`` run with validation rollouts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from swirl_lightning.testing import free_port, stop_process

ROOT = Path(__file__).resolve().parents[3]


def short_run(root: Path) -> Path:
    """`swirl validate` then `swirl fit` (swirl objective, validated after 2 steps) on conf/quickstart.yaml, shrunk
    to a tiny random model and GSM8K's reference trajectories; returns the TensorBoard folder."""
    import torch

    from swirl_lightning.cli import main

    common = ["--config", str(ROOT / "conf" / "quickstart.yaml"), "--trainer.default_root_dir", str(root),
              "--policy.name", "tiny-random", "--policy.adapter", "null", "--data.train.path", "null",
              "--data.train.reference", "true", "--task.limit", "8", "--task.max_actions", "3",
              "--sampling.max_new_tokens", "4", "--model.lora.r", "4", "--model.swirl.group_size", "2",
              "--model.evaluation.sampling.max_new_tokens", "6", "--data.validation.questions", "3",
              "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false", "--trainer.callbacks.init_args.states", "2",
              "--trainer.callbacks.init_args.samples", "2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["validate", *common]) == 0
        assert main(["fit", *common]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "tb"


@pytest.fixture(scope="session")
def logdir(tmp_path_factory) -> Path:
    given = os.environ.get("SWIRL_TB_LOGDIR")
    return Path(given) if given else short_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def tensorboard(logdir: Path):
    """The base address of a `tensorboard` process on ``logdir`` (the plugin found through its entry point)."""
    port = free_port()
    log = open(logdir.parent / f"tensorboard-{port}.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
                                "127.0.0.1", "--port", str(port), "--load_fast", "false"],
                               stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/data/plugins_listing", timeout=5).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError(f"tensorboard did not start: {(logdir.parent / log.name).read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield base
    finally:
        stop_process(process)
        log.close()
