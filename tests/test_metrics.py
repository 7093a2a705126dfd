"""Sample-quality metrics: the formulas on known cases, the classifier's cache, then the classifier-based
metrics on real, noise and one-digit image sets (with a quickly trained classifier, see
conftest.quality_cache: slow)."""

import json
import re

import flax.serialization
import jax
import numpy as np
import pytest

from jaxgan import classifier, metrics


@pytest.fixture(scope="module")
def features():
    """Two correlated 16-d feature sets of 400 points with different means and covariances."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(16, 16))
    a = rng.normal(size=(400, 16)) @ mix
    b = rng.normal(size=(400, 16)) @ (mix + 0.3 * rng.normal(size=(16, 16))) + 0.5
    return a, b


def test_frechet_distance_of_identical_features_is_zero(features):
    a, _ = features
    stats = metrics.gaussian_stats(a)
    assert metrics.frechet_distance(*stats, *stats) == pytest.approx(0, abs=1e-8)


def test_frechet_distance_agrees_with_scipy_sqrtm(features):
    a, b = features
    direct = metrics.frechet_distance_sqrtm(a, b)
    ours = metrics.frechet_distance(*metrics.gaussian_stats(a), *metrics.gaussian_stats(b))
    assert direct > 1  # a real distance, not a degenerate case
    assert ours == pytest.approx(direct, rel=1e-7)
    assert ours == pytest.approx(metrics.frechet_distance(*metrics.gaussian_stats(b), *metrics.gaussian_stats(a)))


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift():
    sigma = np.diag([1.0, 2.0, 3.0])
    assert metrics.frechet_distance(np.zeros(3), sigma, np.array([1.0, 2.0, 0.0]), sigma) == pytest.approx(5.0)
    # Same mean, variances 1 and 4 in 1-d: (sqrt(1) - sqrt(4))^2 = 1.
    assert metrics.frechet_distance(np.zeros(1), np.eye(1), np.zeros(1), 4 * np.eye(1)) == pytest.approx(1.0)


def test_score_coverage_and_kl_on_known_distributions():
    one_hot = np.eye(10)[np.arange(1000) % 10]
    assert metrics.classifier_score(one_hot) == pytest.approx(10, rel=1e-6)
    assert metrics.classifier_score(np.full((100, 10), 0.1)) == pytest.approx(1)
    np.testing.assert_allclose(metrics.coverage(one_hot), np.full(10, 0.1))
    assert metrics.kl_to_uniform(np.full(10, 0.1)) == pytest.approx(0)
    assert metrics.kl_to_uniform(np.eye(10)[3]) == pytest.approx(np.log(10))


def test_heldout_split_is_100_per_digit_and_disjoint(mnist_5k):
    split = classifier.last_per_class_split(mnist_5k)
    assert len(split.heldout_images) == 1000 and len(split.train_images) == 4000
    assert np.array_equal(np.bincount(split.heldout_labels), np.full(10, 100))
    train = {x.tobytes() for x in split.train_images}
    assert not any(x.tobytes() in train for x in split.heldout_images)


@pytest.mark.slow
def test_classifier_is_cached_with_its_accuracy_and_beats_chance(quality_cache, mnist_5k):
    directory = classifier.cache_path("mnist-5k", 0, quality_cache)
    info = json.loads((directory / "info.json").read_text())
    assert info["steps"] == 30 and info["heldout_images"] == 1000
    assert info["test_accuracy"] > 0.5  # 30 steps; the real classifier trains for 250
    loaded = classifier.load_or_train("mnist-5k", 0, cache=quality_cache, log=pytest.fail)  # no retraining
    split = classifier.last_per_class_split(mnist_5k)
    acc = classifier.accuracy(loaded.params, split.heldout_images, split.heldout_labels)
    assert acc == info["test_accuracy"]


@pytest.mark.slow
def test_a_stale_cache_is_trained_again_after_a_one_line_notice(classifier_training):
    cache, log = classifier_training
    directory = classifier.cache_path("mnist-5k", 0, cache)
    assert log[0] == (
        f"the cached mnist-5k classifier in {directory} cannot be read "
        "(info.json has no 'test_accuracy'); training it again"
    )
    assert log[1].startswith("training the mnist-5k evaluation classifier (seed 0, 30 steps")
    assert "test_accuracy" in json.loads((directory / "info.json").read_text())


def write_params(directory, params):
    (directory / classifier.PARAMS_FILE).write_bytes(flax.serialization.to_bytes(params))


def write_bytes_cut_in_half(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def rewrite_info(directory, drop: str | None = None, **changes):
    """The cached info.json with key `drop` left out and `changes` made."""
    info = json.loads((directory / classifier.INFO_FILE).read_text())
    info = {k: v for k, v in {**info, **changes}.items() if k != drop}
    (directory / classifier.INFO_FILE).write_text(json.dumps(info))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d, p: rewrite_info(d, drop="test_accuracy"), "info.json has no 'test_accuracy'"),
        (lambda d, p: (d / classifier.INFO_FILE).write_text("{"), "Expecting property name"),
        (
            lambda d, p: rewrite_info(d, drop="training"),
            "info.json has no 'training'",
        ),  # a cache from before epochs of batches
        (lambda d, p: rewrite_info(d, training=1), "info.json is from another classifier training (1, this is 2)"),
        (lambda d, p: (d / classifier.INFO_FILE).write_text("[]"), "info.json is not a JSON object"),
        (lambda d, p: (d / classifier.PARAMS_FILE).unlink(), "No such file"),
        (lambda d, p: write_bytes_cut_in_half(d / classifier.PARAMS_FILE), "incomplete input"),
        (lambda d, p: write_params(d, {"dense": p["dense_0"]}), "keys"),
        (
            lambda d, p: write_params(d, {**p, "dense_1": {**p["dense_1"], "bias": np.zeros(3, np.float32)}}),
            "['dense_1']['bias'] is float32[3]",
        ),
        (lambda d, p: write_params(d, jax.tree.map(lambda x: np.asarray(x, np.float64), p)), "float64"),
    ],
)
def test_a_damaged_cache_is_not_read(damage, message, tmp_path):
    params = jax.tree.map(lambda leaf: np.ones(leaf.shape, leaf.dtype), classifier.abstract_params())
    info = {"dataset": "mnist-5k", "seed": 0, "steps": 1, "test_accuracy": 0.1, "heldout_images": 1000, "training": 2}
    classifier.save(tmp_path, params, info)
    assert classifier.load(tmp_path).info == info
    damage(tmp_path, params)
    with pytest.raises((OSError, ValueError), match=re.escape(message)):
        classifier.load(tmp_path)


def test_classifier_batches_are_epochs_of_shuffled_examples_whatever_the_chunks():
    key = jax.random.key(7)
    every = np.asarray(classifier.chunk_batch_indices(key, jax.numpy.arange(9), 50, 16))  # 3 batches per epoch
    assert every.shape == (9, 16)
    epochs = every.reshape(3, 48)
    assert all(len(set(epoch)) == 48 and set(epoch) <= set(range(50)) for epoch in epochs)  # no repeat in an epoch
    assert len({tuple(epoch) for epoch in epochs}) == 3  # a fresh order each epoch
    for first, last in ((0, 1), (2, 5), (4, 9), (8, 9)):  # chunks starting and ending anywhere in an epoch
        chunk = classifier.chunk_batch_indices(key, jax.numpy.arange(first, last), 50, 16)
        np.testing.assert_array_equal(np.asarray(chunk), every[first:last])
    with pytest.raises(ValueError, match="batch of 16 needs at least as many images; there are 10"):
        classifier.chunk_batch_indices(key, jax.numpy.arange(2), 10, 16)


@pytest.mark.slow
def test_training_in_chunks_gives_the_params_of_one_scan(mnist_5k, capsys):
    split = classifier.Split(mnist_5k.images[:40], mnist_5k.labels[:40], None, None)  # 2 batches per epoch
    one_scan = classifier.train(split, seed=3, steps=5, batch_size=16, chunk=5)
    chunked = classifier.train(split, seed=3, steps=5, batch_size=16, chunk=3, progress=True)  # epoch 1 split
    for a, b in zip(jax.tree.leaves(one_scan), jax.tree.leaves(chunked), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert "classifier" in capsys.readouterr().err  # the progress bar


@pytest.mark.slow
def test_real_vs_real_is_the_ceiling_and_far_below_noise(evaluator):
    ceiling = evaluator.ceiling(seed=0)
    again = evaluator.ceiling(seed=1)  # another sample of real training images
    heldout = evaluator.images(evaluator.split.heldout_images[:1000])
    noise = evaluator.images(np.random.default_rng(0).uniform(-1, 1, (1000, 28, 28, 1)).astype(np.float32))
    assert heldout["fd"] == pytest.approx(0, abs=1e-6)  # the reference set itself
    assert ceiling["fd_n"] == noise["fd_n"] == 1000
    assert again["fd"] == pytest.approx(ceiling["fd"], rel=0.5)
    assert noise["fd"] > 20 * ceiling["fd"]
    assert ceiling["coverage_kl"] < 0.1 and ceiling["score"] > noise["score"]


@pytest.mark.slow
def test_per_class_fd_reads_each_digit_against_its_own_real_images(evaluator):
    split = evaluator.split
    heldout = evaluator.images(split.heldout_images, split.heldout_labels)
    assert heldout["class_fd"] == pytest.approx(0, abs=1e-6)  # every digit against itself
    accuracy = classifier.accuracy(evaluator.classifier.params, split.heldout_images, split.heldout_labels)
    assert heldout["cond_acc"] == pytest.approx(accuracy) and min(heldout["cond_acc_digits"]) > 0.3
    assert np.mean(heldout["cond_acc_digits"]) == pytest.approx(heldout["cond_acc"])  # 100 of each digit
    wrong = evaluator.images(split.heldout_images, (split.heldout_labels + 1) % 10)  # each digit read as the next
    assert max(wrong["cond_acc_digits"]) < 0.1
    ceiling = evaluator.ceiling(conditional=True)
    assert ceiling["class_fd"] > 0 and wrong["class_fd"] > 5 * ceiling["class_fd"]
    # Unlabelled images are grouped by the digit the classifier reads; a digit seen fewer than
    # CLASS_FD_MIN times is left out, and with none left the mean is NaN.
    assert evaluator.images(split.heldout_images)["class_fd"] < ceiling["class_fd"]
    threes = split.heldout_images[split.heldout_labels == 3][:10]
    assert np.isnan(evaluator.images(threes)["class_fd"])


@pytest.mark.slow
def test_a_one_digit_generator_is_flagged_by_coverage(evaluator):
    split = evaluator.split
    threes = split.train_images[split.train_labels == 3][:300]
    one_digit = evaluator.images(np.concatenate([threes] * 4)[:1000])
    ceiling = evaluator.ceiling()
    assert one_digit["coverage_kl"] > 1.2  # log 10 = 2.30 for a single class
    assert int(np.argmax(one_digit["coverage"])) == 3
    assert one_digit["score"] < ceiling["score"] / 2
    assert one_digit["fd"] > 5 * ceiling["fd"]
