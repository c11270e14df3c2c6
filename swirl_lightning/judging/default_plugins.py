"""The built-in judges' plugin: registers them through the same ``register_judges`` hook a third party implements.

:func:`~swirl_lightning.judging.base.available_judges` loads this module by name, so that the registry in
:mod:`.base` imports no judge while each judge imports :mod:`.base`.
"""

from __future__ import annotations

from collections.abc import Callable

from swirl_lightning import hookimpl
from swirl_lightning.judging.controls import FormatJudge, RandomJudge
from swirl_lightning.judging.local_lm import LLMGrader, ProcessJudge
from swirl_lightning.judging.outcome import ExactMatchJudge, NumericJudge, TokenF1Judge
from swirl_lightning.judging.reference import ReferenceJudge
from swirl_lightning.judging.served import ServedGrader, ServedJudge


@hookimpl
def register_judges(register: Callable[..., None]) -> None:
    """Register the built-in judges."""
    register(ProcessJudge, name="process")
    register(ReferenceJudge, name="reference")
    register(NumericJudge, name="numeric")
    register(ExactMatchJudge, name="qa_em")
    register(TokenF1Judge, name="qa_f1")
    register(LLMGrader, name="grader")
    register(ServedJudge, name="served")
    register(ServedGrader, name="served_grader")
    register(RandomJudge, name="random")
    register(FormatJudge, name="format")
