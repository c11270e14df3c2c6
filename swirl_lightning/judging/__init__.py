"""Stage 3 and the reward of stage 4: step and outcome judges behind explicit protocols, judging many steps with an
on-disk cache, and ``swirl filter``. Imports the core only."""
