"""Quiet output: the dependency messages that ask the user to do nothing are silenced, in every process of a command
(the ``swirl`` command calls :func:`quiet_dependencies` first, and so does each worker it spawns). Everything else
still shows; ``tests/core/test_quiet.py`` runs the stages with every other warning turned into an error."""

from __future__ import annotations

import logging
import os
import warnings

# Messages from dependencies that ask the user to do nothing: a deprecation one library hits inside another, a tip to
# install a cloud product, a progress bar for loading a small model's tensors. Everything else still shows.
DEPENDENCY_NOISE = (
    # (category, message, module the warning is attributed to)
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated", ""),  # Lightning's pytree helper on torch 2.1x
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated", ""),  # PEFT asks transformers by its old name
    (DeprecationWarning, r"`torch.jit.script_method` is deprecated", ""),  # bitsandbytes, imported by PEFT
    (DeprecationWarning, r"", r"lightning\."),  # Lightning's own use of deprecated APIs (jsonargparse's, torch's)
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


class _DropOptionalKernels(logging.Filter):
    """bitsandbytes (0.50+) logs, at import on a CPU, that an optional hub kernel for 4-bit layers did not load: it
    falls back to its own code, and the hub cannot be reached here anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "from kernels-community" not in str(record.msg)


def quiet_dependencies() -> None:
    """Silence :data:`DEPENDENCY_NOISE`, Lightning's install tips and transformers' weight-loading bar."""
    for category, message, module in DEPENDENCY_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropTips())
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropOptionalKernels())
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
