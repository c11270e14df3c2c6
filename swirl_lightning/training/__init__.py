"""Stage 4: trajectories as token rows and states, packing, the pure-torch losses, the objectives, the policy, the
LightningModule and DataModule, callbacks, and the ``swirl fit/validate/test/predict`` CLI."""
