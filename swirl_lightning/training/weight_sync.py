"""Weights that follow training on a vLLM server: the LoRA adapter, re-published every ``engine.sync_every`` updates.

Each publication is a *version*: the optimizer step the adapter was saved at. It goes to a folder of its own
(``<root>/vllm_adapters/<session>/v<step>``) and is loaded under a name of its own (``policy-<session>-v<step>``);
then the previous version is unloaded and its folder removed. A version's folder or name is never used twice: vLLM
keys its prefix cache by adapter name, so an adapter reloaded under an old name (or from an old path) would be
served with keys and values computed by the old weights. ``<session>`` differs between runs and resumptions, so a
resumed run (a fresh server, but the same steps) does not reuse the names or folders of the run it resumes either.

Actions record the version that sampled them; ``train/policy_staleness`` (optimizer steps between that version and
the weights being updated) is at most ``sync_every - 1``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from torch import nn

from swirl_lightning.rollout.vllm_server import VllmServer


class AdapterSync:
    """Publishes a PEFT model's adapter to a vLLM server as new versions (see the module docstring)."""

    def __init__(self, server: VllmServer, folder: str | Path, every: int = 1, session: str | None = None):
        self.server = server
        self.session = session or f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.folder = Path(folder) / self.session
        self.every = every
        self.version: int | None = None
        """The version the server samples with now (``None`` before the first publication)."""
        self.name: str | None = None
        self._used: set[str] = set()

    def serve(self, lm: nn.Module, step: int) -> tuple[str, int]:
        """The adapter name to sample with at optimizer step ``step`` and its version: a new one is published first
        when none is, or when the served one is ``every`` or more steps old."""
        if self.version is None or step - self.version >= self.every:
            self.publish(lm, step)
        assert self.name is not None and self.version is not None  # publish() set both
        return self.name, self.version

    def publish(self, lm: nn.Module, version: int) -> None:
        """Save ``lm``'s adapter as ``version``, load it on the server, and unload the one it replaces."""
        name, folder = f"policy-{self.session}-v{version}", self.folder / f"v{version}"
        if name in self._used or folder.exists():
            raise ValueError(f"adapter version {version} was published before ({name}, {folder}): a reused name or "
                             "folder would let the server answer from keys and values of older weights")
        if not hasattr(lm, "peft_config"):
            raise TypeError("only a LoRA (PEFT) policy can be synced to a vLLM server: set lora.r > 0")
        self._used.add(name)
        lm.save_pretrained(folder)
        self.server.load_adapter(name, folder)
        previous, previous_folder = self.name, self.folder / f"v{self.version}"
        self.name, self.version = name, version
        if previous is not None:
            self.server.unload_adapter(previous)
            shutil.rmtree(previous_folder, ignore_errors=True)
