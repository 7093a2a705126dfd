"""Sample quality of a generator, measured with the dataset's own classifier (`jaxgan.classifier`).

For N generated images (N = FD_N = 1,000 unless stated: the Frechet distance depends on N,
so it is always reported with it as `fd_n`):

- `fd`: the Frechet distance between Gaussians fitted to the classifier's penultimate
  features (128-d) of the generated images and of N held-out real images,
  |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64. "FID" with an MNIST
  classifier in place of Inception-v3. Lower is better; 0 for identical feature sets.
- `score`: the classifier score exp(E_x KL(p(y|x) || p(y))), the Inception Score with this
  classifier. At most 10; higher is better.
- `coverage`: the histogram of predicted classes (fractions of the N images), and
  `coverage_kl`: its KL divergence to the uniform distribution (0 = every digit equally
  often; log 10 = 2.30 = one digit only): the mode-collapse detector.
- `max_prob`: the mean of max_y p(y|x), the classifier's confidence.

Reference points (`reference_rows`): the *ceiling* is the same metrics for N held-out real
images against N real training images; the *floor* is an untrained generator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg

from jaxgan import classifier as classifier_lib
from jaxgan import sampling
from jaxgan.cli import UserError
from jaxgan.config import Config

FD_N = 1000
METRIC_KEYS = ("fd", "score", "coverage_kl", "max_prob")


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D)) of features (N, D), in float64."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)) for two Gaussians.

    tr((S1 S2)^(1/2)) is computed as the sum of sqrt of the eigenvalues of
    S1^(1/2) S2 S1^(1/2) (symmetric PSD, so `eigh` is exact and stable), which equals it
    for PSD S1, S2. Tiny negative eigenvalues from round-off are clipped to 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S1^(1/2)
    inner = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean, 0.0))


def frechet_distance_sqrtm(features1: np.ndarray, features2: np.ndarray) -> float:
    """The textbook formula with scipy.linalg.sqrtm (as in pytorch-fid): a cross-check."""
    mu1, s1 = gaussian_stats(features1)
    mu2, s2 = gaussian_stats(features2)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def classifier_score(probs: np.ndarray) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) of probabilities (N, 10)."""
    probs = np.asarray(probs, np.float64)
    marginal = probs.mean(axis=0)
    kl = np.sum(probs * (np.log(probs + 1e-12) - np.log(marginal + 1e-12)), axis=1)
    return float(np.exp(kl.mean()))


def coverage(probs: np.ndarray) -> np.ndarray:
    """Fractions (10,) of the images predicted as each class."""
    counts = np.bincount(np.asarray(probs).argmax(axis=1), minlength=classifier_lib.NUM_CLASSES)
    return counts / counts.sum()


def kl_to_uniform(histogram: np.ndarray) -> float:
    """KL(histogram || uniform) in nats: 0 when uniform, log(K) for one class only."""
    p = np.asarray(histogram, np.float64)
    p = p / p.sum()
    nonzero = p > 0
    return float(np.sum(p[nonzero] * np.log(p[nonzero] * len(p))))


class Evaluator:
    """Metrics of image sets against one dataset's held-out real images.

    Holds the classifier and the held-out reference statistics (computed once).
    """

    def __init__(self, clf: classifier_lib.Classifier, split: classifier_lib.Split, n: int = FD_N):
        self.classifier, self.split, self.n = clf, split, n
        reference = split.heldout_images[:n]
        if len(reference) < n:
            raise UserError(f"the held-out split has {len(reference)} images, fewer than the {n} asked for")
        _, features = classifier_lib.predict(clf.params, reference)
        self.reference_stats = gaussian_stats(features)

    @classmethod
    def for_dataset(
        cls, name: str, seed: int = 0, *, data_dir: str | None = None, n: int = FD_N, log: Callable = print, **kw
    ) -> Evaluator:
        """The evaluator of dataset `name` (training its classifier first if it is not cached)."""
        split = classifier_lib.load_split(name, data_dir)
        return cls(classifier_lib.load_or_train(name, seed, data_dir=data_dir, split=split, log=log, **kw), split, n)

    def images(self, images: np.ndarray) -> dict[str, Any]:
        """All metrics of images (N, 28, 28, 1) in [-1, 1] against the held-out reference."""
        probs, features = classifier_lib.predict(self.classifier.params, np.asarray(images, np.float32))
        hist = coverage(probs)
        return {
            "fd": frechet_distance(*gaussian_stats(features), *self.reference_stats),
            "fd_n": len(images),
            "score": classifier_score(probs),
            "coverage_kl": kl_to_uniform(hist),
            "max_prob": float(probs.max(axis=1).mean()),
            "coverage": [round(float(x), 4) for x in hist],
        }

    def generator(self, config: Config, g_params, seed: int = 0) -> dict[str, Any]:
        """All metrics of self.n images of the generator, from noise of `seed`."""
        return self.images(generate(config, g_params, self.n, seed))

    def ceiling(self, seed: int = 0) -> dict[str, Any]:
        """Real training images (n, drawn with `seed`) measured like a generator: the best reachable."""
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(self.split.train_images), self.n, replace=False)
        return self.images(self.split.train_images[np.sort(idx)])

    def floor(self, config: Config, seed: int = 0) -> dict[str, Any]:
        """An untrained generator of `config` (init of `seed`): what training must beat."""
        from jaxgan import train

        return self.generator(config, train.create_state(config.replace(ema_decay=0.0), seed).g_params, seed)


def generate(config: Config, g_params, num: int, seed: int = 0) -> np.ndarray:
    """num images (num, 28, 28, 1) from the generator, with `sampling.noise` of `seed`."""
    return sampling.images(config, g_params, num, seed)[0]


def format_table(rows: list[tuple[str, dict]]) -> str:
    """A text table of named metric rows (coverage shown as its KL)."""
    lines = [f"{'':<22}{'FD@N':>10}{'N':>6}{'score':>8}{'cov KL':>8}{'maxprob':>9}"]
    for name, m in rows:
        lines.append(
            f"{name:<22}{m['fd']:>10.2f}{m['fd_n']:>6}{m['score']:>8.2f}{m['coverage_kl']:>8.3f}{m['max_prob']:>9.3f}"
        )
    return "\n".join(lines)
