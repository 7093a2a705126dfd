"""Datasets: pixel scaling, the embedded mnist-5k, IDX files, TFDS files written locally, and `auto`."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
import torch

import jaxgan.main as train_cli
from jaxgan import classifier
from jaxgan import data as data_lib

REPO = Path(__file__).resolve().parents[1]


def fake_digits(n: int, seed: int = 0, shape=(28, 28)) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 pixels (n, *shape, 1) (every byte value appears) and labels 0..9 (n,)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape, 1), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)


def idx_bytes(array: np.ndarray, magic: bytes | None = None) -> bytes:
    """An IDX file of uint8 `array`: magic (0, 0, 0x08, ndim), the dims as big-endian uint32, the bytes."""
    header = magic or bytes([0, 0, 0x08, array.ndim])
    return header + np.asarray(array.shape, ">u4").tobytes() + array.astype(np.uint8).tobytes()


def write_idx(directory: Path, split: str, pixels: np.ndarray, labels: np.ndarray, gz: bool = False) -> None:
    """`split`-images-idx3-ubyte and `split`-labels-idx1-ubyte (.gz when gz) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for kind, array in (
        ("images-idx3", pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels),
        ("labels-idx1", labels),
    ):
        data = idx_bytes(array)
        name = f"{split}-{kind}-ubyte"
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)


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


@pytest.mark.slow
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
def test_tfds_datasets_load_their_train_and_test_splits_exactly(name, tmp_path, write_tfds):
    train, test = fake_digits(40, seed=1), fake_digits(10, seed=2)
    write_tfds(name, tmp_path, {"train": train, "test": test})
    dataset = data_lib.load(name, str(tmp_path))
    assert (dataset.name, dataset.description) == (name, f"TFDS {name} (train split)")
    assert dataset.images.dtype == np.float32 and dataset.labels.dtype == np.int32
    assert examples(dataset.images, dataset.labels) == examples(data_lib.to_model_range(train[0]), train[1])
    heldout = data_lib.load_heldout(name, str(tmp_path))
    assert examples(heldout.images, heldout.labels) == examples(data_lib.to_model_range(test[0]), test[1])


def examples(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """The (image, label) pairs in a canonical order: TFDS shuffles the records it writes."""
    return sorted(image.tobytes() + bytes([label]) for image, label in zip(images, labels, strict=True))


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
    monkeypatch.chdir(tmp_path)  # no ./data/MNIST/raw here
    notices = []
    monkeypatch.setattr(data_lib, "tensorflow_available", lambda: True)
    monkeypatch.setattr(data_lib, "network_reachable", lambda *a, **k: False)
    assert data_lib.resolve_auto(str(tmp_path), notices.append) == "mnist-5k"
    (notice,) = notices
    assert "network is unreachable" in notice and "--dataset mnist" in notice and "\n" not in notice
    assert "--dataset ./data with torchvision's MNIST files" in notice


def test_auto_without_tensorflow_says_so_without_trying_to_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data_lib, "tensorflow_available", lambda: False)
    monkeypatch.setattr(data_lib, "network_reachable", lambda *a, **k: pytest.fail("probed the network"))
    notices = []
    assert data_lib.resolve_auto(str(tmp_path), notices.append) == "mnist-5k"
    (notice,) = notices
    assert "preparing it needs TensorFlow;" in notice and "\n" not in notice
    assert notice.count("pip install 'jaxgan[tensorflow]'") == 1 and "--dataset ./data" in notice


def test_auto_prefers_prepared_mnist(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    notices = []
    assert data_lib.resolve_auto(str(tmp_path), notices.append) == "mnist"
    assert notices == []


def test_auto_downloads_when_the_network_is_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
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


# ---------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_files_round_trip_to_the_written_bytes(tmp_path, gz):
    pixels, labels = fake_digits(50)
    write_idx(tmp_path / "fashion", "train", pixels, labels, gz=gz)
    dataset = data_lib.load(str(tmp_path / "fashion"))
    np.testing.assert_array_equal(dataset.images, data_lib.to_model_range(pixels))
    np.testing.assert_array_equal(dataset.labels, labels)
    assert dataset.images.dtype == np.float32 and dataset.labels.dtype == np.int32
    # The name is a spec that loads the same data again, from anywhere.
    assert dataset.name == str((tmp_path / "fashion").resolve())
    assert dataset.description == f"IDX files in {dataset.name} (train)"
    np.testing.assert_array_equal(data_lib.load(dataset.name).images, dataset.images)
    assert data_lib.load_heldout(dataset.name) is None  # no t10k files


def test_torchvision_root_and_relative_paths(tmp_path, monkeypatch):
    pixels, labels = fake_digits(20)
    write_idx(tmp_path / "data" / "FashionMNIST" / "raw", "train", pixels, labels, gz=True)
    monkeypatch.chdir(tmp_path)
    for spec in ("./data", "data/FashionMNIST", str(tmp_path / "data" / "FashionMNIST" / "raw")):
        dataset = data_lib.load(spec)
        assert dataset.name == str(tmp_path.resolve() / "data" / "FashionMNIST" / "raw")
        assert dataset.description.startswith("Fashion-MNIST IDX files in /")
        np.testing.assert_array_equal(dataset.labels, labels)
    write_idx(tmp_path / "data" / "MNIST" / "raw", "train", pixels, labels)
    with pytest.raises(data_lib.DataError, match=r"holds several datasets \(.*MNIST/raw, .*FashionMNIST/raw\)"):
        data_lib.load("./data")


def test_t10k_files_are_the_heldout_split(tmp_path):
    train, test = fake_digits(60, seed=1), fake_digits(30, seed=2)
    write_idx(tmp_path / "MNIST" / "raw", "train", *train)
    write_idx(tmp_path / "MNIST" / "raw", "t10k", *test, gz=True)
    heldout = data_lib.load_heldout(data_lib.load(str(tmp_path)).name)
    assert heldout.description.endswith("MNIST/raw (t10k)")
    np.testing.assert_array_equal(heldout.images, data_lib.to_model_range(test[0]))
    np.testing.assert_array_equal(heldout.labels, test[1])
    split = classifier.load_split(str(tmp_path))  # what the evaluation classifier and FD use
    assert (len(split.train_images), len(split.heldout_images)) == (60, 30)
    np.testing.assert_array_equal(split.heldout_labels, test[1])


def test_without_t10k_the_classifier_holds_out_the_last_of_each_class(tmp_path):
    pixels, labels = fake_digits(2000)
    write_idx(tmp_path, "train", pixels, labels)
    split = classifier.load_split(str(tmp_path))
    assert len(split.heldout_images) == 10 * classifier.HELDOUT_PER_CLASS
    assert len(split.train_images) == 2000 - 10 * classifier.HELDOUT_PER_CLASS


def test_auto_finds_torchvision_mnist_in_the_working_directory(tmp_path, monkeypatch):
    pixels, labels = fake_digits(30)
    write_idx(tmp_path / "data" / "MNIST" / "raw", "train", pixels, labels, gz=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data_lib, "tensorflow_available", lambda: pytest.fail("tried to download"))
    notices = []
    dataset = data_lib.load("auto", str(tmp_path / "tfds"), notify=notices.append)  # no TFDS mnist prepared there
    assert dataset.name == str(tmp_path.resolve() / "data" / "MNIST" / "raw") and notices == []
    assert dataset.description.startswith("MNIST IDX files in ")
    np.testing.assert_array_equal(dataset.labels, labels)


def truncated_gz(directory: Path) -> None:
    write_idx(directory, "train", *fake_digits(50), gz=True)
    images = directory / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-100])


def truncated_plain(directory: Path) -> None:
    write_idx(directory, "train", *fake_digits(50))
    images = directory / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-28])


def wrong_magic(directory: Path) -> None:
    pixels, labels = fake_digits(50)
    write_idx(directory, "train", pixels, labels)
    (directory / "train-images-idx3-ubyte").write_bytes(idx_bytes(pixels[..., 0], magic=b"\x12\x34\x08\x03"))


def images_32x32(directory: Path) -> None:
    write_idx(directory, "train", *fake_digits(50, shape=(32, 32)))


def colour_images(directory: Path) -> None:
    pixels, labels = fake_digits(50, shape=(28, 28, 3))  # (50, 28, 28, 3, 1)
    write_idx(directory, "train", pixels[..., 0, :], labels)
    (directory / "train-images-idx3-ubyte").write_bytes(idx_bytes(pixels[..., 0]))  # an RGB idx4 file


def fewer_labels(directory: Path) -> None:
    pixels, labels = fake_digits(50)
    write_idx(directory, "train", pixels, labels[:49], gz=True)


def no_idx_files(directory: Path) -> None:
    directory.mkdir()
    (directory / "README").write_text("not a dataset")


BAD_DATASETS = {
    "truncated gz": (truncated_gz, r"train-images-idx3-ubyte.gz: truncated or corrupt gzip file"),
    "truncated": (truncated_plain, r"train-images-idx3-ubyte: truncated: the header announces 50 images"),
    "wrong magic": (wrong_magic, r"not an IDX file \(magic number 0x12340803, expected 0x00000803\)"),
    "32x32": (images_32x32, r"train-images-idx3-ubyte: images are 32 x 32, expected 28 x 28 single-channel"),
    "colour": (colour_images, r"train-images-idx3-ubyte: images are 28 x 28 x 3, expected 28 x 28 single-channel"),
    "label count": (fewer_labels, r"train-labels-idx1-ubyte.gz: 49 labels for the 50 images"),
    "no IDX files": (
        no_idx_files,
        r"no IDX files in .*bad: looked for train-images-idx3-ubyte\[.gz\] and train-labels-idx1-ubyte\[.gz\] "
        r"in it, in raw/ and in MNIST/raw, FashionMNIST/raw, KMNIST/raw",
    ),
    "missing": (lambda directory: None, r"dataset directory '.*bad' does not exist"),
}


@pytest.mark.parametrize("case", BAD_DATASETS)
def test_bad_idx_datasets_are_one_line_errors_naming_the_problem(case, tmp_path, capsys):
    make, message = BAD_DATASETS[case]
    make(tmp_path / "bad")
    with pytest.raises(data_lib.DataError, match=message) as raised:
        data_lib.load(str(tmp_path / "bad"))
    assert "\n" not in str(raised.value)
    argv = ["--preset", "tiny", "--dataset", str(tmp_path / "bad"), "--epochs", "1", "--workdir", str(tmp_path / "w")]
    assert train_cli.main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m jaxgan.train: error: ") and err.count("\n") == 1
    assert raised.value.args[0] in err


@pytest.mark.slow
def test_bad_idx_file_through_the_entry_point_exits_2_without_a_traceback(tmp_path):
    truncated_gz(tmp_path / "bad")
    argv = ["--preset", "tiny", "--dataset", str(tmp_path / "bad"), "--workdir", str(tmp_path / "w"), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "jaxgan.train", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "truncated or corrupt gzip file" in proc.stderr


def test_check_name_accepts_idx_directories_and_explains_missing_ones(tmp_path, monkeypatch):
    write_idx(tmp_path / "data" / "KMNIST" / "raw", "train", *fake_digits(10))
    monkeypatch.chdir(tmp_path)
    data_lib.check_name("./data")
    data_lib.check_name(str(tmp_path / "data"))
    with pytest.raises(data_lib.DataError, match=r"dataset directory '\./nope' does not exist"):
        data_lib.check_name("./nope")
    with pytest.raises(data_lib.DataError, match=r"unknown dataset 'data'.*; for the directory 'data', write \./data"):
        data_lib.check_name("data", str(tmp_path / "tfds"))


def test_cache_stems_are_safe_file_names():
    assert data_lib.cache_stem("mnist-5k") == "mnist-5k" and data_lib.cache_stem("fashion_mnist") == "fashion_mnist"
    a, b = data_lib.cache_stem("/home/a/data/MNIST/raw"), data_lib.cache_stem("/home/b/data/MNIST/raw")
    assert a.startswith("MNIST-raw-") and b.startswith("MNIST-raw-") and a != b
    assert "/" not in data_lib.cache_stem("emnist/letters") and data_lib.cache_stem("/") != ""
    assert classifier.cache_path("/home/a/data/MNIST/raw", 3, "/c") == Path(f"/c/classifier/{a}-3")
