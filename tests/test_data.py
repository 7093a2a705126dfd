"""Datasets: pixel scaling, the embedded mnist-5k, TFDS through mock data, and `auto`."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
import torch

from jaxgan import data as data_lib


def test_scaling_is_bit_identical_to_totensor_and_normalize():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    ours = data_lib.to_model_range(pixels)
    # torchvision's ToTensor (div by 255) then Normalize((0.5,), (0.5,)) (sub mean, div std).
    theirs = torch.from_numpy(pixels).float().div(255).sub_(0.5).div_(0.5).numpy()
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    assert ours.min() == -1.0 and ours.max() == 1.0


def test_mnist_5k_is_real_digits_in_range(mnist_5k):
    assert mnist_5k.name == "mnist-5k"
    assert mnist_5k.images.shape == (5000, 28, 28, 1) and mnist_5k.images.dtype == np.float32
    assert mnist_5k.images.min() == -1.0 and mnist_5k.images.max() == 1.0
    np.testing.assert_array_equal(np.bincount(mnist_5k.labels), [500] * 10)
    # Digits are mostly background: about 80% of MNIST pixels are exactly 0 (-1 here).
    assert 0.7 < np.mean(mnist_5k.images == -1.0) < 0.9


def test_mnist_5k_cache_round_trips_and_survives_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXGAN_CACHE", str(tmp_path))
    fresh_images, fresh_labels = data_lib.load_mnist_5k()
    assert (tmp_path / "mnist-5k.npz").exists()
    cached_images, cached_labels = data_lib.load_mnist_5k()
    np.testing.assert_array_equal(fresh_images, cached_images)
    np.testing.assert_array_equal(fresh_labels, cached_labels)
    (tmp_path / "mnist-5k.npz").write_bytes(b"not an npz")
    again, _ = data_lib.load_mnist_5k()
    np.testing.assert_array_equal(again, fresh_images)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist"])
def test_tfds_datasets_load_through_data_source(name, tmp_path, monkeypatch):
    # Under mock_data, download_and_prepare is a no-op and data_source yields random images.
    monkeypatch.setattr(data_lib, "tensorflow_available", lambda: True)
    monkeypatch.setattr(data_lib, "network_reachable", lambda *a, **k: True)
    with tfds.testing.mock_data(num_examples=40):
        dataset = data_lib.load(name, str(tmp_path))
    assert dataset.name == name
    assert dataset.images.shape == (40, 28, 28, 1) and dataset.images.dtype == np.float32
    assert -1.0 <= dataset.images.min() < dataset.images.max() <= 1.0
    assert dataset.labels.shape == (40,)


def test_unknown_and_unsuitable_datasets_are_refused_with_the_valid_names(tmp_path):
    with pytest.raises(data_lib.DataError, match="unknown dataset 'mnistt'; choose one of: auto, mnist-5k, mnist"):
        data_lib.check_name("mnistt", str(tmp_path))
    with pytest.raises(data_lib.DataError, match="'cifar10' is not 28x28 grayscale"):
        data_lib.check_name("cifar10", str(tmp_path))
    data_lib.check_name("auto")
    data_lib.check_name("mnist-5k")


def test_unprepared_tfds_without_tensorflow_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data_lib, "tensorflow_available", lambda: False)
    with pytest.raises(data_lib.DataError, match=r"needs TensorFlow: pip install 'jaxgan\[tensorflow\]'"):
        data_lib.load("mnist", str(tmp_path))


def test_unprepared_tfds_without_network_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(data_lib, "tensorflow_available", lambda: True)
    monkeypatch.setattr(data_lib, "network_reachable", lambda *a, **k: False)
    with pytest.raises(data_lib.DataError, match=r"'fashion_mnist' is not prepared .* the network is unreachable"):
        data_lib.load("fashion_mnist", str(tmp_path))


def test_auto_falls_back_to_mnist_5k_with_a_notice(tmp_path, monkeypatch):
    notices = []
    monkeypatch.setattr(data_lib, "tensorflow_available", lambda: True)
    monkeypatch.setattr(data_lib, "network_reachable", lambda *a, **k: False)
    assert data_lib.resolve_auto(str(tmp_path), notices.append) == "mnist-5k"
    (notice,) = notices
    assert "network is unreachable" in notice and "--dataset mnist" in notice and "\n" not in notice
    monkeypatch.setattr(data_lib, "tensorflow_available", lambda: False)
    assert data_lib.resolve_auto(str(tmp_path), notices.append) == "mnist-5k"
    assert "needs TensorFlow" in notices[-1]


def test_auto_prefers_prepared_mnist(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    notices = []
    assert data_lib.resolve_auto(str(tmp_path), notices.append) == "mnist"
    assert notices == []


def test_auto_downloads_when_the_network_is_there(tmp_path, monkeypatch):
    prepared = []
    monkeypatch.setattr(data_lib, "tensorflow_available", lambda: True)
    monkeypatch.setattr(data_lib, "network_reachable", lambda *a, **k: True)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", lambda self, **kw: prepared.append(kw))
    assert data_lib.resolve_auto(str(tmp_path), print) == "mnist"
    assert prepared == [{"file_format": "array_record"}]


def test_network_probe_says_no_for_a_closed_local_port():
    import socket

    with socket.socket() as s:  # bind then close: nothing listens on this port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert data_lib.network_reachable(("127.0.0.1", port), timeout=2.0) is False
