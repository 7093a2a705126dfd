"""Cross-framework parity: jaxgan trains exactly like torch_ref, the seeds' PyTorch recipe.

Both sides start from identical weights (through jaxgan.convert) and see identical batches
(jaxgan's `epoch_batch_indices` on mnist-5k) and noise (jaxgan's `step_noise`).

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

from jaxgan import convert, models, sampling, train
from jaxgan.config import PRESETS, Config, preset

torch = pytest.importorskip("torch")
import torch_ref  # noqa: E402
from torch_ref.train import convert_models  # noqa: E402

pytestmark = [pytest.mark.parity, pytest.mark.slow]

LOCKSTEP_STEPS = 100
MUTATION_STEPS = 30
# The presets train.train_step trains (MLP, unconditional); the DCGAN and conditional presets are
# proven module by module in tests/test_parity_modules.py.
STEP_PRESETS = [name for name, c in PRESETS.items() if c.arch == "mlp" and not c.conditional]
# Tolerances, from measured gaps (see README, "Parity with PyTorch").
# Worst measured (100 lockstep steps, all presets): loss 1.3e-5 (wide; g_loss goes through the
# just-updated D), weight max 1.7e-5 and RMS 2.4e-7 (small).
LOSS_TOL = 3e-5  # |jax - torch| of every step's d_loss, g_loss, d_real, d_fake
WEIGHT_MAX_TOL = 5e-5  # elementwise, after one step from identical states (Adam's near-0/near-0 cases)
WEIGHT_RMS_TOL = 1e-6  # root-mean-square over all weights of both nets
GRAD_REL_TOL = 1e-5  # step 0: max |jax - torch| / max |torch| per gradient tensor
STEP0_TOL = 1e-6  # step 0: relative gap of the losses, mean D(x) and mean D(G(z))


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


def jax_from_torch(config: Config, gan: torch_ref.TorchGAN, template: train.GANState) -> train.GANState:
    """torch_ref's weights and Adam states as a jaxgan GANState (key and config from `template`)."""
    g, d = torch_state_dicts(gan, "weights")
    state = template.replace(
        g_params=convert.state_dict_to_params(config, "generator", g),
        d_params=convert.state_dict_to_params(config, "discriminator", d),
        step=jnp.asarray(gan.step, jnp.int32),
    )
    if gan.step == 0:
        tx = train.optimizer(config)
        return state.replace(g_opt_state=tx.init(state.g_params), d_opt_state=tx.init(state.d_params))
    (g_m, d_m), (g_v, d_v) = torch_state_dicts(gan, "exp_avg"), torch_state_dicts(gan, "exp_avg_sq")

    def adam_state(net, m, v):
        mu = convert.state_dict_to_params(config, net, m)
        nu = convert.state_dict_to_params(config, net, v)
        return (optax.ScaleByAdamState(count=jnp.asarray(gan.step, jnp.int32), mu=mu, nu=nu), optax.EmptyState())

    return state.replace(
        g_opt_state=adam_state("generator", g_m, g_v), d_opt_state=adam_state("discriminator", d_m, d_v)
    )


def torch_gan(config: Config, state: train.GANState) -> torch_ref.TorchGAN:
    """A torch_ref GAN holding `state`'s weights (through jaxgan.convert), with fresh Adam states."""
    G, D = convert_models(config, state)
    return torch_ref.create_state(config, generator=G, discriminator=D)


class Feed:
    """The batches and noise of a jaxgan run: step t's (real (B, 28, 28, 1), z_d, z_g) as numpy."""

    def __init__(self, config: Config, images: np.ndarray, state: train.GANState):
        self.config, self.images, self.key = config, images, state.key
        self.steps_per_epoch = len(images) // config.batch_size
        self._indices = jax.jit(train.epoch_batch_indices, static_argnums=(2, 3))
        self._noise = jax.jit(functools.partial(train.step_noise, batch_size=config.batch_size))
        self._state = state

    def __call__(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        epoch, row = divmod(t, self.steps_per_epoch)
        idx = np.asarray(self._indices(self.key, epoch, len(self.images), self.config.batch_size))[row]
        z_d, z_g = self._noise(self._state.replace(step=jnp.asarray(t, jnp.int32)))
        return self.images[idx], np.asarray(z_d), np.asarray(z_g)


def torch_step(gan: torch_ref.TorchGAN, real, z_d, z_g) -> dict[str, float]:
    metrics = torch_ref.train_step(gan, torch.tensor(real), torch.tensor(z_d), torch.tensor(z_g))
    return {k: float(v) for k, v in metrics.items()}


def flat_weights(g_params, d_params) -> np.ndarray:
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves((g_params, d_params))])


@dataclasses.dataclass
class Gaps:
    """Worst gaps seen over a lockstep run."""

    loss: float = 0.0
    weight_max: float = 0.0
    weight_rms: float = 0.0

    def ratio(self) -> float:
        """How far over the tolerances the worst gap is (> 1 fails)."""
        return max(self.loss / LOSS_TOL, self.weight_max / WEIGHT_MAX_TOL, self.weight_rms / WEIGHT_RMS_TOL)

    def __str__(self) -> str:
        return f"loss {self.loss:.3g}, weight max {self.weight_max:.3g}, weight RMS {self.weight_rms:.3g}"


def lockstep(config: Config, images, num_steps: int, jax_step=train.train_step, jax_config=None, scale=None) -> Gaps:
    """`num_steps` lockstep steps; the JAX side may be mutated (its step, config or data scaling)."""
    jax_config = jax_config or config
    step = jax.jit(jax_step)  # its own jit, not the loop's
    template = train.create_state(config, config.seed)
    gan = torch_gan(config, template)
    feed = Feed(config, images, template)
    gaps = Gaps()
    for t in range(num_steps):
        real, z_d, z_g = feed(t)
        state = jax_from_torch(config, gan, template).replace(config=jax_config)
        state, metrics = step(state, real if scale is None else scale(real), z_d, z_g)
        expected = torch_step(gan, real, z_d, z_g)
        for name, value in expected.items():
            gaps.loss = max(gaps.loss, abs(float(metrics[name]) - value))
        g, d = torch_state_dicts(gan, "weights")
        torch_weights = flat_weights(
            convert.state_dict_to_params(config, "generator", g),
            convert.state_dict_to_params(config, "discriminator", d),
        )
        diff = flat_weights(state.g_params, state.d_params) - torch_weights
        gaps.weight_max = max(gaps.weight_max, float(np.abs(diff).max()))
        gaps.weight_rms = max(gaps.weight_rms, float(np.sqrt(np.mean(diff.astype(np.float64) ** 2))))
    return gaps


@pytest.fixture(scope="session")
def images(mnist_5k) -> np.ndarray:
    return mnist_5k.images  # (5000, 28, 28, 1) in [-1, 1]


# ---------------------------------------------------------------- 1. step 0, every gradient


def torch_step_with_grads(gan: torch_ref.TorchGAN, real, z_d, z_g):
    """torch_ref.train_step, recording each network's gradients as its optimiser train."""
    grads = {}
    for net, opt in (("d", gan.d_opt), ("g", gan.g_opt)):
        original = opt.step

        def record(net=net, opt=opt, original=original):
            grads[net] = [p.grad.detach().clone() for group in opt.param_groups for p in group["params"]]
            return original()

        opt.step = record
    metrics = torch_step(gan, real, z_d, z_g)
    for opt in (gan.d_opt, gan.g_opt):
        del opt.step
    return metrics, grads


@functools.partial(jax.jit, static_argnums=0)
def jax_step0_grads(config: Config, state: train.GANState, real, z_d, z_g):
    """The gradients the step takes, from steps' own loss functions, at step 0's points."""
    fake = models.generate(config, state.g_params, z_d)
    d_grads = jax.grad(lambda d: train.d_loss_fn(config, d, None, real, fake)[0])(state.d_params)
    new_state, _ = train.train_step(state, real, z_d, z_g)
    g_grads = jax.grad(lambda g: train.g_loss_fn(config, g, None, new_state.d_params, None, z_g)[0])(state.g_params)
    return d_grads, g_grads


@pytest.mark.parametrize("name", STEP_PRESETS)
def test_step0_losses_outputs_and_every_gradient_agree(name, images):
    config = preset(name)
    state = train.create_state(config, config.seed)
    gan = torch_gan(config, state)
    real, z_d, z_g = Feed(config, images, state)(0)
    _, metrics = jax.jit(train.train_step)(state, real, z_d, z_g)
    expected, torch_grads = torch_step_with_grads(gan, real, z_d, z_g)
    worst = {"loss": 0.0, "grad": 0.0}
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        gap = assert_close(f"{name} step 0 {key}", metrics[key], expected[key], STEP0_TOL * abs(expected[key]))
        worst["loss"] = max(worst["loss"], gap / abs(expected[key]))
    d_grads, g_grads = jax_step0_grads(config, state, real, z_d, z_g)
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


# ---------------------------------------------------------------- 2. 120 steps in lockstep


@pytest.mark.parametrize("name", STEP_PRESETS)
def test_lockstep_losses_and_weights_agree_for_100_steps(name, images):
    gaps = lockstep(preset(name), images, LOCKSTEP_STEPS)
    print(f"PARITY lockstep {name}: {gaps}")
    assert gaps.ratio() <= 1, f"{name}: worst gaps over {LOCKSTEP_STEPS} lockstep steps: {gaps}"


# ---------------------------------------------------------------- 3. the parity is sharp: mutations


def reordered_step(state, real, z_d, z_g):
    """Mutation: G is updated before D (through the old D)."""
    config, tx = state.config, train.optimizer(state.config)
    g_loss, g_grads = jax.value_and_grad(lambda g: train.g_loss_fn(config, g, None, state.d_params, None, z_g)[0])(
        state.g_params
    )
    g_updates, g_opt_state = tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    fake = jax.lax.stop_gradient(models.generate(config, g_params, z_d))
    (d_loss, (d_real, d_fake, _)), d_grads = jax.value_and_grad(train.d_loss_fn, argnums=1, has_aux=True)(
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
        lambda g: train.d_loss_fn(config, state.d_params, None, real, models.generate(config, g, z_d))[0]
    )
    leaked = d_loss_of_g(state.g_params)
    tx = train.optimizer(config)
    new, metrics = train.train_step(state, real, z_d, z_g)
    # Redo the G update with the D-loss gradient added to the G-loss gradient.
    g_grads = jax.grad(lambda g: train.g_loss_fn(config, g, None, new.d_params, None, z_g)[0])(state.g_params)
    g_grads = jax.tree.map(jnp.add, g_grads, leaked)
    g_updates, g_opt_state = tx.update(g_grads, state.g_opt_state, state.g_params)
    return new.replace(g_params=optax.apply_updates(state.g_params, g_updates), g_opt_state=g_opt_state), metrics


def reused_noise_step(state, real, z_d, z_g):
    """Mutation: the G step reuses the D step's noise."""
    return train.train_step(state, real, z_d, z_d)


MUTATIONS = {
    "Adam beta1 0.5 -> 0.9": {"jax_config": {"beta1": 0.9}},
    "LeakyReLU slope 0.2 -> 0.1": {"jax_config": {"leaky_slope": 0.1}},
    "G step before D step": {"jax_step": reordered_step},
    "D loss not detached from G": {"jax_step": undetached_step},
    "G step reuses z_d": {"jax_step": reused_noise_step},
    "images in [0, 1], not [-1, 1]": {"scale": lambda x: (x + 1) / 2},
}
MIN_FACTOR = 10  # every mutation must miss the tolerances by at least this factor


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_each_mutation_of_the_recipe_breaks_parity(mutation, images):
    config = preset("small")
    spec = dict(MUTATIONS[mutation])
    if "jax_config" in spec:
        spec["jax_config"] = config.replace(**spec["jax_config"])
    gaps = lockstep(config, images, MUTATION_STEPS, **spec)
    print(f"PARITY mutation {mutation}: {gaps.ratio():.0f}x ({gaps})")
    assert gaps.ratio() >= MIN_FACTOR, (
        f"mutation {mutation!r} survived: worst gaps over {MUTATION_STEPS} steps {gaps} are only "
        f"{gaps.ratio():.3g}x the tolerances"
    )


# ---------------------------------------------------------------- 4. the whole-epoch lax.scan path


SCAN_EXAMPLES = 640  # a data subset: short epochs


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_scan_over_two_epochs_matches_torch(name, images):
    """train.train_steps (the loop's lax.scan) vs torch_ref free-running on the same batches and noise."""
    config = preset(name)
    subset = images[:SCAN_EXAMPLES]
    state = train.create_state(config, config.seed)
    gan = torch_gan(config, state)
    feed = Feed(config, subset, state)
    run_steps = jax.jit(train.train_steps)  # its own jit: the loop's compile counters stay untouched
    losses = {"jax": [], "torch": []}
    for epoch in range(2):
        indices = train.epoch_batch_indices(state.key, epoch, SCAN_EXAMPLES, config.batch_size)
        state, metrics = run_steps(state, subset, indices)
        losses["jax"].append(np.stack([metrics["d_loss"], metrics["g_loss"]], 1))
    for t in range(2 * feed.steps_per_epoch):
        m = torch_step(gan, *feed(t))
        losses["torch"].append([m["d_loss"], m["g_loss"]])
    loss_gap = assert_close(
        f"{name} scan per-step losses", np.concatenate(losses["jax"]), np.array(losses["torch"]), SCAN_LOSS_TOL
    )
    g, d = torch_state_dicts(gan, "weights")
    torch_weights = flat_weights(
        convert.state_dict_to_params(config, "generator", g), convert.state_dict_to_params(config, "discriminator", d)
    )
    weight_gap = assert_close(
        f"{name} scan final weights", flat_weights(state.g_params, state.d_params), torch_weights, SCAN_WEIGHT_TOL
    )
    print(f"PARITY scan {name}: {len(losses['torch'])} steps, loss {loss_gap:.3g}, final weights max {weight_gap:.3g}")


SCAN_LOSS_TOL = 1e-5  # free-running: rounding differences grow over the steps
SCAN_WEIGHT_TOL = 1e-4


# ---------------------------------------------------------------- 5. trained weights sample the same images


def test_torch_trained_generator_samples_the_same_images_in_jaxgan_and_back(images, tmp_path):
    config = preset("tiny")
    state = train.create_state(config, config.seed)
    gan = torch_gan(config, state)
    feed = Feed(config, images, state)
    for t in range(5):
        torch_step(gan, *feed(t))
    pt = tmp_path / "torch.pt"
    g, d = torch_state_dicts(gan, "weights")
    torch.save({"generator": g, "discriminator": d, "config": config.to_dict()}, pt)
    loaded = convert.load_pt(pt)
    z = np.asarray(sampling.noise(state.key, 16, state.config.latent_dim))
    with torch.no_grad():
        torch_images = gan.generator(torch.tensor(z)).numpy().transpose(0, 2, 3, 1)
    assert_close("torch-trained G in jaxgan", models.generate(config, loaded.g_params, z), torch_images, 1e-6)
    # And the other way: jaxgan trains 5 steps on, torch_ref samples from the converted result.
    step = jax.jit(train.train_step)
    for t in range(5, 10):
        loaded, _ = step(loaded.replace(step=jnp.asarray(t, jnp.int32)), *feed(t))
    G, _ = torch_ref.build_models(config)
    G.load_state_dict(convert.to_torch_state_dict(loaded)[0])
    with torch.no_grad():
        torch_images = G(torch.tensor(z)).numpy().transpose(0, 2, 3, 1)
    assert_close("jaxgan-trained G in torch_ref", models.generate(config, loaded.g_params, z), torch_images, 1e-6)
