"""Run configuration: one frozen dataclass and the named presets of the seed recipes.

Every field is a command-line flag (`--batch-size`, `--g-hidden 256,512`, ...): the
parser in `jaxgan.cli` is built from the field list and the `help` metadata below,
so a new field is a new flag without touching the CLI.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any

ACTIVATIONS = ("relu", "leaky_relu")
SEED_DATASET_SIZE = 60_000  # the seeds train on the 60,000 images of MNIST's training split
GRIDS_PER_RUN = 25  # automatic sample_every / checkpoint_every: about this many per run
ARCHITECTURES = ("mlp", "dcgan")
LOSSES = ("bce", "minimax", "lsgan", "hinge", "wgan-gp")  # jaxgan.losses
CONDITIONINGS = ("concat", "projection")  # how a conditional discriminator takes the label (jaxgan.models)
NUM_CLASSES = 10  # labels of a conditional GAN: the ten digits

# Bounds of the size fields, the same for flags, checkpoints and .pt files (`Config.validate`):
# beyond them a run cannot fit any machine, or overflows an int32 shape or step counter.
MAX_WIDTH = 65_536  # latent_dim and every hidden width
MAX_LAYERS = 32  # hidden layers of each MLP
MAX_FEATURES = 4_096  # dcgan base channels
MAX_BATCH = 1 << 20
MAX_GRID = 32  # sample grids of at most 32 x 32 images
MAX_COUNT = 2**31 - 1  # epochs, cadences, steps: the int32 step counter's range
SEED_LIMIT = 2**32  # seeds are 0 <= seed < 2**32: larger ones would alias (jax.random.key keeps 32 bits)


def _field(default: Any, help: str, *, resumable: bool = False) -> Any:
    """A config field with its --help text; `resumable`: it may change when a run resumes,
    because it does not change what is computed (only how long, how often, or where)."""
    return dataclasses.field(default=default, metadata={"help": help, "resumable": resumable})


def resumable_fields() -> tuple[str, ...]:
    """Names of the fields a resumed run may change (`resumable=True` in their definition)."""
    return tuple(f.name for f in dataclasses.fields(Config) if f.metadata["resumable"])


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on. Hashable, so it can be a static field under `jit`."""

    preset: str = _field("small", "name of the preset these values started from")
    # Networks.
    arch: str = _field("mlp", "network architecture: mlp (the seeds') | dcgan (convolutional, BatchNorm)")
    conditional: bool = _field(
        False, "class-conditional GAN: G and D also take the digit label (G: z ⊕ one-hot; D: see --conditioning)"
    )
    conditioning: str = _field(
        "concat",
        "how a conditional D takes the label: concat (one-hot joined to its input, PyTorch-GAN's cgan) | "
        "projection (logit + <embedding(label), D's last features>, Miyato & Koyama 2018)",
    )
    loss: str = _field(
        "bce", "GAN loss: bce (the seeds' non-saturating) | minimax (saturating G) | lsgan | hinge | wgan-gp"
    )
    gp_weight: float = _field(10.0, "wgan-gp: weight of the gradient penalty (lambda)")
    latent_dim: int = _field(100, "size of the generator's noise vector z")
    g_hidden: tuple[int, ...] = _field((128,), "generator hidden widths, e.g. 256,512")
    d_hidden: tuple[int, ...] = _field((128,), "discriminator hidden widths, e.g. 512,256")
    g_activation: str = _field("relu", "generator hidden activation: relu | leaky_relu")
    d_activation: str = _field("leaky_relu", "discriminator hidden activation: relu | leaky_relu")
    leaky_slope: float = _field(0.2, "negative slope of every LeakyReLU")
    g_features: int = _field(64, "dcgan: generator base channels (ngf): 2*ngf at 7x7, ngf at 14x14")
    d_features: int = _field(64, "dcgan: discriminator base channels (ndf): ndf at 14x14, 2*ndf at 7x7")
    # Optimisation (the same Adam for G and D, as in every seed).
    batch_size: int = _field(64, "images per step")
    lr: float = _field(2e-4, "Adam learning rate")
    beta1: float = _field(0.5, "Adam beta1")
    beta2: float = _field(0.999, "Adam beta2")
    seed_epochs: int = _field(
        25,
        "the seed recipe's epochs of 60,000-image MNIST: without --epochs a run takes as many optimizer steps "
        "as these, rounded up to whole epochs of its dataset",
        resumable=True,
    )
    epochs: int | None = _field(
        None, "total number of epochs to train (default: the seed's step budget, see --seed-epochs)", resumable=True
    )
    seed: int = _field(0, "seed of every random number in the run (init, noise, shuffling)")
    ema_decay: float = _field(
        0.0, "decay of an EMA of the generator's weights used for samples and evaluation (0: off)"
    )
    # Data and outputs.
    dataset: str = _field(
        "auto",
        "auto | mnist-5k | a directory of IDX files (e.g. ./data, torchvision's root) | mnist | fashion_mnist | "
        "any 28x28 grayscale TFDS dataset; see docs/datasets.md",
    )
    data_dir: str | None = _field(
        None, "TFDS data directory (default: TFDS's own, ~/tensorflow_datasets)", resumable=True
    )
    sample_every: int | None = _field(
        None,
        f"write a sample grid every N epochs and at the end (default: about {GRIDS_PER_RUN} grids per run, "
        f"ceil(epochs / {GRIDS_PER_RUN}))",
        resumable=True,
    )
    grid_size: int = _field(8, "sample grids are grid_size x grid_size images", resumable=True)
    log_every: int = _field(100, "steps per progress-bar update (one XLA call each)", resumable=True)
    checkpoint_every: int | None = _field(
        None,
        "save a checkpoint every N epochs, at the end and when stopped by a signal "
        f"(default: as often as sample grids, about {GRIDS_PER_RUN} per run)",
        resumable=True,
    )
    keep_checkpoints: int = _field(3, "how many of the latest checkpoints to keep", resumable=True)
    eval_every: int = _field(
        0, "measure sample quality (jaxgan.metrics) every N epochs and at the end (0: off)", resumable=True
    )
    # Devices. Explicit, not automatic when several devices are visible: a single-device
    # run's results and compilations never change because more devices appeared.
    # data_parallel may change on resume: the same numbers up to float32 reduction order.
    data_parallel: bool = _field(
        False,
        "shard each batch over every device (of every process); the batch size must divide by their number",
        resumable=True,
    )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (28, 28, 1)

    @property
    def image_size(self) -> int:
        return math.prod(self.image_shape)

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    @property
    def projection_discriminator(self) -> bool:
        """Whether D takes the label by projection (a conditional GAN with conditioning "projection")."""
        return self.conditional and self.conditioning == "projection"

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def seed_steps(self) -> int:
        """The optimizer steps of the seed recipe: seed_epochs epochs of 60,000-image MNIST."""
        return self.seed_epochs * (SEED_DATASET_SIZE // self.batch_size)

    def resolved(self, num_examples: int) -> Config:
        """This config for a dataset of `num_examples` images, its automatic values made concrete.

        epochs (None: the seed's step budget, ceil(seed_steps / steps per epoch)), then
        sample_every and checkpoint_every (None: ceil(epochs / GRIDS_PER_RUN)). Explicit
        values are kept. ValueError when not one batch fits in the dataset.
        """
        steps_per_epoch = num_examples // self.batch_size
        if steps_per_epoch == 0:
            raise ValueError(f"batch_size {self.batch_size} is larger than the {num_examples} images")
        epochs = self.epochs if self.epochs is not None else -(-self.seed_steps() // steps_per_epoch)
        every = -(-epochs // GRIDS_PER_RUN)
        return self.replace(
            epochs=epochs,
            sample_every=every if self.sample_every is None else self.sample_every,
            checkpoint_every=every if self.checkpoint_every is None else self.checkpoint_every,
        )

    def describe_epochs(self, num_examples: int, dataset: str) -> str:
        """One line for the run banner: how many epochs of `dataset` (`num_examples` images) and why."""
        steps_per_epoch = num_examples // self.batch_size
        epochs = self.resolved(num_examples).epochs
        if self.epochs is not None:
            return f"{epochs:,} epoch{'' if epochs == 1 else 's'} of {dataset} ({num_examples:,} images) = {epochs * steps_per_epoch:,} steps"
        seed_steps = self.seed_steps()
        equals = "=" if epochs * steps_per_epoch == seed_steps else "rounded up to"
        return (
            f"{self.seed_epochs} seed epochs of MNIST = {seed_steps:,} steps {equals} {epochs:,} epochs of {dataset} "
            f"({num_examples:,} images); --epochs N to choose"
        )

    def validate(self) -> Config:
        """Raise ValueError with a one-line message naming the first bad field (None means automatic).

        Types first (`check_types`), then ranges; the sizes are bounded (MAX_WIDTH, MAX_GRID, ...)
        so that a config from any source (flags, a checkpoint, a .pt file) is refused before
        anything is allocated.
        """
        check_types(self.to_dict())
        for name, limit in (
            ("latent_dim", MAX_WIDTH),
            ("g_features", MAX_FEATURES),
            ("d_features", MAX_FEATURES),
            ("batch_size", MAX_BATCH),
            ("seed_epochs", MAX_COUNT),
            ("epochs", MAX_COUNT),
            ("sample_every", MAX_COUNT),
            ("grid_size", MAX_GRID),
            ("log_every", MAX_COUNT),
            ("checkpoint_every", MAX_COUNT),
            ("keep_checkpoints", MAX_COUNT),
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
            if value is not None and value > limit:
                raise ValueError(f"{name} must be at most {limit:,}, got {value:,}")
        for name in ("g_hidden", "d_hidden"):
            widths = getattr(self, name)
            if not widths or any(w <= 0 for w in widths):
                raise ValueError(f"{name} must be one or more positive widths, got {widths}")
            if len(widths) > MAX_LAYERS or max(widths) > MAX_WIDTH:
                raise ValueError(
                    f"{name} must be at most {MAX_LAYERS} widths of at most {MAX_WIDTH:,}, got {_show(widths)}"
                )
        for name in ("g_activation", "d_activation"):
            if getattr(self, name) not in ACTIVATIONS:
                raise ValueError(f"{name} must be one of {', '.join(ACTIVATIONS)}, got {getattr(self, name)!r}")
        for name, choices in (("arch", ARCHITECTURES), ("loss", LOSSES), ("conditioning", CONDITIONINGS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.conditioning != "concat" and not self.conditional:
            raise ValueError(f"conditioning {self.conditioning} is for a conditional GAN: add --conditional")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.eval_every <= MAX_COUNT:
            raise ValueError(f"eval_every must be non-negative, got {self.eval_every}")
        if not self.gp_weight >= 0 or not math.isfinite(self.gp_weight):
            raise ValueError(f"gp_weight must be non-negative, got {self.gp_weight}")
        if not 0 <= self.leaky_slope <= 1:
            raise ValueError(f"leaky_slope must be in [0, 1], got {self.leaky_slope}")
        check_seed(self.seed)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Any) -> Config:
        """Inverse of `to_dict` (JSON turns tuples into lists; this turns them back).

        ValueError in one line for anything that is not a dict of known fields of the right
        types (`check_types`), before anything is built from it; ranges are `validate`'s.
        """
        if not isinstance(values, dict):
            raise ValueError(f"a config must be a mapping of field names to values, got {type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names, key=str)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(map(str, unknown))}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        check_types(fixed)
        return cls(**fixed)


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else repr(value)


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether `value` has the type `hint` of a Config field (int | None, tuple[int, ...], ...).

    bool is not an int here, and an int is a float (JSON writes 1.0 as 1)."""
    if hint is type(None):
        return value is None
    options = typing.get_args(hint)
    if isinstance(hint, types.UnionType):
        return any(_type_ok(value, option) for option in options)
    if typing.get_origin(hint) is tuple:
        return isinstance(value, tuple) and all(_type_ok(v, options[0]) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Config)


TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def check_types(values: dict[str, Any]) -> None:
    """ValueError naming the first of `values` (Config field -> value) whose type is not its field's."""
    hints = _field_types()
    for name, value in values.items():
        hint = hints[name]
        if _type_ok(value, hint):
            continue
        if typing.get_origin(hint) is tuple:
            kind = "a list of integers"
        else:
            kind = " or ".join(TYPE_NAMES.get(t, "null") for t in (typing.get_args(hint) or (hint,)))
        raise ValueError(f"{name} must be {kind}, got {value!r}"[:300])


def check_seed(seed: Any, name: str = "seed") -> int:
    """`seed` if it is an integer with 0 <= seed < 2**32 (the one rule of every entry point), else ValueError."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name} must be an integer in [0, 2**32), got {seed!r}")
    return seed


PRESETS: dict[str, Config] = {
    # Seeds 000 and 003: the most common tutorial GAN.
    "small": Config(preset="small"),
    # Seed 001: the same nets with PyTorch's default Adam betas, 10 epochs.
    "small-beta09": Config(preset="small-beta09", beta1=0.9, seed_epochs=10),
    # Seed 002: the classic "latent 64, hidden 256" tutorial, default Adam betas, batch 100.
    "wide": Config(
        preset="wide",
        latent_dim=64,
        g_hidden=(256, 256),
        d_hidden=(256, 256),
        batch_size=100,
        beta1=0.9,
        seed_epochs=200,
    ),
    # Seed 004: deeper nets with LeakyReLU in the generator too.
    "deep": Config(
        preset="deep",
        g_hidden=(256, 512),
        d_hidden=(512, 256),
        g_activation="leaky_relu",
        batch_size=128,
        seed_epochs=50,
    ),
    # Not a seed: a few-second CPU config for tests and smoke runs (2 epochs of any dataset).
    "tiny": Config(
        preset="tiny",
        latent_dim=16,
        g_hidden=(32,),
        d_hidden=(32,),
        batch_size=32,
        seed_epochs=2,
        epochs=2,  # a fixed length, not a step budget: a smoke run takes seconds on any dataset
        grid_size=4,
    ),
    # Preset small, class-conditional: G(z, label) and D(x, label) (any preset takes --conditional).
    "cgan-small": Config(preset="cgan-small", conditional=True),
    # cgan-small's recipe (batch 64, 25 epochs) with deep's nets (seed 004), conditional through a
    # projection discriminator: the label sticks (docs/quality.md).
    "cgan-deep-projection": Config(
        preset="cgan-deep-projection",
        g_hidden=(256, 512),
        d_hidden=(512, 256),
        g_activation="leaky_relu",
        conditional=True,
        conditioning="projection",
    ),
    # pytorch/examples dcgan scaled to 28x28x1 (docs/presets-dcgan.md): its nz, ngf, ndf, batch,
    # Adam and epochs.
    "dcgan": Config(preset="dcgan", arch="dcgan"),
    # Not a recipe: the DCGAN at a few-second CPU size, for tests and smoke runs.
    "tiny-dcgan": Config(
        preset="tiny-dcgan",
        arch="dcgan",
        latent_dim=16,
        g_features=8,
        d_features=8,
        batch_size=32,
        epochs=2,
        grid_size=4,
    ),
}


def preset(name: str) -> Config:
    """The named preset's config; ValueError listing the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
