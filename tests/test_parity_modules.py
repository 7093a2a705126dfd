"""Cross-framework parity, module by module: every network computes what torch_ref's does.

For the MLP and the DCGAN, each unconditional, conditional by concat and conditional by
projection, at tiny sizes in float32: the same weights (through jaxgan.convert) give the same
generator and discriminator outputs in train mode and in eval mode, the same BatchNorm running
statistics, and, for each GAN loss, the same loss values and gradients with respect to every
parameter. The mutation tests show each tolerance is sharp: breaking one detail on the JAX side
misses it by at least MIN_FACTOR.

Gaps are relative: max |jax - torch| / max |torch| per tensor, and |jax - torch| / max(|torch|, 1)
for a loss value (a loss near 0, such as hinge's G loss -mean(logits), has no relative digits).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import convert, losses, models
from jaxgan.config import LOSSES, PRESETS, Config, preset

torch = pytest.importorskip("torch")
import torch_ref  # noqa: E402
from torch_ref import losses as torch_losses  # noqa: E402

pytestmark = pytest.mark.parity

# Tolerances, from measured gaps (docs/presets-dcgan.md, "Parity with PyTorch").
OUTPUT_TOL = 5e-6  # G images, D logits, in train and eval mode
STATS_TOL = 2e-6  # BatchNorm running mean and var (num_batches_tracked: exactly equal)
LOSS_TOL = 2e-6  # loss values through the networks
GRAD_TOL = 2e-5  # gradient of each loss with respect to every parameter
MIN_FACTOR = 10  # every mutation must miss its tolerance by at least this factor
BATCH = 8

# Loss lsgan: torch_ref's discriminator then ends in the bare logit, so forwards compare logits
# (near D(x) = 1/2 a Sigmoid would round their last digits away). The gradient tests run each loss.
CASES = {
    "mlp": preset("tiny").replace(loss="lsgan"),
    "mlp-conditional": preset("tiny").replace(loss="lsgan", conditional=True),
    "dcgan": preset("tiny-dcgan").replace(loss="lsgan"),
    "dcgan-conditional": preset("tiny-dcgan").replace(loss="lsgan", conditional=True),
    "mlp-projection": preset("tiny").replace(loss="lsgan", conditional=True, conditioning="projection"),
    "dcgan-projection": preset("tiny-dcgan").replace(loss="lsgan", conditional=True, conditioning="projection"),
}
CONDITIONAL = [name for name, config in CASES.items() if config.conditional]


def rel_gap(actual, expected, floor: float = 1e-30) -> float:
    """max |actual - expected| / max(max |expected|, floor)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected.detach() if hasattr(expected, "detach") else expected, np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), floor))


def nchw_to_nhwc(x) -> np.ndarray:
    return x.detach().numpy().transpose(0, 2, 3, 1)


class Pair:
    """The same fresh networks on both sides: torch_ref modules and their Flax variables (through
    convert; jaxgan's own initialisation is tested in tests/test_models.py)."""

    def __init__(self, config: Config, seed: int = 0):
        self.config = config
        self.G, self.D = torch_ref.build_models(config, seed)
        self.g_vars = convert.state_dict_to_variables(config, "generator", self.G.state_dict())
        self.d_vars = convert.state_dict_to_variables(config, "discriminator", self.D.state_dict())


def batch(config: Config, seed: int):
    """Inputs of one step: z (B, latent_dim), real images (B, 28, 28, 1) in [-1, 1], labels (B,) or None."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(BATCH, config.latent_dim)).astype(np.float32)
    real = rng.uniform(-1, 1, size=(BATCH, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, config.num_classes, BATCH).astype(np.int32) if config.conditional else None
    return z, real, labels


def torch_labels(labels):
    return None if labels is None else torch.tensor(labels, dtype=torch.long)


def apply(module, variables, x, labels, train: bool):
    """A Flax forward: (output, variables after it); train mode updates the batch_stats it has."""
    if not train:
        return module.apply(variables, x, labels, train=False), variables
    out, updates = module.apply(variables, x, labels, train=True, mutable=["batch_stats"])
    return out, {**variables, **updates}


def stats_gap(config: Config, net: str, variables, module) -> float:
    """Worst relative gap of the running mean and var, and the difference of num_batches_tracked."""
    if "batch_stats" not in variables:
        return 0.0
    mine = convert.variables_to_state_dict(config, net, variables)
    theirs = module.state_dict()
    gap = 0.0
    for key in mine:
        if key.endswith("num_batches_tracked"):
            assert int(theirs[key]) > 0, key
            gap = max(gap, abs(int(mine[key]) - int(theirs[key])))
        elif "running" in key:
            gap = max(gap, rel_gap(mine[key], theirs[key]))
    return gap


def forward_gaps(pair: Pair, seed: int = 1, g_vars=None, g_train=None, d_labels=None) -> dict[str, float]:
    """Train-mode G and D forwards, then eval-mode ones with the updated statistics, on both sides.

    The JAX side may be mutated: other generator variables, G's mode during training, D's labels.
    """
    config = pair.config
    z, real, labels = batch(config, seed)
    G, D = models.Generator(config), models.Discriminator(config)
    g_vars = pair.g_vars if g_vars is None else g_vars
    gaps = {}
    pair.G.train(), pair.D.train()
    images, g_vars = apply(G, g_vars, z, labels, train=True if g_train is None else g_train)
    gaps["G train"] = rel_gap(images, nchw_to_nhwc(pair.G(torch.tensor(z), torch_labels(labels))))
    logits, d_vars = apply(D, pair.d_vars, real, labels if d_labels is None else d_labels(labels), train=True)
    d_out = pair.D(torch.tensor(real), torch_labels(labels))[:, 0]
    gaps["D train"] = rel_gap(logits, d_out)
    gaps["G stats"] = stats_gap(config, "generator", g_vars, pair.G)
    gaps["D stats"] = stats_gap(config, "discriminator", d_vars, pair.D)
    pair.G.eval(), pair.D.eval()
    with torch.no_grad():
        images, _ = apply(G, g_vars, z, labels, train=False)
        gaps["G eval"] = rel_gap(images, nchw_to_nhwc(pair.G(torch.tensor(z), torch_labels(labels))))
        logits, _ = apply(D, d_vars, real, labels, train=False)
        d_out = pair.D(torch.tensor(real), torch_labels(labels))[:, 0]
        gaps["D eval"] = rel_gap(logits, d_out)
    return gaps


def tolerance(kind: str) -> float:
    return STATS_TOL if "stats" in kind else OUTPUT_TOL


def worst_ratio(gaps: dict[str, float]) -> float:
    return max(gap / tolerance(kind) for kind, gap in gaps.items())


# ---------------------------------------------------------------- 0. precision


def test_the_tests_ask_for_full_float32_products_and_convolutions():
    """tests/conftest.py sets JAX_DEFAULT_MATMUL_PRECISION=highest: without it a GPU's float32
    matmuls and convolutions run as TF32 and miss these tolerances (docs/parity.md, "Precision")."""
    assert jax.config.jax_default_matmul_precision == "highest"
    layer = models.Conv(4, 3, 1, 1, impl="xla")
    x = jnp.ones((1, 5, 5, 2))
    text = jax.jit(layer.apply).lower(layer.init(jax.random.key(0), x), x).as_text()
    assert "convolution" in text and "HIGHEST" in text
    text = jax.jit(lambda a, b: a @ b).lower(jnp.ones((4, 4)), jnp.ones((4, 4))).as_text()
    assert "precision = [HIGHEST, HIGHEST]" in text


# ---------------------------------------------------------------- 1. sizes


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_has_the_same_parameters_and_buffers_as_torch_ref(name):
    config = preset(name)
    g_vars, d_vars = jax.eval_shape(lambda: models.init_variables(config, jax.random.key(0)))
    G, D = torch_ref.build_models(config)
    for variables, module in ((g_vars, G), (d_vars, D)):
        assert models.count_params(variables["params"]) == sum(p.numel() for p in module.parameters())
        stats = variables.get("batch_stats", {})
        assert models.count_params(stats) == sum(b.numel() for b in module.buffers())
        assert len(jax.tree.leaves(stats)) == len(list(module.buffers()))


# ---------------------------------------------------------------- 2. the building blocks


# The DCGAN's layers, and one shape the DCGAN does not use (odd kernel, stride not dividing it).
TRANSPOSE_SHAPES = [(4, 2, 1, 7), (4, 2, 1, 14), (7, 1, 0, 1), (3, 2, 0, 9)]
CONV_SHAPES = [(4, 2, 1, 28), (4, 2, 1, 14), (7, 1, 0, 7), (3, 2, 0, 9)]


@pytest.mark.parametrize(("kernel", "stride", "padding", "size"), CONV_SHAPES)
def test_conv_is_torchs_with_a_transposed_kernel(kernel, stride, padding, size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, size, size)).astype(np.float32)  # NCHW, 5 channels in
    weight = rng.normal(size=(6, 5, kernel, kernel)).astype(np.float32)  # torch: (out, in, k, k)
    expected = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(weight), stride=stride, padding=padding)
    layer = models.torch_conv(6, kernel, stride, padding, name="layer")
    kernel_flax = weight.transpose(2, 3, 1, 0)  # (k, k, in, out)
    out = layer.apply({"params": {"kernel": kernel_flax}}, x.transpose(0, 2, 3, 1))
    assert out.shape[1:] == nchw_to_nhwc(expected).shape[1:]
    gap = rel_gap(out, nchw_to_nhwc(expected))
    swapped = layer.apply({"params": {"kernel": kernel_flax.transpose(1, 0, 2, 3)}}, x.transpose(0, 2, 3, 1))
    factor = rel_gap(swapped, nchw_to_nhwc(expected)) / OUTPUT_TOL
    print(f"PARITY conv k{kernel} s{stride} p{padding}: gap {gap:.3g}; kernel rows and columns swapped {factor:.0f}x")
    assert gap <= OUTPUT_TOL and factor >= MIN_FACTOR


@pytest.mark.parametrize(("kernel", "stride", "padding", "size"), TRANSPOSE_SHAPES)
def test_conv_transpose_is_torchs_with_a_transposed_unflipped_kernel(kernel, stride, padding, size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, size, size)).astype(np.float32)  # NCHW, 5 channels in
    weight = rng.normal(size=(5, 6, kernel, kernel)).astype(np.float32)  # torch: (in, out, k, k)
    expected = torch.nn.functional.conv_transpose2d(
        torch.tensor(x), torch.tensor(weight), stride=stride, padding=padding
    )
    layer = models.torch_conv_transpose(6, kernel, stride, padding, name="layer")
    kernel_flax = weight.transpose(2, 3, 1, 0)  # (k, k, out, in)
    out = layer.apply({"params": {"kernel": kernel_flax}}, x.transpose(0, 2, 3, 1))
    assert out.shape[1] == (size - 1) * stride - 2 * padding + kernel
    gap = rel_gap(out, nchw_to_nhwc(expected))
    flipped = layer.apply({"params": {"kernel": kernel_flax[::-1, ::-1]}}, x.transpose(0, 2, 3, 1))
    factor = rel_gap(flipped, nchw_to_nhwc(expected)) / OUTPUT_TOL
    print(f"PARITY conv_transpose k{kernel} s{stride} p{padding}: gap {gap:.3g}; unflipped kernel {factor:.0f}x")
    assert gap <= OUTPUT_TOL and factor >= MIN_FACTOR


def test_batch_norm_is_torchs_in_train_and_eval_mode_over_three_steps():
    rng = np.random.default_rng(0)
    bn = torch.nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.weight.normal_(1.0, 0.5), bn.bias.normal_(0.0, 0.5)
    variables = {
        "params": {"scale": bn.weight.detach().numpy().copy(), "bias": bn.bias.detach().numpy().copy()},
        "batch_stats": {"mean": np.zeros(5, np.float32), "var": np.ones(5, np.float32)},
    }
    variables["batch_stats"]["num_batches_tracked"] = np.zeros((), np.int32)
    module = models.BatchNorm()
    gaps = []
    for step in range(3):
        x = rng.normal(2.0, 3.0, size=(4, 5, 3, 3)).astype(np.float32)  # NCHW, n = 36 per channel
        bn.train()
        expected = nchw_to_nhwc(bn(torch.tensor(x)))
        out, updates = module.apply(variables, x.transpose(0, 2, 3, 1), train=True, mutable=["batch_stats"])
        variables = {**variables, **updates}
        stats = variables["batch_stats"]
        gaps += [rel_gap(out, expected), rel_gap(stats["mean"], bn.running_mean), rel_gap(stats["var"], bn.running_var)]
        assert int(stats["num_batches_tracked"]) == int(bn.num_batches_tracked) == step + 1
        bn.eval()
        gaps.append(
            rel_gap(module.apply(variables, x.transpose(0, 2, 3, 1), train=False), nchw_to_nhwc(bn(torch.tensor(x))))
        )
    print(f"PARITY BatchNorm: worst gap {max(gaps):.3g}")
    assert max(gaps) <= STATS_TOL


# ---------------------------------------------------------------- 3. whole networks, forward


@pytest.mark.parametrize("name", list(CASES))
def test_forward_in_train_and_eval_mode_and_running_stats_agree(name):
    gaps = forward_gaps(Pair(CASES[name]))
    print(f"PARITY forward {name}: " + ", ".join(f"{k} {v:.3g}" for k, v in gaps.items()))
    assert worst_ratio(gaps) <= 1, gaps


# ---------------------------------------------------------------- 4. every loss's gradients through the networks


def jax_losses_and_grads(config: Config, g_vars, d_vars, z, real, labels, z_g):
    """One step's two losses in train mode and their gradients, D first (fake detached), then G.

    Returns (d_loss, g_loss, d_grads, g_grads, g_vars, d_vars) with the BatchNorm statistics after
    the step's forwards: G on z, D on real, D on fake, G on z_g, D on G(z_g).
    """
    G, D, kind = models.Generator(config), models.Discriminator(config), config.loss
    fake, g_vars = apply(G, g_vars, z, labels, train=True)
    fake = jax.lax.stop_gradient(fake)

    def d_objective(d_params):
        real_logits, state = apply(D, {**d_vars, "params": d_params}, real, labels, train=True)
        fake_logits, state = apply(D, state, fake, labels, train=True)
        return losses.d_loss(kind, real_logits, fake_logits), state

    (d_loss, d_vars), d_grads = jax.value_and_grad(d_objective, has_aux=True)(d_vars["params"])

    def g_objective(g_params):
        images, g_state = apply(G, {**g_vars, "params": g_params}, z_g, labels, train=True)
        logits, d_state = apply(D, d_vars, images, labels, train=True)
        return losses.g_loss(kind, logits), (g_state, d_state)

    (g_loss, (g_vars, d_vars)), g_grads = jax.value_and_grad(g_objective, has_aux=True)(g_vars["params"])
    return d_loss, g_loss, d_grads, g_grads, g_vars, d_vars


def torch_losses_and_grads(config: Config, G, D, z, real, labels, z_g):
    """The same in torch_ref: gradients by parameter name."""
    kind, labels = config.loss, torch_labels(labels)
    G.train(), D.train()
    fake = G(torch.tensor(z), labels).detach()
    d_loss = torch_losses.d_loss(kind, D(torch.tensor(real), labels), D(fake, labels))
    d_grads = dict(
        zip([n for n, _ in D.named_parameters()], torch.autograd.grad(d_loss, list(D.parameters())), strict=True)
    )
    g_loss = torch_losses.g_loss(kind, D(G(torch.tensor(z_g), labels), labels))
    g_grads = dict(
        zip([n for n, _ in G.named_parameters()], torch.autograd.grad(g_loss, list(G.parameters())), strict=True)
    )
    return d_loss, g_loss, d_grads, g_grads


def gradient_gaps(config: Config, jax_config: Config | None = None) -> dict[str, float]:
    """Loss, gradient and statistics gaps of one step's losses; the JAX side may use another config."""
    pair = Pair(config)
    z, real, labels = batch(config, 1)
    z_g = batch(config, 2)[0]
    d_loss, g_loss, d_grads, g_grads, g_vars, d_vars = jax_losses_and_grads(
        jax_config or config, pair.g_vars, pair.d_vars, z, real, labels, z_g
    )
    t_d_loss, t_g_loss, t_d_grads, t_g_grads = torch_losses_and_grads(config, pair.G, pair.D, z, real, labels, z_g)
    gaps = {"loss": max(rel_gap(d_loss, t_d_loss, floor=1), rel_gap(g_loss, t_g_loss, floor=1)), "grad": 0.0}
    for net, grads, expected in (("discriminator", d_grads, t_d_grads), ("generator", g_grads, t_g_grads)):
        mine = convert.params_to_state_dict(config, net, grads)
        assert list(mine) == list(expected)
        gaps["grad"] = max(gaps["grad"], *(rel_gap(mine[k], expected[k]) for k in expected))
    gaps["stats"] = max(
        stats_gap(config, "generator", g_vars, pair.G), stats_gap(config, "discriminator", d_vars, pair.D)
    )
    return gaps


GRADIENT_TOLS = {"loss": LOSS_TOL, "grad": GRAD_TOL, "stats": STATS_TOL}


# Every loss through both conditional networks (which run every layer the unconditional ones do),
# and the seeds' loss through the unconditional ones.
GRADIENT_CASES = [(name, loss) for name in CONDITIONAL for loss in LOSSES] + [("mlp", "bce"), ("dcgan", "bce")]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "loss"), GRADIENT_CASES)
def test_every_loss_and_its_gradients_agree_through_the_networks(name, loss):
    gaps = gradient_gaps(CASES[name].replace(loss=loss))
    print(f"PARITY gradients {name} {loss}: " + ", ".join(f"{k} {v:.3g}" for k, v in gaps.items()))
    for kind, gap in gaps.items():
        assert gap <= GRADIENT_TOLS[kind], (kind, gaps)


# ---------------------------------------------------------------- 5. the parity is sharp: mutations


def flip_conv_transpose_kernels(g_vars):
    """Mutation: copy torch's ConvTranspose2d weights without the spatial flip transpose_kernel makes."""
    net = {
        name: ({"kernel": layer["kernel"][::-1, ::-1]} if name.startswith("conv_transpose") else layer)
        for name, layer in g_vars["params"]["net"].items()
    }
    return {**g_vars, "params": {"net": net}}


def test_mutation_conv_transpose_kernel_not_flipped():
    pair = Pair(CASES["dcgan"])
    gaps = forward_gaps(pair, g_vars=flip_conv_transpose_kernels(pair.g_vars))
    factor = gaps["G train"] / OUTPUT_TOL
    print(f"PARITY mutation ConvTranspose kernel not flipped: {factor:.0f}x")
    assert factor >= MIN_FACTOR


def test_mutation_batch_norm_momentum_confused(monkeypatch):
    """Flax's momentum 0.9 is PyTorch's 0.1; PyTorch's number in flax's convention is wrong."""
    monkeypatch.setattr(models, "BatchNorm", functools.partial(models.BatchNorm, momentum=0.1))
    gaps = forward_gaps(Pair(CASES["dcgan"]))
    factor = max(gaps["G stats"], gaps["D stats"]) / STATS_TOL
    print(f"PARITY mutation BatchNorm momentum 0.1 for 0.9: {factor:.0f}x")
    assert factor >= MIN_FACTOR


def test_mutation_batch_norm_in_eval_mode_during_training():
    gaps = forward_gaps(Pair(CASES["dcgan"]), g_train=False)
    factor = gaps["G train"] / OUTPUT_TOL
    print(f"PARITY mutation BatchNorm eval mode in training: {factor:.0f}x")
    assert factor >= MIN_FACTOR


PROJECTION = [name for name, config in CASES.items() if config.projection_discriminator]


@pytest.mark.parametrize("name", PROJECTION)
def test_mutation_projection_term_dropped(name, monkeypatch):
    """A projection D without its label term <embed[label], φ(x)> (the label ignored)."""
    pair = Pair(CASES[name])  # before the mutation: convert's cached variable shapes must be the real model's
    monkeypatch.setattr(models, "projection", lambda features, labels, *_: jnp.zeros(features.shape[0]))
    gaps = forward_gaps(pair)
    factor = gaps["D train"] / OUTPUT_TOL
    print(f"PARITY mutation projection term dropped ({name}): {factor:.0f}x")
    assert factor >= MIN_FACTOR


def before_activation(name: str):
    """φ(x) as it was before D's last LeakyReLU (recovered by inverting it)."""
    slope = CASES[name].leaky_slope
    return lambda features: jnp.where(features < 0, features / slope, features)


# The features a projection must read, each mutated: the MLP's after its LeakyReLU, the DCGAN's
# summed (not averaged) over its 7x7 positions.
FEATURE_MUTATIONS = {
    "mlp-projection": ("features before the activation", before_activation("mlp-projection")),
    "dcgan-projection": ("7x7 features averaged, not summed", lambda features: features / 49),
}


@pytest.mark.parametrize("name", PROJECTION)
def test_mutation_projection_of_the_wrong_features(name, monkeypatch):
    what, mutate = FEATURE_MUTATIONS[name]
    original = models.projection
    pair = Pair(CASES[name])  # before the mutation, as above
    monkeypatch.setattr(models, "projection", lambda features, *args: original(mutate(features), *args))
    gaps = forward_gaps(pair)
    factor = gaps["D train"] / OUTPUT_TOL
    print(f"PARITY mutation projection of the {what} ({name}): {factor:.0f}x")
    assert factor >= MIN_FACTOR


@pytest.mark.parametrize("name", CONDITIONAL)
def test_mutation_wrong_label_fed_to_d(name):
    gaps = forward_gaps(Pair(CASES[name]), d_labels=lambda labels: (labels + 1) % 10)
    factor = gaps["D train"] / OUTPUT_TOL
    print(f"PARITY mutation wrong label to D ({name}): {factor:.0f}x")
    assert factor >= MIN_FACTOR


# ---------------------------------------------------------------- 6. WGAN-GP's gradient penalty, double backprop


def penalty_gaps(name: str, penalty=losses.gradient_penalty, eps_of=lambda eps: eps) -> dict[str, float]:
    """The penalty at D's interpolates and its gradient w.r.t. every D parameter, against torch_ref's
    (torch.autograd.grad(create_graph=True), then backward through it). The JAX side may be mutated."""
    config = CASES[name].replace(loss="wgan-gp")
    pair = Pair(config)
    z, real, labels = batch(config, 1)
    eps = np.random.default_rng(3).uniform(size=BATCH).astype(np.float32)
    fake, _ = apply(models.Generator(config), pair.g_vars, z, labels, train=True)
    D = models.Discriminator(config)

    def of_params(d_params):
        critic = lambda x: apply(D, {**pair.d_vars, "params": d_params}, x, labels, train=True)[0]  # noqa: E731
        return penalty(critic, real, fake, eps_of(eps))

    value, grads = jax.value_and_grad(of_params)(pair.d_vars["params"])
    pair.D.train()
    critic = lambda x: pair.D(x, torch_labels(labels))  # noqa: E731
    t_fake = torch.tensor(np.asarray(fake).transpose(0, 3, 1, 2))
    t_value = torch_losses.gradient_penalty(critic, torch.tensor(real).permute(0, 3, 1, 2), t_fake, torch.tensor(eps))
    params = list(pair.D.parameters())  # D's last bias does not reach the input gradient: its gradient is 0
    t_grads = torch.autograd.grad(t_value, params, allow_unused=True)
    t_grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, t_grads, strict=True)]
    mine = convert.params_to_state_dict(config, "discriminator", grads)
    expected = dict(zip([n for n, _ in pair.D.named_parameters()], t_grads, strict=True))
    return {"loss": rel_gap(value, t_value, floor=1), "grad": max(rel_gap(mine[k], expected[k]) for k in expected)}


@pytest.mark.slow
@pytest.mark.parametrize("name", CONDITIONAL)
def test_gradient_penalty_and_its_double_backprop_agree(name):
    gaps = penalty_gaps(name)
    print(f"PARITY gradient penalty {name}: " + ", ".join(f"{k} {v:.3g}" for k, v in gaps.items()))
    assert gaps["loss"] <= LOSS_TOL and gaps["grad"] <= GRAD_TOL, gaps


def penalty_without_double_backprop(critic, real, fake, eps):
    """Mutation: the input gradient treated as a constant (torch's create_graph=False)."""
    mix = eps[:, None, None, None]
    grads = jax.lax.stop_gradient(jax.grad(lambda x: critic(x).sum())(mix * real + (1 - mix) * fake))
    return jnp.square(jnp.sqrt(jnp.square(grads).reshape(grads.shape[0], -1).sum(axis=1)) - 1).mean()


@pytest.mark.parametrize(
    "mutation",
    ["no double backprop", "penalty at the real images, not the interpolates"],
)
def test_mutation_gradient_penalty(mutation):
    if mutation == "no double backprop":
        gaps = penalty_gaps("mlp-conditional", penalty=penalty_without_double_backprop)
    else:
        gaps = penalty_gaps("mlp-conditional", eps_of=np.ones_like)
    factor = max(gaps["loss"] / LOSS_TOL, gaps["grad"] / GRAD_TOL)
    print(f"PARITY mutation gradient penalty, {mutation}: {factor:.0f}x")
    assert factor >= MIN_FACTOR
