"""jaxgan: the classic MLP GAN on MNIST, pure-functionally in JAX/Flax/optax."""

from jaxgan import signals as _signals

__version__ = "0.1.0"

_signals.exit_during_startup()  # `python -m jaxgan.X`: Ctrl-C stops it at once, even while JAX is imported
