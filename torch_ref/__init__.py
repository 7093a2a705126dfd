"""torch_ref: the seed recipes in plain PyTorch, mirroring jaxgan file for file.

Used by jaxgan's parity tests (same weights, data and noise -> the same losses, step by
step) and by the benchmarks (the PyTorch side of every throughput ratio).

Importing the package needs no torch: its names load their module (and torch) on first
use, so `python -m torch_ref.train` without torch says what to install instead of a
traceback, and runs its module once rather than twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch_ref.models import Discriminator, Generator, build_models
    from torch_ref.steps import TorchGAN, create_state, train_step

EXPORTS = {
    "Discriminator": "torch_ref.models",
    "Generator": "torch_ref.models",
    "build_models": "torch_ref.models",
    "TorchGAN": "torch_ref.steps",
    "create_state": "torch_ref.steps",
    "train_step": "torch_ref.steps",
}
__all__ = ["Discriminator", "Generator", "TorchGAN", "build_models", "create_state", "train_step"]


def __getattr__(name: str):
    if name not in EXPORTS:
        raise AttributeError(f"module 'torch_ref' has no attribute {name!r}")
    from jaxgan.cli import require

    require("torch")  # ModuleNotFoundError naming the extra to install
    return getattr(importlib.import_module(EXPORTS[name]), name)
