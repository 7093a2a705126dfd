"""The evaluator's LeNet classifier in plain PyTorch (mirrors jaxgan/classifier.py).

    conv_0  Conv2d(1, 16, 5, padding=2), ReLU, MaxPool2d(2)    (B, 16, 14, 14)
    conv_1  Conv2d(16, 32, 5, padding=2), ReLU, MaxPool2d(2)   (B, 32, 7, 7)
    dense_0 Linear(1568, FEATURES), ReLU                       (B, FEATURES): the features
    dense_1 Linear(FEATURES, 10)                               (B, 10): the logits

The pooled maps are flattened in jaxgan's NHWC order (h, w, c), so a flax parameter tree converts
by transposes alone (`state_dict_from_flax`). Trained as jaxgan's: Adam (lr LEARNING_RATE) on the
mean cross-entropy of a batch (`train_step`). benchmarks/classifier.py times its eager step against
jaxgan's scan; tests/test_classifier_parity.py checks both give the same losses.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from jaxgan.classifier import FEATURES, LEARNING_RATE, NUM_CLASSES


class LeNet(nn.Module):
    """images (B, 1, 28, 28) in [-1, 1] -> (logits (B, 10), penultimate features (B, FEATURES))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_0 = nn.Conv2d(1, 16, 5, padding=2)
        self.conv_1 = nn.Conv2d(16, 32, 5, padding=2)
        self.dense_0 = nn.Linear(7 * 7 * 32, FEATURES)
        self.dense_1 = nn.Linear(FEATURES, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = nn.functional.max_pool2d(torch.relu(self.conv_0(images)), 2)  # (B, 16, 14, 14)
        x = nn.functional.max_pool2d(torch.relu(self.conv_1(x)), 2)  # (B, 32, 7, 7)
        x = x.permute(0, 2, 3, 1).flatten(1)  # (B, 1568) in (h, w, c) order, as jaxgan's reshape
        features = torch.relu(self.dense_0(x))
        return self.dense_1(features), features


def state_dict_from_flax(params: Any) -> OrderedDict:
    """jaxgan.classifier's params -> LeNet's state dict: conv kernels (5, 5, in, out) -> weights
    (out, in, 5, 5), dense kernels (in, out) -> weights (out, in), biases as they are."""
    from jaxgan.convert import torch_weight

    state = OrderedDict()
    for name, layer in params.items():
        state[f"{name}.weight"] = torch.from_numpy(torch_weight(layer["kernel"]))
        state[f"{name}.bias"] = torch.from_numpy(np.asarray(layer["bias"]).copy())
    return state


def create(params: Any | None = None, seed: int = 0) -> tuple[LeNet, torch.optim.Adam]:
    """A LeNet (from jaxgan's `params` when given, else torch's default init under `seed`) and its Adam."""
    torch.manual_seed(seed)
    model = LeNet()
    if params is not None:
        model.load_state_dict(state_dict_from_flax(params))
    return model, torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)


def train_step(model: LeNet, optimizer: torch.optim.Adam, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One Adam step on the mean cross-entropy of images (B, 1, 28, 28), labels (B,); the loss before it."""
    logits, _ = model(images)
    loss = nn.functional.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()
