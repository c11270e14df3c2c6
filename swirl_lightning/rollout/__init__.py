"""Stages 1 and 5: the batched multi-turn generation engine, the rollout loop with live tools, ``swirl generate``
and live evaluation. Imports the core and judging."""
