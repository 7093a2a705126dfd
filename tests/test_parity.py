"""Cross-framework parity: jaxgan trains exactly like torch_ref, the seeds' PyTorch recipe.

Both sides start from identical weights (through jaxgan.convert) and see identical batches
(jaxgan's `epoch_batch_indices` on mnist-5k) and noise (jaxgan's `step_noise`), and, beyond the
seeds' recipes (`EXTRA_CASES`: the DCGAN, a conditional net, every loss), identical fake labels
and penalty weights (`step_extras`); the DCGAN's BatchNorm running statistics travel with the weights.

Free-running runs drift apart by float32 rounding that GAN training amplifies, so the
100+ step checks run in *lockstep*: before every step the JAX side takes torch_ref's
current weights and Adam state, both take one step, and the step's losses and the
updated weights are compared. That checks every one of the steps with no room for
drift to hide or to excuse a bug. The mutation tests show each tolerance is sharp:
breaking one detail of the recipe on the JAX side fails it by a large factor.

Run alone with `pytest -m parity`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgan import convert, models, sampling, steps
from jaxgan.config import LOSSES, PRESETS, Config, preset

torch = pytest.importorskip("torch")
import torch_ref  # noqa: E402
from torch_ref.train import convert_models  # noqa: E402

pytestmark = [pytest.mark.parity, pytest.mark.slow]

LOCKSTEP_STEPS = 100
MUTATION_STEPS = 30
# The seeds' recipes: the unconditional MLP presets with the BCE loss.
STEP_PRESETS = [name for name, c in PRESETS.items() if c.arch == "mlp" and not c.conditional]
# Beyond them, at test size (module by module they are also in tests/test_parity_modules.py): the
# DCGAN (BatchNorm in G and D), a conditional MLP (labels), and every other loss on the tiny MLP.
EXTRA_CASES = {
    "tiny-dcgan": preset("tiny-dcgan"),
    "tiny-conditional": preset("tiny").replace(conditional=True),
    "tiny-projection": preset("tiny").replace(conditional=True, conditioning="projection"),
    **{f"tiny-{loss}": preset("tiny").replace(loss=loss) for loss in LOSSES if loss != "bce"},
}
CASES = {**{name: preset(name) for name in STEP_PRESETS}, **EXTRA_CASES}
# Tolerances, from measured gaps (see README, "Parity with PyTorch").
# Worst measured (100 lockstep steps, all presets): loss 1.3e-5 (wide; g_loss goes through the
# just-updated D), weight max 1.7e-5 and RMS 2.4e-7 (small).
LOSS_TOL = 3e-5  # |jax - torch| of every step's d_loss, g_loss, d_real, d_fake
WEIGHT_MAX_TOL = 5e-5  # elementwise, after one step from identical states (Adam's near-0/near-0 cases)
WEIGHT_RMS_TOL = 1e-6  # root-mean-square over all weights of both nets
# tiny-lsgan: at lockstep step 35 one pre-activation of D's hidden LeakyReLU (example 3 of G's batch,
# unit 23) is -3.7e-9 in torch and +8.4e-8 in jaxgan: rounding puts it on either side of the kink,
# so that input's slope is 0.2 on one side and 1 on the other, and G's gradient (every weight) differs
# a little: weight RMS 1.65e-6 (max 4.0e-5) at that step; every other step agrees to RMS 2e-9.
LOCKSTEP_WEIGHT_RMS_TOL = {"tiny-lsgan": 4e-6}
GRAD_REL_TOL = 1e-5  # step 0: max |jax - torch| / max |torch| per gradient tensor
STEP0_TOL = 1e-6  # step 0: gap of the losses, mean D(x) and mean D(G(z)), relative to max(|torch's|, 1)
# The relative floor of 1: a value near 0 has no relative digits. Mean D(x) of lsgan, hinge and wgan-gp
# is the mean logit, 0.069 at step 0, whose gap of 6.7e-8 (the rounding of logits of size 1) is 9.8e-7
# of it; hinge's and wgan-gp's G loss -mean(logit) is near 0 too. (As in tests/test_parity_modules.py.)
STATS_TOL = 5e-7  # BatchNorm running mean and var after each lockstep step, max |jax - torch| (tiny-dcgan: 6.0e-8)


def assert_close(name: str, actual, expected, tol: float, relative: bool = False) -> float:
    """Assert max |actual - expected| (divided by max |expected| if `relative`) <= tol; return the gap."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    gap = float(np.abs(actual - expected).max())
    if relative:
        gap /= max(float(np.abs(expected).max()), 1e-30)
    assert gap <= tol, f"{name}: {'relative ' if relative else ''}gap {gap:.3g} > tolerance {tol:.3g}"
    return gap


# ---------------------------------------------------------------- the two sides' plumbing


def torch_state_dicts(gan: torch_ref.TorchGAN, what: str) -> tuple[dict, dict]:
    """(generator, discriminator) state dicts of torch_ref's weights or Adam `exp_avg` / `exp_avg_sq`."""
    out = []
    for module, opt in ((gan.generator, gan.g_opt), (gan.discriminator, gan.d_opt)):
        sd = {}
        for name, p in module.named_parameters():
            sd[name] = p.detach() if what == "weights" else opt.state[p][what]
        out.append(sd)
    return out[0], out[1]


def jax_from_torch(config: Config, gan: torch_ref.TorchGAN, template: steps.GANState) -> steps.GANState:
    """torch_ref's weights, BatchNorm running statistics (its buffers) and Adam states as a jaxgan
    GANState (key and config from `template`)."""
    g = convert.state_dict_to_variables(config, "generator", gan.generator.state_dict())
    d = convert.state_dict_to_variables(config, "discriminator", gan.discriminator.state_dict())
    state = template.replace(
        g_params=g["params"],
        d_params=d["params"],
        g_batch_stats=g.get("batch_stats"),
        d_batch_stats=d.get("batch_stats"),
        step=jnp.asarray(gan.step, jnp.int32),
    )
    if gan.step == 0:
        tx = steps.optimizer(config)
        return state.replace(g_opt_state=tx.init(state.g_params), d_opt_state=tx.init(state.d_params))
    (g_m, d_m), (g_v, d_v) = torch_state_dicts(gan, "exp_avg"), torch_state_dicts(gan, "exp_avg_sq")

    def adam_state(net, m, v):
        mu = convert.state_dict_to_params(config, net, m)
        nu = convert.state_dict_to_params(config, net, v)
        return (optax.ScaleByAdamState(count=jnp.asarray(gan.step, jnp.int32), mu=mu, nu=nu), optax.EmptyState())

    return state.replace(
        g_opt_state=adam_state("generator", g_m, g_v), d_opt_state=adam_state("discriminator", d_m, d_v)
    )


def torch_gan(config: Config, state: steps.GANState) -> torch_ref.TorchGAN:
    """A torch_ref GAN holding `state`'s weights and BatchNorm statistics (through jaxgan.convert),
    with fresh Adam states."""
    G, D = convert_models(config, state)
    return torch_ref.create_state(config, generator=G, discriminator=D)


@dataclasses.dataclass
class Inputs:
    """One step's inputs as numpy: the real batch (B, 28, 28, 1), the noise z_d, z_g (B, latent_dim),
    and `extras`, the keywords both `steps.train_step` and `torch_ref.train_step` take: labels (B,),
    the real batch's digits, and fake_labels (y_d, y_g) for a conditional config; gp_eps (B,) for
    wgan-gp ({} for the seeds' recipes)."""

    real: np.ndarray
    z_d: np.ndarray
    z_g: np.ndarray
    extras: dict

    @property
    def args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.real, self.z_d, self.z_g


class Feed:
    """The inputs of a jaxgan run: step t's batch (and its labels), noise and `steps.step_extras`."""

    def __init__(self, config: Config, images: np.ndarray, state: steps.GANState, labels: np.ndarray | None = None):
        self.config, self.images, self.key = config, images, state.key
        self.labels = labels if config.conditional else None
        self.steps_per_epoch = len(images) // config.batch_size
        self._indices = jax.jit(steps.epoch_batch_indices, static_argnums=(2, 3))
        batch_size = config.batch_size
        self._draws = jax.jit(lambda s: (steps.step_noise(s, batch_size), steps.step_extras(s, batch_size)))
        self._state = state

    def __call__(self, t: int) -> Inputs:
        epoch, row = divmod(t, self.steps_per_epoch)
        idx = np.asarray(self._indices(self.key, epoch, len(self.images), self.config.batch_size))[row]
        (z_d, z_g), extras = jax.tree.map(np.asarray, self._draws(self._state.replace(step=jnp.asarray(t, jnp.int32))))
        if self.labels is not None:
            extras["labels"] = self.labels[idx]
        return Inputs(self.images[idx], z_d, z_g, extras)


def torch_step(gan: torch_ref.TorchGAN, inputs: Inputs) -> dict[str, float]:
    args, extras = jax.tree.map(torch.tensor, (inputs.args, inputs.extras))
    metrics = torch_ref.train_step(gan, *args, **extras)
    return {k: float(v) for k, v in metrics.items()}


def flat_weights(g_params, d_params) -> np.ndarray:
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves((g_params, d_params))])


def torch_flat_weights(config: Config, gan: torch_ref.TorchGAN) -> np.ndarray:
    """torch_ref's weights, flattened in the order of `flat_weights` of jaxgan's params."""
    g, d = torch_state_dicts(gan, "weights")
    return flat_weights(
        convert.state_dict_to_params(config, "generator", g), convert.state_dict_to_params(config, "discriminator", d)
    )


def stats_gap(state: steps.GANState, gan: torch_ref.TorchGAN) -> float:
    """Worst |jax - torch| of the BatchNorm running means and variances, and of num_batches_tracked
    (an integer: any difference is far over the tolerance); 0 without BatchNorm."""
    gap = 0.0
    for mine, module in zip(convert.to_torch_state_dict(state), (gan.generator, gan.discriminator), strict=True):
        theirs = module.state_dict()
        for key, value in mine.items():
            if key.endswith("num_batches_tracked") or "running" in key:
                diff = value.numpy().astype(np.float64) - theirs[key].numpy().astype(np.float64)
                gap = max(gap, float(np.abs(diff).max()))
    return gap


@dataclasses.dataclass
class Gaps:
    """Worst gaps seen over a lockstep run."""

    loss: float = 0.0
    weight_max: float = 0.0
    weight_rms: float = 0.0
    stats: float | None = None  # BatchNorm running mean and var, max |jax - torch|; None: no BatchNorm
    weight_rms_tol: float = WEIGHT_RMS_TOL

    def ratio(self) -> float:
        """How far over the tolerances the worst gap is (> 1 fails)."""
        stats = 0.0 if self.stats is None else self.stats / STATS_TOL
        return max(self.loss / LOSS_TOL, self.weight_max / WEIGHT_MAX_TOL, self.weight_rms / self.weight_rms_tol, stats)

    def __str__(self) -> str:
        stats = "" if self.stats is None else f", running stats max {self.stats:.3g}"
        return f"loss {self.loss:.3g}, weight max {self.weight_max:.3g}, weight RMS {self.weight_rms:.3g}{stats}"


def lockstep(
    config: Config, images, num_steps: int, jax_step=steps.train_step, jax_config=None, scale=None, labels=None
) -> Gaps:
    """`num_steps` lockstep steps; the JAX side may be mutated (its step, config or data scaling)."""
    jax_config = jax_config or config
    step = jax.jit(jax_step)  # its own jit, not the loop's
    template = steps.create_state(config, config.seed)
    gan = torch_gan(config, template)
    feed = Feed(config, images, template, labels)
    gaps = Gaps(stats=None if template.g_batch_stats is None else 0.0)
    for t in range(num_steps):
        inputs = feed(t)
        state = jax_from_torch(config, gan, template).replace(config=jax_config)
        real = inputs.real if scale is None else scale(inputs.real)
        state, metrics = step(state, real, inputs.z_d, inputs.z_g, **inputs.extras)
        expected = torch_step(gan, inputs)
        for name, value in expected.items():
            gaps.loss = max(gaps.loss, abs(float(metrics[name]) - value))
        diff = flat_weights(state.g_params, state.d_params) - torch_flat_weights(config, gan)
        gaps.weight_max = max(gaps.weight_max, float(np.abs(diff).max()))
        gaps.weight_rms = max(gaps.weight_rms, float(np.sqrt(np.mean(diff.astype(np.float64) ** 2))))
        if gaps.stats is not None:
            gaps.stats = max(gaps.stats, stats_gap(state, gan))
    return gaps


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """torch_ref on one thread. Its tiny steps gain nothing from a second one, and on 2 cores shared
    with other jobs OpenMP's threads wait for each other: a tiny-MLP step measured 8 ms on one
    thread and 217 ms on two (tiny-dcgan 40 ms and 1.4 s) under a load average of 4.6."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def images(mnist_5k) -> np.ndarray:
    return mnist_5k.images  # (5000, 28, 28, 1) in [-1, 1]


@pytest.fixture(scope="session")
def labels(mnist_5k) -> np.ndarray:
    return mnist_5k.labels  # (5000,) int32 digits


# ---------------------------------------------------------------- 1. step 0, every gradient


def torch_step_with_grads(gan: torch_ref.TorchGAN, inputs: Inputs):
    """torch_ref.train_step, recording each network's gradients as its optimiser train."""
    grads = {}
    for net, opt in (("d", gan.d_opt), ("g", gan.g_opt)):
        original = opt.step

        def record(net=net, opt=opt, original=original):
            grads[net] = [p.grad.detach().clone() for group in opt.param_groups for p in group["params"]]
            return original()

        opt.step = record
    metrics = torch_step(gan, inputs)
    for opt in (gan.d_opt, gan.g_opt):
        del opt.step
    return metrics, grads


@functools.partial(jax.jit, static_argnums=0)
def jax_step0_grads(config: Config, state: steps.GANState, new_d_params, real, z_d, z_g, extras):
    """The gradients the step takes, from steps' own loss functions, at step 0's points: D's at
    state's weights, G's through the updated D (`new_d_params`, the step's). BatchNorm statistics
    are threaded in the step's order (in train mode they do not change the gradients)."""
    labels, gp_eps = extras.get("labels"), extras.get("gp_eps")
    y_d, y_g = extras.get("fake_labels", (None, None))
    fake, g_stats = models.generate_train(config, state.g_params, state.g_batch_stats, z_d, y_d)
    d_grads, (_, _, d_stats) = jax.grad(
        lambda d: steps.d_loss_fn(config, d, state.d_batch_stats, real, fake, labels, y_d, gp_eps), has_aux=True
    )(state.d_params)
    g_grads = jax.grad(lambda g: steps.g_loss_fn(config, g, g_stats, new_d_params, d_stats, z_g, y_g)[0])(
        state.g_params
    )
    return d_grads, g_grads


@pytest.mark.parametrize("name", list(CASES))
def test_step0_losses_outputs_and_every_gradient_agree(name, images, labels):
    config = CASES[name]
    state = steps.create_state(config, config.seed)
    gan = torch_gan(config, state)
    inputs = Feed(config, images, state, labels)(0)
    new_state, metrics = jax.jit(steps.train_step)(state, *inputs.args, **inputs.extras)
    expected, torch_grads = torch_step_with_grads(gan, inputs)
    worst = {"loss": 0.0, "grad": 0.0}
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        scale = max(abs(expected[key]), 1.0)
        gap = assert_close(f"{name} step 0 {key}", metrics[key], expected[key], STEP0_TOL * scale)
        worst["loss"] = max(worst["loss"], gap / scale)
    d_grads, g_grads = jax_step0_grads(config, state, new_state.d_params, *inputs.args, inputs.extras)
    for net, jax_grads, module, network in (
        ("d", d_grads, gan.discriminator, "discriminator"),
        ("g", g_grads, gan.generator, "generator"),
    ):
        names = [n for n, _ in module.named_parameters()]
        sd = convert.params_to_state_dict(config, network, jax_grads)
        for pname, torch_grad in zip(names, torch_grads[net], strict=True):
            gap = assert_close(f"{name} step 0 grad {net}.{pname}", sd[pname], torch_grad, GRAD_REL_TOL, relative=True)
            worst["grad"] = max(worst["grad"], gap)
    print(f"PARITY step0 {name}: loss/D(x)/D(G(z)) rel {worst['loss']:.3g}, grad rel {worst['grad']:.3g}")


# ---------------------------------------------------------------- 2. 100 steps in lockstep


@pytest.mark.parametrize("name", list(CASES))
def test_lockstep_losses_and_weights_agree_for_100_steps(name, images, labels):
    gaps = lockstep(CASES[name], images, LOCKSTEP_STEPS, labels=labels)
    gaps.weight_rms_tol = LOCKSTEP_WEIGHT_RMS_TOL.get(name, WEIGHT_RMS_TOL)
    print(f"PARITY lockstep {name}: {gaps}")
    assert gaps.ratio() <= 1, f"{name}: worst gaps over {LOCKSTEP_STEPS} lockstep steps: {gaps}"


# ---------------------------------------------------------------- 3. the parity is sharp: mutations


def reordered_step(state, real, z_d, z_g):
    """Mutation: G is updated before D (through the old D)."""
    config, tx = state.config, steps.optimizer(state.config)
    g_loss, g_grads = jax.value_and_grad(lambda g: steps.g_loss_fn(config, g, None, state.d_params, None, z_g)[0])(
        state.g_params
    )
    g_updates, g_opt_state = tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    fake = jax.lax.stop_gradient(models.generate(config, g_params, z_d))
    (d_loss, (d_real, d_fake, _)), d_grads = jax.value_and_grad(steps.d_loss_fn, argnums=1, has_aux=True)(
        config, state.d_params, None, real, fake
    )
    d_updates, d_opt_state = tx.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)
    new = state.replace(
        step=state.step + 1, g_params=g_params, d_params=d_params, g_opt_state=g_opt_state, d_opt_state=d_opt_state
    )
    return new, {"d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake}


def undetached_step(state, real, z_d, z_g):
    """Mutation: the D loss is not detached from G, so its gradient reaches G's update too."""
    config = state.config
    d_loss_of_g = jax.grad(
        lambda g: steps.d_loss_fn(config, state.d_params, None, real, models.generate(config, g, z_d))[0]
    )
    leaked = d_loss_of_g(state.g_params)
    tx = steps.optimizer(config)
    new, metrics = steps.train_step(state, real, z_d, z_g)
    # Redo the G update with the D-loss gradient added to the G-loss gradient.
    g_grads = jax.grad(lambda g: steps.g_loss_fn(config, g, None, new.d_params, None, z_g)[0])(state.g_params)
    g_grads = jax.tree.map(jnp.add, g_grads, leaked)
    g_updates, g_opt_state = tx.update(g_grads, state.g_opt_state, state.g_params)
    return new.replace(g_params=optax.apply_updates(state.g_params, g_updates), g_opt_state=g_opt_state), metrics


def reused_noise_step(state, real, z_d, z_g):
    """Mutation: the G step reuses the D step's noise."""
    return steps.train_step(state, real, z_d, z_d)


def stale_d_stats_step(state, real, z_d, z_g):
    """Mutation (tiny-dcgan): the G step's D forward starts from D's running means and variances of
    before the D step, losing its D(real) and D(fake) updates (num_batches_tracked kept right, so the
    means and variances alone show it). Weights and losses are unchanged: train-mode BatchNorm
    normalises with the batch's statistics."""
    new, metrics = steps.train_step(state, real, z_d, z_g)
    _, (_, stale) = steps.g_loss_fn(
        state.config, state.g_params, state.g_batch_stats, new.d_params, state.d_batch_stats, z_g
    )
    layers = new.d_batch_stats["net"]
    stale = {
        "net": {k: {**v, "num_batches_tracked": layers[k]["num_batches_tracked"]} for k, v in stale["net"].items()}
    }
    return new.replace(d_batch_stats=stale), metrics


def reused_fake_labels_step(state, real, z_d, z_g, labels, fake_labels):
    """Mutation (tiny-conditional): the G step asks G for the D step's digits y_d, not its own y_g."""
    y_d, _ = fake_labels
    return steps.train_step(state, real, z_d, z_g, labels, (y_d, y_d))


MUTATIONS = {
    "Adam beta1 0.5 -> 0.9": {"jax_config": {"beta1": 0.9}},
    "LeakyReLU slope 0.2 -> 0.1": {"jax_config": {"leaky_slope": 0.1}},
    "G step before D step": {"jax_step": reordered_step},
    "D loss not detached from G": {"jax_step": undetached_step},
    "G step reuses z_d": {"jax_step": reused_noise_step},
    "images in [0, 1], not [-1, 1]": {"scale": lambda x: (x + 1) / 2},
    # Beyond the small preset (the module-level mutations are in tests/test_parity_modules.py):
    "DCGAN: G step's D forward from stale running stats": {"case": "tiny-dcgan", "jax_step": stale_d_stats_step},
    "conditional: G step reuses the D step's fake labels": {
        "case": "tiny-conditional",
        "jax_step": reused_fake_labels_step,
    },
}
MIN_FACTOR = 10  # every mutation must miss the tolerances by at least this factor


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_each_mutation_of_the_recipe_breaks_parity(mutation, images, labels):
    spec = dict(MUTATIONS[mutation])
    config = CASES[spec.pop("case", "small")]
    if "jax_config" in spec:
        spec["jax_config"] = config.replace(**spec["jax_config"])
    gaps = lockstep(config, images, MUTATION_STEPS, labels=labels, **spec)
    print(f"PARITY mutation {mutation}: {gaps.ratio():.0f}x ({gaps})")
    assert gaps.ratio() >= MIN_FACTOR, (
        f"mutation {mutation!r} survived: worst gaps over {MUTATION_STEPS} steps {gaps} are only "
        f"{gaps.ratio():.3g}x the tolerances"
    )


# ---------------------------------------------------------------- 4. the whole-epoch lax.scan path


SCAN_EXAMPLES = 640  # a data subset: short epochs
# The scan path of a loss with no extra step inputs is the tiny scan's plus that loss, which the
# lockstep tests cover: the scans run for the cases whose steps take extra inputs (BatchNorm
# statistics, labels, wgan-gp's interpolation weights).
SCAN_CASES = ["tiny", "small", "tiny-dcgan", "tiny-conditional", "tiny-wgan-gp"]


def scan_subset(num_examples: int) -> np.ndarray:
    """SCAN_EXAMPLES indices drawn evenly over the dataset (mnist-5k is sorted by digit: a conditional
    net sees every digit)."""
    return np.linspace(0, num_examples - 1, SCAN_EXAMPLES).astype(np.int64)


@pytest.mark.parametrize("name", SCAN_CASES)
def test_scan_over_two_epochs_matches_torch(name, images, labels):
    """steps.train_steps (the loop's lax.scan) vs torch_ref free-running on the same batches and noise."""
    config = CASES[name]
    subset = scan_subset(len(images))
    subset_images, subset_labels = images[subset], labels[subset] if config.conditional else None
    state = steps.create_state(config, config.seed)
    gan = torch_gan(config, state)
    feed = Feed(config, subset_images, state, subset_labels)
    run_steps = jax.jit(steps.train_steps)  # its own jit: the loop's compile counters stay untouched
    losses = {"jax": [], "torch": []}
    for epoch in range(2):
        indices = steps.epoch_batch_indices(state.key, epoch, SCAN_EXAMPLES, config.batch_size)
        state, metrics = run_steps(state, subset_images, indices, subset_labels)
        losses["jax"].append(np.stack([metrics["d_loss"], metrics["g_loss"]], 1))
    for t in range(2 * feed.steps_per_epoch):
        m = torch_step(gan, feed(t))
        losses["torch"].append([m["d_loss"], m["g_loss"]])
    loss_gap = assert_close(
        f"{name} scan per-step losses", np.concatenate(losses["jax"]), np.array(losses["torch"]), SCAN_LOSS_TOL
    )
    weight_gap = assert_close(
        f"{name} scan final weights",
        flat_weights(state.g_params, state.d_params),
        torch_flat_weights(config, gan),
        SCAN_WEIGHT_TOL,
    )
    stats = ""
    if state.g_batch_stats is not None:
        stats_max = stats_gap(state, gan)
        assert stats_max <= SCAN_STATS_TOL, f"{name} scan final running stats: gap {stats_max:.3g} > {SCAN_STATS_TOL}"
        stats = f", final running stats max {stats_max:.3g}"
    print(
        f"PARITY scan {name}: {len(losses['torch'])} steps, loss {loss_gap:.3g}, final weights max {weight_gap:.3g}"
        + stats
    )


SCAN_LOSS_TOL = 1e-5  # free-running: rounding differences grow over the steps
SCAN_WEIGHT_TOL = 1e-4
SCAN_STATS_TOL = 1e-5  # final BatchNorm running mean and var (tiny-dcgan: 1.7e-8)


# ---------------------------------------------------------------- 5. trained weights sample the same images


SAMPLING_CASES = ["tiny", "tiny-dcgan", "tiny-conditional"]
SAMPLE_TOL = 1e-6  # max |jax - torch| of the images (eval-mode tiny-dcgan: 6.5e-9)


@pytest.mark.parametrize("name", SAMPLING_CASES)
def test_torch_trained_generator_samples_the_same_images_in_jaxgan_and_back(name, images, labels, tmp_path):
    """Sampling is eval mode: a DCGAN's BatchNorm normalises with the running statistics, which
    travel with the weights (torch's buffers, jaxgan's g_batch_stats)."""
    config = CASES[name]
    state = steps.create_state(config, config.seed)
    gan = torch_gan(config, state)
    feed = Feed(config, images, state, labels)
    for t in range(5):
        torch_step(gan, feed(t))
    pt = tmp_path / "torch.pt"
    torch.save(
        {
            "generator": gan.generator.state_dict(),
            "discriminator": gan.discriminator.state_dict(),
            "config": config.to_dict(),
        },
        pt,
    )
    loaded = convert.load_pt(pt)
    z = np.asarray(sampling.noise(state.key, 16, state.config.latent_dim))
    digits = np.arange(16, dtype=np.int32) % config.num_classes if config.conditional else None

    def torch_sample(G) -> np.ndarray:
        G.eval()
        with torch.no_grad():
            return G(torch.tensor(z), None if digits is None else torch.tensor(digits)).numpy().transpose(0, 2, 3, 1)

    def jax_sample(s: steps.GANState):
        return models.generate(config, s.g_params, z, digits, s.g_batch_stats)

    gaps = [
        assert_close(f"{name}: torch-trained G in jaxgan", jax_sample(loaded), torch_sample(gan.generator), SAMPLE_TOL)
    ]
    # And the other way: jaxgan trains 5 steps on, torch_ref samples from the converted result.
    step = jax.jit(steps.train_step)
    for t in range(5, 10):
        inputs = feed(t)
        loaded, _ = step(loaded.replace(step=jnp.asarray(t, jnp.int32)), *inputs.args, **inputs.extras)
    G, _ = torch_ref.build_models(config)
    G.load_state_dict(convert.to_torch_state_dict(loaded)[0])
    gaps.append(assert_close(f"{name}: jaxgan-trained G in torch_ref", jax_sample(loaded), torch_sample(G), SAMPLE_TOL))
    print(f"PARITY sampling {name}: torch -> jaxgan {gaps[0]:.3g}, jaxgan -> torch {gaps[1]:.3g}")
