"""``swirl judges list [NAME ...]``: every registered judge with its options (what ``judge.options`` takes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from swirl_lightning.core.config import parse_config


@dataclass
class JudgesListConfig:
    """Each registered judge's options: kind, default and what each does."""

    judges: list[str] = field(default_factory=list)
    """Only these judges, by name (all when none is named)."""


def list_main(argv: list[str]) -> int:
    """``swirl judges list``: print each judge's options (from its ``Options`` dataclass, or its factory's
    signature)."""
    from swirl_lightning.judging.base import available_judges
    from swirl_lightning.judging.options import describe_options

    config = parse_config(JudgesListConfig, argv, "swirl judges list", positional=("judges",))
    factories = available_judges()
    unknown = sorted(set(config.judges) - set(factories))
    if unknown:
        raise ValueError(f"judge: expected one of {', '.join(sorted(factories))}, got {', '.join(unknown)}")
    for name in config.judges or factories:
        print(describe_options(name, factories[name]))
    return 0
