"""A small LeNet-style digit classifier: the feature extractor of `jaxgan.metrics`.

Inception-v3 features do not fit 28x28 grayscale digits, so jaxgan measures samples
with a CNN trained on the dataset itself. It is trained once per (dataset, seed) on
the dataset's training split, deterministically given the seed, and cached as

    $JAXGAN_CACHE/classifier/<dataset>-<seed>/params.npz   the Flax params
                                              info.json    steps, test accuracy, split

($JAXGAN_CACHE defaults to ~/.cache/jaxgan; <dataset> is `data.cache_stem` of the dataset's
name: the name, or for a directory a short stem and a hash of its path). The held-out split
never seen in training (`data.load_heldout`):
- a TFDS dataset: its `test` split; a directory of IDX files: its `t10k-*` files;
- otherwise (`mnist-5k`, IDX files without t10k): the last HELDOUT_PER_CLASS (100) images
  of each class, 1,000 images for ten classes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgan import data as data_lib

NUM_CLASSES = 10
FEATURES = 128  # width of the penultimate layer: the space the Frechet distance is measured in
HELDOUT_PER_CLASS = 100
TRAIN_STEPS = 250
BATCH_SIZE = 128
LEARNING_RATE = 1e-3


class LeNet(nn.Module):
    """images (B, 28, 28, 1) in [-1, 1] -> (logits (B, 10), penultimate features (B, FEATURES))."""

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(nn.Conv(16, (5, 5), name="conv_0")(images))  # (B, 28, 28, 16)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))  # (B, 14, 14, 16)
        x = nn.relu(nn.Conv(32, (5, 5), name="conv_1")(x))  # (B, 14, 14, 32)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))  # (B, 7, 7, 32)
        x = x.reshape((x.shape[0], -1))  # (B, 1568)
        features = nn.relu(nn.Dense(FEATURES, name="dense_0")(x))  # (B, FEATURES)
        return nn.Dense(NUM_CLASSES, name="dense_1")(features), features


class Split(NamedTuple):
    """A dataset's classifier split: images (N, 28, 28, 1) in [-1, 1] and labels (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    heldout_images: np.ndarray
    heldout_labels: np.ndarray


class Classifier(NamedTuple):
    params: Any
    info: dict  # dataset, seed, steps, test_accuracy, ...


def last_per_class_split(dataset: data_lib.Dataset) -> Split:
    """Held out: the last HELDOUT_PER_CLASS images of each class; trained on: the rest."""
    heldout = np.zeros(len(dataset.labels), bool)
    for label in np.unique(dataset.labels):
        heldout[np.flatnonzero(dataset.labels == label)[-HELDOUT_PER_CLASS:]] = True
    return Split(dataset.images[~heldout], dataset.labels[~heldout], dataset.images[heldout], dataset.labels[heldout])


def load_split(name: str, data_dir: str | None = None) -> Split:
    """The classifier split of labelled dataset `name` (a `Dataset.name`): its training images and
    its held-out split, or the last of each class held out when it has none."""
    train = data_lib.load(name, data_dir)
    heldout = data_lib.load_heldout(train.name, data_dir)
    if heldout is None:
        return last_per_class_split(train)
    return Split(train.images, train.labels, heldout.images, heldout.labels)


@jax.jit
def apply(params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(logits (B, 10), features (B, FEATURES)) of images (B, 28, 28, 1)."""
    return LeNet().apply({"params": params}, images)


def predict(params, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, 10), features (N, FEATURES)) as float64 NumPy, in batches."""
    probs, feats = [], []
    for first in range(0, len(images), batch_size):
        logits, features = apply(params, jnp.asarray(images[first : first + batch_size]))
        probs.append(np.asarray(jax.nn.softmax(logits), np.float64))
        feats.append(np.asarray(features, np.float64))
    return np.concatenate(probs), np.concatenate(feats)


def accuracy(params, images: np.ndarray, labels: np.ndarray) -> float:
    probs, _ = predict(params, images)
    return float(np.mean(probs.argmax(axis=1) == labels))


def train(split: Split, seed: int, steps: int = TRAIN_STEPS, batch_size: int = BATCH_SIZE) -> Any:
    """Adam on cross-entropy for `steps` steps of shuffled batches; the same seed, the same params."""
    key = jax.random.key(seed)
    params = LeNet().init(jax.random.fold_in(key, 0), jnp.zeros((1, 28, 28, 1)))["params"]
    tx = optax.adam(LEARNING_RATE)
    images, labels = jnp.asarray(split.train_images), jnp.asarray(split.train_labels)
    n = len(images)

    def step(carry, t):
        params, opt_state = carry
        idx = jax.random.choice(jax.random.fold_in(key, t + 1), n, (batch_size,), replace=False)

        def loss_fn(p):
            logits, _ = LeNet().apply({"params": p}, images[idx])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels[idx]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(steps)))((params, tx.init(params)))
    return params


def cache_path(name: str, seed: int, cache: str | Path | None = None) -> Path:
    return Path(cache or data_lib.cache_dir()) / "classifier" / f"{data_lib.cache_stem(name)}-{seed}"


def load_or_train(
    name: str,
    seed: int = 0,
    *,
    data_dir: str | None = None,
    cache: str | Path | None = None,
    steps: int = TRAIN_STEPS,
    split: Split | None = None,
    log: Callable[[str], None] = print,
) -> Classifier:
    """The cached classifier of dataset `name` and `seed`, training (and caching) it first if needed.

    A cached classifier is used whatever `steps` it was trained for (its info says).
    """
    directory = cache_path(name, seed, cache)
    with contextlib.suppress(OSError, ValueError, KeyError):
        info = json.loads((directory / "info.json").read_text())
        template = jax.eval_shape(lambda: LeNet().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"])
        with np.load(directory / "params.npz") as f:
            flat = {k: f[k] for k in f.files}
        params = flax.serialization.from_state_dict(template, unflatten(flat))
        return Classifier(jax.tree.map(jnp.asarray, params), info)
    split = split if split is not None else load_split(name, data_dir)
    log(f"training the {name} evaluation classifier (seed {seed}, {steps} steps; once, cached in {directory})")
    start = time.perf_counter()
    params = train(split, seed, steps)
    info = {
        "dataset": name,
        "seed": seed,
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "train_images": len(split.train_images),
        "heldout_images": len(split.heldout_images),
        "test_accuracy": accuracy(params, split.heldout_images, split.heldout_labels),
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    log(f"classifier test accuracy {info['test_accuracy']:.2%} on {info['heldout_images']:,} held-out images")
    with contextlib.suppress(OSError):  # a read-only cache just means training again next time
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f"params.{os.getpid()}.tmp.npz"
        np.savez(partial, **flatten(flax.serialization.to_state_dict(params)))
        partial.replace(directory / "params.npz")
        (directory / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return Classifier(params, info)


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree
