"""jaxgan: the classic MLP GAN on MNIST, pure-functionally in JAX/Flax/optax."""

__version__ = "0.1.0"
