"""swirl-lightning: Step-Wise Reinforcement Learning (SWiRL) for multi-step tool use, on PyTorch Lightning."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("swirl_lightning")
"""Marker for plugin hook implementations: ``@swirl_lightning.hookimpl``."""

__all__ = ["__version__", "hookimpl"]
