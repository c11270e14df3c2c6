"""The training objectives: what an objective is and gets (:mod:`.base`), the built-ins (:mod:`.rows`: ``sft`` and
``offline``; :mod:`.swirl`: step-wise RL) and their plugin (:mod:`.default_plugins`)."""

from swirl_lightning.training.objectives.base import (
    Objective,
    ObjectiveParts,
    PreparedBatch,
    Rewards,
    TrainablePolicy,
    available_objectives,
    make_objective,
    objective_class,
)

__all__ = ["Objective", "ObjectiveParts", "PreparedBatch", "Rewards", "TrainablePolicy", "available_objectives",
           "make_objective", "objective_class"]
