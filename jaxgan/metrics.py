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
- `class_fd`: the per-class Frechet distance, the mean over the digits c of the FD between the
  images of c (a conditional generator's: those asked for c; otherwise those the classifier reads
  as c) and the held-out real images of c: how well each digit is drawn, apart from how often.
  Digits with fewer than CLASS_FD_MIN images are left out of the mean (NaN if every one is).
- `cond_acc` (conditional generators only): the conditional accuracy, the share of the N
  images that the classifier assigns to the digit the generator was asked for (the digits
  0..9 in turn, `sampling.balanced_labels`). 0.1 is chance; real images with their own labels
  (the ceiling) score the classifier's accuracy on them. `cond_acc_digits` (10,): the same for
  each digit asked for (NaN for a digit not asked for).

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
CLASS_FD_MIN = 20  # images of a digit for its per-class FD (about 100 of each at FD_N)
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
        if len(split.heldout_images) < n:
            raise UserError(f"the held-out split has {len(split.heldout_images)} images, fewer than the {n} asked for")
        _, features = classifier_lib.predict(clf.params, split.heldout_images)  # the reference: the first n
        self.reference_stats = gaussian_stats(features[:n])
        self.class_reference_stats = [
            gaussian_stats(features[split.heldout_labels == c]) for c in range(classifier_lib.NUM_CLASSES)
        ]

    @classmethod
    def for_dataset(
        cls, name: str, seed: int = 0, *, data_dir: str | None = None, n: int = FD_N, log: Callable = print, **kw
    ) -> Evaluator:
        """The evaluator of dataset `name` (training its classifier first if it is not cached)."""
        split = classifier_lib.load_split(name, data_dir)
        return cls(classifier_lib.load_or_train(name, seed, data_dir=data_dir, split=split, log=log, **kw), split, n)

    def images(self, images: np.ndarray, labels: np.ndarray | None = None) -> dict[str, Any]:
        """All metrics of images (N, 28, 28, 1) in [-1, 1] against the held-out reference; with
        `labels` (N,), the digits they should be, also their conditional accuracy `cond_acc`."""
        probs, features = classifier_lib.predict(self.classifier.params, np.asarray(images, np.float32))
        hist = coverage(probs)
        conditional = {}
        if labels is not None:
            labels = np.asarray(labels)
            conditional = {
                "cond_acc": conditional_accuracy(probs, labels),
                "cond_acc_digits": [
                    round(conditional_accuracy(probs[labels == c], labels[labels == c]), 4)
                    for c in range(classifier_lib.NUM_CLASSES)
                ],
            }
        return {
            "fd": frechet_distance(*gaussian_stats(features), *self.reference_stats),
            "fd_n": len(images),
            "score": classifier_score(probs),
            "coverage_kl": kl_to_uniform(hist),
            "max_prob": float(probs.max(axis=1).mean()),
            "coverage": [round(float(x), 4) for x in hist],
            "class_fd": self.class_fd(features, probs.argmax(axis=1) if labels is None else labels),
            **conditional,
        }

    def class_fd(self, features: np.ndarray, classes: np.ndarray) -> float:
        """Mean per-class FD (`class_fd` above) of classifier features (N, 128) whose digits are `classes` (N,)."""
        fds = [
            frechet_distance(*gaussian_stats(features[classes == c]), *reference)
            for c, reference in enumerate(self.class_reference_stats)
            if np.sum(classes == c) >= CLASS_FD_MIN
        ]
        return float(np.mean(fds)) if fds else float("nan")

    def generator(self, config: Config, g_params, seed: int = 0, *, batch_stats=None) -> dict[str, Any]:
        """All metrics of self.n images of the generator, from noise of `seed` (eval mode with a
        DCGAN's running `batch_stats`); a conditional one is asked for the digits 0..9 in turn
        and also gets `cond_acc`."""
        labels = np.asarray(sampling.balanced_labels(config, self.n)) if config.conditional else None
        images = generate(config, g_params, self.n, seed, labels=labels, batch_stats=batch_stats)
        return self.images(images, labels)

    def ceiling(self, seed: int = 0, conditional: bool = False) -> dict[str, Any]:
        """Real training images (n, drawn with `seed`) measured like a generator: the best reachable.
        `conditional`: also their `cond_acc` against their own labels."""
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(self.split.train_images), self.n, replace=False))
        return self.images(self.split.train_images[idx], self.split.train_labels[idx] if conditional else None)

    def floor(self, config: Config, seed: int = 0) -> dict[str, Any]:
        """An untrained generator of `config` (init of `seed`): what training must beat."""
        from jaxgan import steps

        state = steps.create_state(config.replace(ema_decay=0.0), seed)
        return self.generator(config, state.g_params, seed, batch_stats=state.g_batch_stats)


def conditional_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """The share of images (probs (N, 10)) whose predicted class is their label (N,); NaN for none."""
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(labels)))


def generate(config: Config, g_params, num: int, seed: int = 0, *, labels=None, batch_stats=None) -> np.ndarray:
    """num images (num, 28, 28, 1) from the generator, with `sampling.noise` of `seed` (see `sampling.images`)."""
    return sampling.images(config, g_params, num, seed, labels=labels, batch_stats=batch_stats)[0]


def format_table(rows: list[tuple[str, dict]]) -> str:
    """A text table of named metric rows (coverage shown as its KL; a `cond acc` column when a row has one)."""
    conditional = any("cond_acc" in m for _, m in rows)
    lines = [f"{'':<22}{'FD@N':>10}{'N':>6}{'score':>8}{'cov KL':>8}{'maxprob':>9}" + (f"{'cond acc':>10}" if conditional else "")]  # fmt: skip
    for name, m in rows:
        line = (
            f"{name:<22}{m['fd']:>10.2f}{m['fd_n']:>6}{m['score']:>8.2f}{m['coverage_kl']:>8.3f}{m['max_prob']:>9.3f}"
        )
        if conditional:
            line += f"{m['cond_acc']:>10.3f}" if "cond_acc" in m else f"{'—':>10}"
        lines.append(line)
    return "\n".join(lines)
