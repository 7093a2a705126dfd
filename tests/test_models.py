"""Parameter counts, output shapes and initialisation of every preset; the DCGAN's BatchNorm; labels."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import models
from jaxgan.config import PRESETS, preset
from jaxgan.models import Discriminator, Generator, count_params, expected_param_count, init_params

# Hand-computed from the layer lists: sum of in*out + out over Linear layers; for the DCGAN,
# in*out*k*k per conv (no biases) and 2*C per BatchNorm.
PARAM_COUNTS = {
    "small": (100 * 128 + 128 + 128 * 784 + 784, 784 * 128 + 128 + 128 + 1),  # 114,064 and 100,609
    "small-beta09": (114_064, 100_609),
    "wide": (64 * 256 + 256 + 256 * 256 + 256 + 256 * 784 + 784, 784 * 256 + 256 + 256 * 256 + 256 + 257),
    "deep": (100 * 256 + 256 + 256 * 512 + 512 + 512 * 784 + 784, 784 * 512 + 512 + 512 * 256 + 256 + 257),
    "cgan-small": (114_064 + 10 * 128, 100_609 + 10 * 128),  # one-hot labels: 10 more inputs to layer 0
    "cgan-deep-projection": (  # deep's; G: 10 more inputs to layer 0; D: the bare image, a (10, 256) embedding
        100 * 256 + 256 + 256 * 512 + 512 + 512 * 784 + 784 + 10 * 256,
        784 * 512 + 512 + 512 * 256 + 256 + 257 + 10 * 256,
    ),
    "dcgan": (
        100 * 128 * 49 + 2 * 128 + 128 * 64 * 16 + 2 * 64 + 64 * 1 * 16,  # 759,680
        1 * 64 * 16 + 64 * 128 * 16 + 2 * 128 + 128 * 1 * 49,  # 138,624
    ),
}


def expected_counts(config) -> tuple[int, int]:
    labels = config.num_classes if config.conditional else 0
    projection = config.projection_discriminator
    d_labels = 0 if projection else labels  # a projection D's input is the bare image
    if config.arch == "dcgan":
        nz, ngf, ndf = config.latent_dim + labels, config.g_features, config.d_features
        g = nz * 2 * ngf * 49 + 2 * (2 * ngf) + 2 * ngf * ngf * 16 + 2 * ngf + ngf * 16
        d = (1 + d_labels) * ndf * 16 + ndf * 2 * ndf * 16 + 2 * (2 * ndf) + 2 * ndf * 49
        return g, d + projection * labels * 2 * ndf  # the embedding (10, 2ndf)
    g = expected_param_count((config.latent_dim + labels, *config.g_hidden, 784))
    d = expected_param_count((784 + d_labels, *config.d_hidden, 1))
    return g, d + projection * labels * config.d_hidden[-1]  # the embedding (10, last hidden width)


@functools.cache
def fresh_variables(config):
    """models.init_variables(config, key 0), compiled once per config."""
    return jax.jit(models.init_variables, static_argnums=0)(config, jax.random.key(0))


def example_inputs(config, batch: int = 5):
    z = jax.random.normal(jax.random.key(1), (batch, config.latent_dim))
    labels = jnp.arange(batch, dtype=jnp.int32) % 10 if config.conditional else None
    return z, labels


def shapes_of_forwards(config, g_vars, d_vars, train: bool):
    """(images, logits) shapes of G and D, from shapes alone (nothing is computed)."""
    z, labels = example_inputs(config)

    def forward(g_vars, d_vars, z, labels):
        mutable = ["batch_stats"] if train else False
        images = Generator(config).apply(g_vars, z, labels, train=train, mutable=mutable)
        images = images[0] if train else images
        logits = Discriminator(config).apply(d_vars, images, labels, train=train, mutable=mutable)
        return images, (logits[0] if train else logits)

    return jax.eval_shape(forward, g_vars, d_vars, z, labels)


@pytest.mark.parametrize("name", PRESETS)
def test_param_counts_and_shapes(name):
    """Every preset, and every preset with `conditional` flipped."""
    for flipped in (False, True):
        config = preset(name).replace(conditional=preset(name).conditional != flipped)
        g_vars, d_vars = jax.eval_shape(lambda c=config: models.init_variables(c, jax.random.key(0)))
        counts = (count_params(g_vars["params"]), count_params(d_vars["params"]))
        assert counts == expected_counts(config)
        if not flipped and name in PARAM_COUNTS:
            assert counts == PARAM_COUNTS[name]
        for train in (True, False):
            images, logits = shapes_of_forwards(config, g_vars, d_vars, train)
            assert images.shape == (5, 28, 28, 1) and images.dtype == jnp.float32
            assert logits.shape == (5,) and logits.dtype == jnp.float32


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny", "tiny-dcgan"])
def test_forward_in_train_and_eval_mode(name):
    config = preset(name)
    g_vars, d_vars = fresh_variables(config)
    z, labels = example_inputs(config)
    images, g_updates = Generator(config).apply(g_vars, z, labels, train=True, mutable=["batch_stats"])
    assert float(jnp.abs(images).max()) <= 1.0  # Tanh
    assert set(g_updates) == ({"batch_stats"} if config.arch == "dcgan" else set())
    eval_images = Generator(config).apply(g_vars, z, labels, train=False)
    logits = Discriminator(config).apply(d_vars, eval_images, labels, train=False)
    assert logits.shape == (5,) and bool(jnp.isfinite(logits).all())
    if config.arch == "dcgan":  # fresh running stats (0, 1) are not the batch's: the modes differ
        assert float(jnp.abs(images - eval_images).max()) > 1e-3
        with pytest.raises(Exception, match="batch_stats"):  # train mode must be allowed to update them
            Generator(config).apply(g_vars, z, labels, train=True)
    else:
        assert np.array_equal(images, eval_images)


def test_layers_are_named_in_order_with_torch_shapes_transposed():
    g_params, d_params = init_params(PRESETS["deep"], jax.random.key(0))
    assert list(g_params["net"]) == ["linear_0", "linear_1", "linear_2"]
    assert g_params["net"]["linear_1"]["kernel"].shape == (256, 512)  # torch weight is (512, 256)
    assert d_params["net"]["linear_2"]["bias"].shape == (1,)


def test_init_is_pytorch_linear_default():
    """Weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)): bounded, with the uniform's std."""
    g_params, _ = init_params(PRESETS["deep"], jax.random.key(0))
    for layer, fan_in in (("linear_0", 100), ("linear_1", 256), ("linear_2", 512)):
        bound = 1 / np.sqrt(fan_in)
        kernel = np.asarray(g_params["net"][layer]["kernel"])
        bias = np.asarray(g_params["net"][layer]["bias"])
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
        assert kernel.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)
        assert kernel.max() > 0.95 * bound  # not a narrower distribution


def test_init_depends_on_key_only():
    a, _ = init_params(PRESETS["small"], jax.random.key(3))
    b, _ = init_params(PRESETS["small"], jax.random.key(3))
    c, _ = init_params(PRESETS["small"], jax.random.key(4))
    same = jax.tree.map(lambda x, y: bool((x == y).all()), a, b)
    assert all(jax.tree.leaves(same))
    assert not np.array_equal(a["net"]["linear_0"]["kernel"], c["net"]["linear_0"]["kernel"])


def test_dcgan_layers_and_init_follow_pytorch_examples():
    """Conv kernels N(0, 0.02), BatchNorm scale N(1, 0.02) and bias 0, no conv biases; stats 0, 1, 0."""
    g_vars, d_vars = fresh_variables(preset("tiny-dcgan"))
    g, d = g_vars["params"]["net"], d_vars["params"]["net"]
    assert set(g) == {"conv_transpose_0", "batch_norm_0", "conv_transpose_1", "batch_norm_1", "conv_transpose_2"}
    assert set(d) == {"conv_0", "conv_1", "batch_norm_1", "conv_2"}
    assert g["conv_transpose_0"]["kernel"].shape == (7, 7, 16, 16)  # (k, k, out=2ngf, in=nz): torch's (in, out, k, k)
    assert d["conv_1"]["kernel"].shape == (4, 4, 8, 16)  # (k, k, in=ndf, out=2ndf): torch's (out, in, k, k)
    kernels = np.concatenate(
        [np.ravel(layer["kernel"]) for net in (g, d) for layer in net.values() if "kernel" in layer]
    )
    assert abs(kernels.mean()) < 1e-3 and kernels.std() == pytest.approx(0.02, rel=0.02)
    scales = np.concatenate(
        [np.asarray(net[bn]["scale"]) for net, bn in ((g, "batch_norm_0"), (g, "batch_norm_1"), (d, "batch_norm_1"))]
    )
    assert abs(scales.mean() - 1) < 0.01 and scales.std() == pytest.approx(0.02, rel=0.3)  # 40 values
    biases = [net[bn]["bias"] for net, bn in ((g, "batch_norm_0"), (g, "batch_norm_1"), (d, "batch_norm_1"))]
    assert all(not np.asarray(b).any() for b in biases)
    stats = g_vars["batch_stats"]["net"]["batch_norm_0"]
    assert not np.asarray(stats["mean"]).any() and (np.asarray(stats["var"]) == 1).all()
    assert stats["num_batches_tracked"].dtype == jnp.int32 and int(stats["num_batches_tracked"]) == 0


@pytest.mark.slow
def test_batch_norm_train_mode_normalises_and_tracks_pytorchs_running_stats():
    """Train mode: batch mean and biased variance; running stats get the *unbiased* variance, momentum 0.9."""
    x = jax.random.normal(jax.random.key(0), (4, 3, 3, 5)) * 3.0 + 2.0  # n = 36 per channel
    bn = models.BatchNorm()
    variables = bn.init(jax.random.key(1), x, train=True)
    assert int(variables["batch_stats"]["num_batches_tracked"]) == 0  # init does not count
    variables = {"params": {"scale": jnp.ones(5), "bias": jnp.zeros(5)}, "batch_stats": variables["batch_stats"]}
    y, updates = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    flat = np.asarray(x, np.float64).reshape(-1, 5)
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 5).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 5).var(0), 1 - 1e-5 / flat.var(0), atol=1e-5)
    stats = updates["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
    assert int(stats["num_batches_tracked"]) == 1
    # Eval mode normalises with the running statistics and changes nothing.
    after = {**variables, **updates}
    expected = (np.asarray(x) - np.asarray(stats["mean"])) / np.sqrt(np.asarray(stats["var"]) + 1e-5)
    np.testing.assert_allclose(bn.apply(after, x, train=False), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny", "tiny-dcgan"])
@pytest.mark.parametrize("conditioning", ["concat", "projection"])
def test_conditional_networks_need_their_labels_and_use_them(name, conditioning):
    config = preset(name).replace(conditional=True, conditioning=conditioning)
    g_vars, d_vars = fresh_variables(config)
    z, labels = example_inputs(config)
    with pytest.raises(ValueError, match="the conditional generator needs labels"):
        Generator(config).apply(g_vars, z, train=False)
    with pytest.raises(ValueError, match="the discriminator is not conditional"):
        plain = preset(name)
        Discriminator(plain).apply(
            jax.eval_shape(lambda: models.init_variables(plain, jax.random.key(0)))[1],
            jnp.zeros((5, 28, 28, 1)),
            labels,
        )
    images = Generator(config).apply(g_vars, z, labels, train=False)
    other = Generator(config).apply(g_vars, z, (labels + 1) % 10, train=False)
    assert float(jnp.abs(images - other).max()) > 1e-4
    logits = Discriminator(config).apply(d_vars, images, labels, train=False)
    assert (
        float(jnp.abs(logits - Discriminator(config).apply(d_vars, images, (labels + 1) % 10, train=False)).max())
        > 1e-5
    )


def test_conditional_mlp_grows_the_first_layers_input_only():
    plain, conditional = (
        jax.eval_shape(lambda c=c: init_params(preset("tiny").replace(conditional=c), jax.random.key(0)))
        for c in (False, True)
    )
    for net in (0, 1):
        a, b = plain[net]["net"], conditional[net]["net"]
        assert list(a) == list(b)
        assert b["linear_0"]["kernel"].shape == (
            a["linear_0"]["kernel"].shape[0] + 10,
            a["linear_0"]["kernel"].shape[1],
        )
        assert all(a[k]["kernel"].shape == b[k]["kernel"].shape for k in list(a)[1:])


@pytest.mark.parametrize("name", ["tiny", "tiny-dcgan"])
def test_projection_discriminator_reads_the_bare_image_and_adds_the_label_term(name):
    """conditioning "projection": D's layers are the unconditional D's, plus `embed` (10, |φ|); its
    logit is the unconditional logit of the same weights plus <embed[label], φ(x)>."""
    config = preset(name).replace(conditional=True, conditioning="projection")
    plain = preset(name)
    _, d_vars = fresh_variables(config)
    _, plain_vars = fresh_variables(plain)
    net, plain_net = d_vars["params"]["net"], plain_vars["params"]["net"]
    width = config.d_hidden[-1] if config.arch == "mlp" else 2 * config.d_features
    assert set(net) == {*plain_net, "embed"} and net["embed"]["embedding"].shape == (10, width)
    assert jax.tree.map(jnp.shape, {k: v for k, v in net.items() if k != "embed"}) == jax.tree.map(jnp.shape, plain_net)
    images = jax.random.uniform(jax.random.key(2), (5, 28, 28, 1), minval=-1, maxval=1)
    labels = jnp.arange(5, dtype=jnp.int32) * 2
    without = {**d_vars, "params": {"net": {k: v for k, v in net.items() if k != "embed"}}}
    bare = Discriminator(plain).apply(without, images, train=False)
    logits = Discriminator(config).apply(d_vars, images, labels, train=False)
    # The label term alone: with a zero embedding the projection D is the unconditional one.
    zeroed = {**d_vars, "params": {"net": {**net, "embed": {"embedding": jnp.zeros((10, width))}}}}
    np.testing.assert_allclose(Discriminator(config).apply(zeroed, images, labels, train=False), bare, atol=1e-6)
    assert float(jnp.abs(logits - bare).min()) > 1e-6  # every example's logit moved by its label's term


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (lambda impl: models.Conv(8, 4, 2, 1, impl=impl), (3, 28, 28, 11)),  # the DCGAN's D, conditional
        (lambda impl: models.Conv(1, 7, 1, 0, impl=impl), (3, 7, 7, 16)),
        (lambda impl: models.Conv(32, 5, 1, 2, use_bias=True, impl=impl), (3, 14, 14, 16)),  # the classifier's
        (lambda impl: models.ConvTranspose(8, 4, 2, 1, impl=impl), (3, 7, 7, 16)),
        (lambda impl: models.ConvTranspose(16, 7, 1, 0, impl=impl), (3, 1, 1, 26)),
    ],
    ids=["conv-s2", "conv-7x7", "conv-bias", "convT-s2", "convT-7x7"],
)
def test_matrix_product_and_xla_convolutions_agree(layer, shape):
    """Both implementations of each layer (`models.conv_impl` picks one per backend) compute the same
    outputs and gradients from the same parameters, up to float32 summation order."""
    x = jax.random.normal(jax.random.key(1), shape)
    variables = layer("gemm").init(jax.random.key(0), x)

    @functools.partial(jax.jit, static_argnums=0)
    def forward_and_grads(impl, variables, x):
        def loss(variables, x):
            out = layer(impl).apply(variables, x)
            return jnp.sum(jnp.sin(out)), out

        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(variables, x)
        return out, grads

    out, grads = {}, {}
    for impl in models.CONV_IMPLS:
        out[impl], grads[impl] = forward_and_grads(impl, variables, x)
    for impl in ("xla", "xla-pad"):
        np.testing.assert_allclose(out["gemm"], out[impl], atol=2e-6, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(grads["gemm"]), jax.tree.leaves(grads[impl]), strict=True):
            # Each gradient element sums B * H * W products: its rounding scales with the largest.
            assert np.max(np.abs(a - b)) <= 2e-6 * max(1.0, float(np.max(np.abs(a))))
    assert models.conv_impl("cpu") == "gemm" and models.conv_impl("gpu") == models.conv_impl("tpu") == "xla"
