"""A small LeNet-style digit classifier: the feature extractor of `jaxgan.metrics`.

Inception-v3 features do not fit 28x28 grayscale digits, so jaxgan measures samples
with a CNN trained on the dataset itself. It is trained once per (dataset, seed) on
the dataset's training split, deterministically given the seed (in chunks of one
`lax.scan` each, so a progress bar can follow it), and cached as

    $JAXGAN_CACHE/classifier/<dataset>-<seed>/params.msgpack   the Flax params (flax.serialization)
                                              info.json        steps, test accuracy, split, training

($JAXGAN_CACHE defaults to ~/.cache/jaxgan; <dataset> is `data.cache_stem` of the dataset's
name: the name, or for a directory a short stem and a hash of its path). A cache that cannot
be read back whole (a missing file or key, other shapes), or trained another way (its `training`
is not TRAINING), is trained again, with a notice.
The held-out split never seen in training (`data.load_heldout`):
- a TFDS dataset: its `test` split; a directory of IDX files: its `t10k-*` files;
- otherwise (`mnist-5k`, IDX files without t10k): the last HELDOUT_PER_CLASS (100) images
  of each class, 1,000 images for ten classes.

The cache is a msgpack file, not an orbax checkpoint like the runs' (`jaxgan.checkpoint`):
every process of a multi-process run builds its evaluator itself, against its own host's
cache, and orbax's save and restore wait for all processes at barriers, which would hang as
soon as one host found the cache and another did not. Each process writes its own temporary
file and renames it into place, so processes sharing a cache directory do not collide.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
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
from tqdm.auto import tqdm

from jaxgan import data as data_lib
from jaxgan import models
from jaxgan import steps as steps_lib

NUM_CLASSES = 10
FEATURES = 128  # width of the penultimate layer: the space the Frechet distance is measured in
HELDOUT_PER_CLASS = 100
TRAIN_STEPS = 250
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
PROGRESS_UPDATES = 10  # training runs in this many chunks (one scan each): the progress bar's steps
PARAMS_FILE = "params.msgpack"
INFO_FILE = "info.json"
# What the training is: a cache whose info says another (or none: before epochs of shuffled
# batches, `chunk_batch_indices`) is trained again, so that a dataset and seed give one classifier.
TRAINING = 2
INFO_KEYS = ("dataset", "seed", "steps", "test_accuracy", "heldout_images", "training")  # what readers rely on


def conv(features: int, name: str) -> models.Conv:
    """A 5x5 "same" convolution with bias, initialised as flax's nn.Conv (LeCun normal, zero bias),
    computed as `models.Conv` chooses for the backend: on CPU as matrix products, which train the
    classifier as fast as XLA's CPU convolutions do (`python -m benchmarks.classifier`,
    docs/performance.md)."""
    return models.Conv(features, 5, 1, 2, use_bias=True, kernel_init=nn.initializers.lecun_normal(), name=name)


def max_pool(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2: (B, H, W, C) -> (B, H/2, W/2, C), the values of
    nn.max_pool((2, 2), (2, 2)), as a max over reshaped axes: its gradient is a comparison per
    element, where reduce_window's (a select-and-scatter) took 40% of XLA:CPU's training step.
    Ties share the gradient (after a ReLU they are zeros, whose gradient is zero)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class LeNet(nn.Module):
    """images (B, 28, 28, 1) in [-1, 1] -> (logits (B, 10), penultimate features (B, FEATURES))."""

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(conv(16, "conv_0")(images))  # (B, 28, 28, 16)
        x = max_pool(x)  # (B, 14, 14, 16)
        x = nn.relu(conv(32, "conv_1")(x))  # (B, 14, 14, 32)
        x = max_pool(x)  # (B, 7, 7, 32)
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


def init_params(key: jax.Array) -> Any:
    return LeNet().init(key, jnp.zeros((1, 28, 28, 1)))["params"]


def abstract_params() -> Any:
    """The params' tree of jax.ShapeDtypeStruct: what a cached classifier must match."""
    return jax.eval_shape(init_params, jax.random.key(0))


def chunk_batch_indices(key: jax.Array, steps: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """The example indices of the consecutive steps `steps` (K,): (K, batch_size) int32.

    Epoch e is a fresh permutation of the examples (`steps.epoch_batch_indices(key, e, ...)`, its
    last num_examples % batch_size left out) cut into num_examples // batch_size batches; step t
    trains on batch t % that of epoch t // that. Each epoch the chunk touches is shuffled once,
    before its scan, and no other: a permutation of MNIST's 60,000 images takes 25 ms on this
    CPU, as long as the step itself, which drawing a batch per step without replacement
    (`jax.random.choice`) spent on every step.
    """
    per_epoch = num_examples // batch_size
    if per_epoch < 1:
        raise ValueError(
            f"the classifier's batch of {batch_size} needs at least as many images; there are {num_examples}"
        )
    first_epoch, last_epoch = steps[0] // per_epoch, steps[-1] // per_epoch

    def epoch(e):  # (per_epoch, batch_size); an epoch past the chunk's last is not permuted
        return jax.lax.cond(
            e <= last_epoch,
            lambda: steps_lib.epoch_batch_indices(key, e, num_examples, batch_size),
            lambda: jnp.zeros((per_epoch, batch_size), jnp.int32),
        )

    # every epoch K consecutive steps can touch, at most K // per_epoch + 2
    batches = jnp.stack([epoch(first_epoch + j) for j in range(len(steps) // per_epoch + 2)])
    return batches[steps // per_epoch - first_epoch, steps % per_epoch]  # (K, batch_size)


@functools.partial(jax.jit, static_argnames="batch_size")
def train_chunk(carry, images: jax.Array, labels: jax.Array, key: jax.Array, steps: jax.Array, *, batch_size: int):
    """Adam on cross-entropy for the consecutive steps `steps` (K,) in one scan, each on its batch
    of `chunk_batch_indices` (epochs of shuffled batches). carry: (params, Adam state) -> (carry,
    losses (K,))."""
    tx = optax.adam(LEARNING_RATE)

    def step(carry, idx):
        params, opt_state = carry

        def loss_fn(p):
            logits, _ = LeNet().apply({"params": p}, images[idx])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels[idx]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return jax.lax.scan(step, carry, chunk_batch_indices(key, steps, len(images), batch_size))


def train(
    split: Split,
    seed: int,
    steps: int = TRAIN_STEPS,
    batch_size: int = BATCH_SIZE,
    *,
    chunk: int | None = None,
    progress: bool = False,
) -> Any:
    """Adam on cross-entropy for `steps` steps of shuffled batches; the same seed, the same params.

    Runs `chunk` steps per jitted scan (default: steps / PROGRESS_UPDATES, rounded up), reading
    the last loss back after each for the progress bar; the chunking does not change the result.
    """
    key = jax.random.key(seed)
    params = init_params(jax.random.fold_in(key, 0))
    carry = (params, optax.adam(LEARNING_RATE).init(params))
    images, labels = jnp.asarray(split.train_images), jnp.asarray(split.train_labels)
    chunk = chunk or max(1, math.ceil(steps / PROGRESS_UPDATES))
    disable = not progress or jax.process_index() != 0
    with tqdm(total=steps, desc="classifier", unit="step", leave=False, disable=disable) as bar:
        for first in range(0, steps, chunk):
            t = jnp.arange(first, min(first + chunk, steps))
            carry, losses = train_chunk(carry, images, labels, key, t, batch_size=batch_size)
            bar.set_postfix(loss=f"{float(losses[-1]):.3f}")  # one host sync per chunk
            bar.update(len(t))
    return carry[0]


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
    progress: bool = True,
) -> Classifier:
    """The cached classifier of dataset `name` and `seed`, training (and caching) it first if needed.

    A cached classifier is used whatever `steps` it was trained for (its info says). A cache
    that cannot be read back whole is trained again, after a one-line notice through `log`.
    """
    directory = cache_path(name, seed, cache)
    if (directory / INFO_FILE).exists():
        try:
            return load(directory)
        except Exception as err:  # whatever is wrong with a cache, training again replaces it
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            log(f"the cached {name} classifier in {directory} cannot be read ({reason}); training it again")
    split = split if split is not None else load_split(name, data_dir)
    log(f"training the {name} evaluation classifier (seed {seed}, {steps} steps; once, cached in {directory})")
    start = time.perf_counter()
    params = train(split, seed, steps, progress=progress)
    info = {
        "dataset": name,
        "seed": seed,
        "steps": steps,
        "training": TRAINING,
        "batch_size": BATCH_SIZE,
        "train_images": len(split.train_images),
        "heldout_images": len(split.heldout_images),
        "test_accuracy": accuracy(params, split.heldout_images, split.heldout_labels),
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    log(f"classifier test accuracy {info['test_accuracy']:.2%} on {info['heldout_images']:,} held-out images")
    with contextlib.suppress(OSError):  # a read-only cache just means training again next time
        save(directory, params, info)
    return Classifier(params, info)


def load(directory: Path) -> Classifier:
    """The classifier cached in `directory`; OSError or ValueError naming what is missing or wrong."""
    info = json.loads((directory / INFO_FILE).read_text())
    if not isinstance(info, dict):
        raise ValueError(f"{INFO_FILE} is not a JSON object")
    for key in INFO_KEYS:
        if key not in info:
            raise ValueError(f"{INFO_FILE} has no {key!r}")
    if info["training"] != TRAINING:
        raise ValueError(f"{INFO_FILE} is from another classifier training ({info['training']!r}, this is {TRAINING})")
    abstract = abstract_params()
    params = flax.serialization.from_bytes(abstract, (directory / PARAMS_FILE).read_bytes())
    if jax.tree.structure(params) != jax.tree.structure(abstract):
        raise ValueError(f"{PARAMS_FILE} holds other parameters than the classifier's")
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(abstract), jax.tree.leaves(params), strict=True):
        if np.shape(got) != want.shape or np.asarray(got).dtype != want.dtype:
            raise ValueError(
                f"{PARAMS_FILE}: {jax.tree_util.keystr(path)} is {np.asarray(got).dtype}{list(np.shape(got))}"
            )
    return Classifier(jax.tree.map(jnp.asarray, params), info)


def save(directory: Path, params: Any, info: dict) -> None:
    """Write the params, then the info (whose presence says the cache is complete), each atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / PARAMS_FILE, flax.serialization.to_bytes(params))
    write_atomically(directory / INFO_FILE, (json.dumps(info, indent=2) + "\n").encode())


def write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
