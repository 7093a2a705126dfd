"""Presets match the seed recipes; the seeds' step budget on other dataset sizes; validation names the bad field."""

import dataclasses

import pytest

from jaxgan.config import PRESETS, Config, preset

# name -> (latent, G hidden, D hidden, G act, batch, (lr, beta1, beta2), epochs of MNIST), from the seeds.
SEED_RECIPES = {
    "small": (100, (128,), (128,), "relu", 64, (2e-4, 0.5, 0.999), 25),
    "small-beta09": (100, (128,), (128,), "relu", 64, (2e-4, 0.9, 0.999), 10),
    "wide": (64, (256, 256), (256, 256), "relu", 100, (2e-4, 0.9, 0.999), 200),
    "deep": (100, (256, 512), (512, 256), "leaky_relu", 128, (2e-4, 0.5, 0.999), 50),
}


@pytest.mark.parametrize("name", SEED_RECIPES)
def test_presets_reproduce_the_seeds(name):
    c = preset(name)
    latent, g_hidden, d_hidden, g_act, batch, adam, epochs = SEED_RECIPES[name]
    assert (c.latent_dim, c.g_hidden, c.d_hidden, c.g_activation) == (latent, g_hidden, d_hidden, g_act)
    assert (c.d_activation, c.leaky_slope) == ("leaky_relu", 0.2)
    assert (c.batch_size, (c.lr, c.beta1, c.beta2), c.seed_epochs) == (batch, adam, epochs)
    assert c.preset == name
    assert (c.epochs, c.sample_every, c.checkpoint_every) == (None, None, None)  # automatic


def test_every_preset_is_valid_and_named_after_itself():
    assert set(PRESETS) == {*SEED_RECIPES, "tiny", "cgan-small", "cgan-deep-projection", "dcgan", "tiny-dcgan"}
    for name, c in PRESETS.items():
        assert c.validate().preset == name


def test_config_is_frozen_and_hashable():
    c = preset("small")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.lr = 1.0
    assert hash(c) == hash(preset("small")) and c == Config()


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(
        ValueError,
        match="unknown preset 'nope'; choose one of: small, small-beta09, wide, deep, tiny, cgan-small, cgan-deep-projection, dcgan, tiny-dcgan",
    ):
        preset("nope")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 0}, "batch_size must be positive"),
        ({"epochs": -1}, "epochs must be positive"),
        ({"seed_epochs": 0}, "seed_epochs must be positive"),
        ({"sample_every": 0}, "sample_every must be positive"),
        ({"latent_dim": 0}, "latent_dim must be positive"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"lr": float("nan")}, "lr must be positive"),
        ({"beta1": 1.0}, r"beta1 must be in \[0, 1\)"),
        ({"beta2": -0.1}, r"beta2 must be in \[0, 1\)"),
        ({"g_hidden": ()}, "g_hidden must be one or more positive widths"),
        ({"d_hidden": (128, 0)}, "d_hidden must be one or more positive widths"),
        ({"g_activation": "gelu"}, "g_activation must be one of relu, leaky_relu"),
        ({"arch": "resnet"}, "arch must be one of mlp, dcgan, got 'resnet'"),
        ({"loss": "wgan"}, "loss must be one of bce, minimax, lsgan, hinge, wgan-gp, got 'wgan'"),
        ({"gp_weight": -1.0}, "gp_weight must be non-negative, got -1.0"),
        ({"conditional": 1}, "conditional must be true or false, got 1"),
        ({"conditioning": "film"}, "conditioning must be one of concat, projection, got 'film'"),
        ({"conditioning": "projection"}, "conditioning projection is for a conditional GAN: add --conditional"),
        ({"g_features": 0}, "g_features must be positive"),
        ({"d_features": -8}, "d_features must be positive"),
    ],
)
def test_validate_names_the_bad_field(change, message):
    with pytest.raises(ValueError, match=message):
        preset("small").replace(**change).validate()


def test_new_presets_are_their_recipes():
    """cgan-small is small, conditional; dcgan is pytorch/examples dcgan's nz, ngf, ndf, batch and Adam."""
    assert preset("cgan-small") == preset("small").replace(preset="cgan-small", conditional=True)
    nets = {k: getattr(preset("deep"), k) for k in ("g_hidden", "d_hidden", "g_activation", "d_activation")}
    projection = preset("cgan-small").replace(preset="cgan-deep-projection", conditioning="projection", **nets)
    assert preset("cgan-deep-projection") == projection  # cgan-small's recipe, deep's nets
    dcgan = preset("dcgan")
    assert (dcgan.arch, dcgan.latent_dim, dcgan.g_features, dcgan.d_features) == ("dcgan", 100, 64, 64)
    assert (dcgan.batch_size, dcgan.lr, dcgan.beta1, dcgan.beta2, dcgan.seed_epochs) == (64, 2e-4, 0.5, 0.999, 25)
    assert (dcgan.g_activation, dcgan.d_activation, dcgan.leaky_slope, dcgan.loss) == ("relu", "leaky_relu", 0.2, "bce")
    assert all((c.arch, c.conditional, c.loss) == ("mlp", False, "bce") for c in map(preset, SEED_RECIPES))


def test_dict_round_trip_restores_tuples():
    c = preset("deep")
    assert Config.from_dict(c.to_dict()) == c
    d = preset("tiny-dcgan").replace(conditional=True, loss="hinge")
    assert Config.from_dict(d.to_dict()) == d
    # A config written before arch, conditional and loss existed reads as the seeds' MLP GAN.
    new_fields = ("arch", "conditional", "conditioning", "loss", "gp_weight", "g_features", "d_features")
    old = {k: v for k, v in c.to_dict().items() if k not in new_fields}
    assert Config.from_dict(old) == c
    with pytest.raises(ValueError, match="unknown config field"):
        Config.from_dict({**c.to_dict(), "nonsense": 1})


# name -> the epochs that take (at least) the seed's optimizer steps on 5,000 / 60,000 / 7,777 images,
# worked out by hand: ceil(seed_epochs * (60000 // B) / (N // B)).
SEED_BUDGET_EPOCHS = {
    "small": (301, 25, 194),  # 25 * 937 = 23,425 steps; 78 / 937 / 121 steps per epoch
    "small-beta09": (121, 10, 78),  # 10 * 937 = 9,370 steps
    "wide": (2400, 200, 1559),  # 200 * 600 = 120,000 steps; 50 / 600 / 77 steps per epoch
    "deep": (600, 50, 390),  # 50 * 468 = 23,400 steps; 39 / 468 / 60 steps per epoch
}


@pytest.mark.parametrize("name", SEED_BUDGET_EPOCHS)
@pytest.mark.parametrize(("size", "column"), [(5000, 0), (60000, 1), (7777, 2)])
def test_without_epochs_a_run_takes_the_seeds_steps_rounded_up_to_whole_epochs(name, size, column):
    c = preset(name)
    resolved = c.resolved(size)
    assert resolved.epochs == SEED_BUDGET_EPOCHS[name][column]
    steps_per_epoch = size // c.batch_size
    assert (resolved.epochs - 1) * steps_per_epoch < c.seed_steps() <= resolved.epochs * steps_per_epoch
    assert resolved.sample_every == resolved.checkpoint_every == -(-resolved.epochs // 25)  # <= 25 grids per run
    assert resolved.validate() == resolved.resolved(size)  # resolving twice changes nothing
    if size == 60000:
        assert resolved.epochs == c.seed_epochs  # the seed's own run


def test_tiny_is_a_fixed_two_epochs_whatever_the_data():
    for size in (5000, 60000, 7777):
        assert preset("tiny").resolved(size).epochs == 2


def test_explicit_epochs_and_cadences_win():
    c = preset("small").replace(epochs=3, sample_every=2)
    resolved = c.resolved(5000)
    assert (resolved.epochs, resolved.sample_every, resolved.checkpoint_every) == (3, 2, 1)
    assert preset("wide").replace(checkpoint_every=7).resolved(5000).checkpoint_every == 7


def test_the_banner_line_says_where_the_epochs_come_from():
    small = preset("small")
    assert small.describe_epochs(5000, "mnist-5k") == (
        "25 seed epochs of MNIST = 23,425 steps rounded up to 301 epochs of mnist-5k (5,000 images); "
        "--epochs N to choose"
    )
    assert small.describe_epochs(60000, "mnist").startswith("25 seed epochs of MNIST = 23,425 steps = 25 epochs")
    assert small.replace(epochs=3).describe_epochs(5000, "mnist-5k") == (
        "3 epochs of mnist-5k (5,000 images) = 234 steps"
    )


def test_a_batch_larger_than_the_dataset_cannot_be_resolved():
    with pytest.raises(ValueError, match="batch_size 64 is larger than the 50 images"):
        preset("small").resolved(50)


def test_resumable_marks_are_kept():
    from jaxgan.config import resumable_fields

    assert {"epochs", "seed_epochs", "sample_every", "checkpoint_every", "grid_size"} <= set(resumable_fields())
