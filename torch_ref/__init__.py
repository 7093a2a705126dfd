"""torch_ref: the seed recipes in plain PyTorch, mirroring jaxgan file for file.

Used by jaxgan's parity tests (same weights, data and noise -> the same losses, step by
step) and by the benchmarks (the PyTorch side of every throughput ratio).
"""

from torch_ref.models import Discriminator, Generator, build_models
from torch_ref.train import TorchGAN, create_state, train_step

__all__ = ["Discriminator", "Generator", "TorchGAN", "build_models", "create_state", "train_step"]
