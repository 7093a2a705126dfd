"""Adam with torch.optim.Adam's arithmetic, as an optax transformation.

`optax.adam` and `torch.optim.Adam` implement the same algorithm but round differently:
optax computes the bias corrections 1 - b**t in float32 (for b2 = 0.999 and t = 1 that
is 0.00099998713, 1.3e-5 off) and divides m_hat by sqrt(v_hat); PyTorch computes them in
float64 on the host, folds 1/(1 - b1**t) into the step size and divides sqrt(v) by
sqrt(1 - b2**t). Over a few hundred GAN steps the difference grows to ~1e-3 in the losses,
which would hide real bugs in the parity tests. `torch_adam` follows PyTorch's order of
operations (torch/optim/adam.py, `_single_tensor_adam`, the CPU path):

    m = lerp(m, g, 1 - b1)                    # exp_avg.lerp_(grad, 1 - beta1)
    v = v * b2 + (1 - b2) * g * g             # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size = lr / (1 - b1**t)
    denom = sqrt(v) / sqrt(1 - b2**t) + eps
    p = p + (-step_size * m) / denom          # param.addcdiv_(exp_avg, denom, value=-step_size)

The bias corrections are computed as -expm1(t * log b), which keeps float32's relative
precision where 1 - b**t in float32 would not. The state is optax's `ScaleByAdamState`
(count, mu, nu) followed by an
`EmptyState`, exactly `optax.adam`'s, so checkpoints of either optimiser have the same layout.

lr and beta1 are Python floats (compiled in as constants: every single run), or traced float32
scalars (`AdamHyper`: a group of runs sweeping them, `jaxgan.multirun`, one compilation for the
grid). `AdamHyper.of` computes on the host, in float64, the very numbers the constants become,
so both forms do the same float32 arithmetic.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class Beta1(NamedTuple):
    """beta1 as traced float32 scalars, in the forms the update uses (`AdamHyper.of` makes them)."""

    lerp_weight: jax.Array  # 1 - beta1, the weight of torch.lerp
    lerp_complement: jax.Array  # 1 - (1 - beta1), as _lerp computes it for weights >= 0.5
    log: jax.Array  # log(beta1); -inf for beta1 = 0, where the bias correction is 1


class AdamHyper(NamedTuple):
    """Adam's lr and beta1 as traced float32 scalars (shape (), or (K,) for K runs)."""

    lr: jax.Array
    beta1: Beta1

    @classmethod
    def of(cls, lr: float, b1: float) -> AdamHyper:
        """The float32 numbers `torch_adam(lr, b1)` compiles in, computed on the host in float64."""
        weight = 1.0 - b1
        log_b1 = math.log(b1) if b1 > 0 else -math.inf
        f32 = np.float32
        return cls(f32(lr), Beta1(f32(weight), f32(1.0 - weight), f32(log_b1)))


def _lerp(start: jax.Array, end: jax.Array, weight: float | Beta1) -> jax.Array:
    """torch.lerp with a scalar weight: start + w (end - start), or end - (end - start)(1 - w) for w >= 0.5."""
    if isinstance(weight, Beta1):  # traced: both of torch's formulas, one selected (exact)
        low = start + weight.lerp_weight * (end - start)
        high = end - (end - start) * weight.lerp_complement
        return jnp.where(weight.lerp_weight < 0.5, low, high)
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


def _one_minus_pow(b: float | Beta1, t: jax.Array) -> jax.Array:
    """1 - b**t in float32 to full relative precision (t: int32 scalar >= 1)."""
    if isinstance(b, Beta1):  # log b = -inf for b = 0: -expm1(-inf) is exactly 1
        return -jnp.expm1(t.astype(jnp.float32) * b.log)
    if b == 0.0:
        return jnp.ones((), jnp.float32)
    return -jnp.expm1(t.astype(jnp.float32) * jnp.float32(math.log(b)))


def torch_adam(
    lr: float | jax.Array, b1: float | Beta1 = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """torch.optim.Adam(lr, betas=(b1, b2), eps) as an optax GradientTransformation.

    lr and b1: Python floats, or traced (`AdamHyper.of(lr, b1)`'s lr and beta1).
    Its updates are the parameter changes (apply with `optax.apply_updates`).
    """
    base = optax.adam(1.0, b1=0.9, b2=b2, eps=eps)  # only its init (lr and b1 play no part): the state layout
    lerp_weight = b1 if isinstance(b1, Beta1) else 1.0 - b1

    def update_fn(grads, chain_state: tuple[optax.ScaleByAdamState, optax.EmptyState], params=None):
        del params
        state, empty = chain_state
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(lambda g, m: _lerp(m, g, lerp_weight), grads, state.mu)
        nu = jax.tree.map(lambda g, v: v * b2 + (1.0 - b2) * g * g, grads, state.nu)
        neg_step_size = -(lr / _one_minus_pow(b1, count))
        bias_correction2_sqrt = jnp.sqrt(_one_minus_pow(b2, count))
        updates = jax.tree.map(lambda m, v: (neg_step_size * m) / (jnp.sqrt(v) / bias_correction2_sqrt + eps), mu, nu)
        return updates, (optax.ScaleByAdamState(count=count, mu=mu, nu=nu), empty)

    return optax.GradientTransformation(base.init, update_fn)
