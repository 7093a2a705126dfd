"""`python -m jaxgan.train`: train a GAN. A thin entry point; the logic lives in libraries.

The pure training step is re-exported here under the names other code uses:
`jaxgan.train.create_state(config, rng)` and `jaxgan.train.train_step(state, real, z_d, z_g)`.
"""

import sys

from jaxgan.cli import main
from jaxgan.steps import (
    GANState,
    create_state,
    epoch_batch_indices,
    step_noise,
    steps_noise,
    train_epoch,
    train_step,
    train_step_keyed,
    train_steps,
)

__all__ = [
    "GANState",
    "create_state",
    "epoch_batch_indices",
    "main",
    "step_noise",
    "steps_noise",
    "train_epoch",
    "train_step",
    "train_step_keyed",
    "train_steps",
]

if __name__ == "__main__":
    sys.exit(main())
