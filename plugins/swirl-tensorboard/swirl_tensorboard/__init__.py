"""swirl-tensorboard: the "Trajectories" dashboard for TensorBoard (see :mod:`swirl_tensorboard.plugin`)."""

__version__ = "0.1.0"
