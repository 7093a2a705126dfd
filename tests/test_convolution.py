"""jaxgan.convolution against XLA's own convolutions: every way, stride, padding and kernel size,
outputs, gradients and gradients of gradients (WGAN-GP's penalty differentiates twice)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import convolution

NUMBERS = ("NHWC", "HWIO", "NHWC")


def xla_conv2d(x, kernel, stride, padding):
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), [(padding, padding)] * 2, dimension_numbers=NUMBERS
    )


def xla_conv_transpose2d(x, kernel, stride, padding):
    """PyTorch's ConvTranspose2d: the input dilated by the stride, padded by k - 1 - padding,
    correlated with the flipped kernel; kernel (k, k, F, C)."""
    edge = kernel.shape[0] - 1 - padding
    flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)
    return jax.lax.conv_general_dilated(
        x, flipped, (1, 1), [(edge, edge)] * 2, lhs_dilation=(stride, stride), dimension_numbers=NUMBERS
    )


def slow(*case):
    """A parametrized case for the slow lane only (pytest -m "not slow" leaves it out)."""
    return pytest.param(*case, marks=pytest.mark.slow)


def close(a, b, tol=2e-6):
    """Equal up to float32 summation order, relative to the largest magnitude."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= tol * max(1.0, float(np.max(np.abs(b)))), np.max(np.abs(a - b))


def check_against(ours, reference, x, kernel, twice: bool = True):
    """Outputs and both gradients of sum(sin(out)) agree, and (twice) the kernel's gradient of
    |d/dx|^2, each side in one jitted program."""

    @functools.partial(jax.jit, static_argnums=3)
    def everything(x, kernel, fn, twice):
        def loss(x, kernel):
            return jnp.sum(jnp.sin(fn(x, kernel)))

        def penalty(kernel):
            return jnp.sum(jax.grad(loss)(x, kernel) ** 2)

        second = jax.grad(penalty)(kernel) if twice else None
        return fn(x, kernel), jax.grad(loss, (0, 1))(x, kernel), second

    ours_out = jax.tree.leaves(everything(x, kernel, jax.tree_util.Partial(ours), twice))
    reference_out = jax.tree.leaves(everything(x, kernel, jax.tree_util.Partial(reference), twice))
    assert len(ours_out) == len(reference_out) == (4 if twice else 3)
    for a, b, tol in zip(ours_out, reference_out, (2e-6, 2e-6, 2e-6, 1e-5)[: len(ours_out)], strict=True):
        close(a, b, tol)


# Gradients of gradients are checked for D's layer shapes (28, 14 and 7 pixels in): WGAN-GP's
# penalty differentiates D twice, never G; the other cases check outputs and gradients.
CONVS = [  # (input (B, H, W, C), kernel (k, k, C, F), stride, padding, the stride-1 way taken)
    ((2, 28, 28, 1), (4, 4, 1, 8), 2, 1, "patches"),  # the DCGAN's D conv_0 (s2d: C 4, F 8)
    ((2, 14, 14, 16), (4, 4, 16, 8), 2, 1, "taps"),  # D conv_1's shape (s2d: C 64, F 8)
    ((2, 7, 7, 8), (7, 7, 8, 1), 1, 0, "dense"),  # D conv_2: a kernel the size of its input
    ((2, 14, 14, 4), (5, 5, 4, 8), 1, 2, "rows"),  # the classifier's conv_1 shape
    # beyond the networks' shapes (the slow lane):
    slow((2, 9, 9, 3), (3, 3, 3, 5), 2, 1, "taps"),  # odd sizes: the end padded past the stride
    slow((2, 10, 10, 3), (5, 5, 3, 4), 3, 2, "taps"),  # stride 3, kernel not a multiple of it
    slow((2, 11, 10, 6), (3, 3, 6, 6), 1, 0, "rows"),  # not square, no padding
    slow((2, 12, 12, 2), (3, 3, 2, 16), 1, 1, "patches"),  # stride 1, widening
]


@pytest.mark.parametrize(("x_shape", "kernel_shape", "stride", "padding", "way"), CONVS)
def test_conv2d_is_xlas_convolution(x_shape, kernel_shape, stride, padding, way):
    x = jax.random.normal(jax.random.key(0), x_shape)
    kernel = 0.3 * jax.random.normal(jax.random.key(1), kernel_shape)
    k, _, c, f = kernel_shape
    taps = -(-k // stride)
    if way != "dense":  # the case is the way it claims to test
        assert convolution.correlate_way(taps, c * stride * stride, f) == way
    check_against(
        lambda x, w: convolution.conv2d(x, w, stride, padding),
        lambda x, w: xla_conv2d(x, w, stride, padding),
        x,
        kernel,
        twice=x_shape[1] in (28, 14, 7),
    )


CONV_TRANSPOSES = [  # (input (B, H, W, C), kernel (k, k, F, C), stride, padding)
    ((2, 1, 1, 10), (7, 7, 12, 10), 1, 0),  # the DCGAN's G conv_transpose_0: one product
    ((2, 7, 7, 16), (4, 4, 8, 16), 2, 1),  # G conv_transpose_1's shape
    ((2, 14, 14, 8), (4, 4, 1, 8), 2, 1),  # G conv_transpose_2
    slow((2, 5, 5, 3), (3, 3, 2, 3), 2, 1),  # kernel not a multiple of the stride
    slow((2, 4, 3, 3), (5, 5, 2, 3), 3, 1),  # stride 3, not square
    slow((2, 6, 6, 4), (3, 3, 5, 4), 1, 1),  # stride 1
]


@pytest.mark.parametrize(("x_shape", "kernel_shape", "stride", "padding"), CONV_TRANSPOSES)
def test_conv_transpose2d_is_xlas_transposed_convolution(x_shape, kernel_shape, stride, padding):
    x = jax.random.normal(jax.random.key(0), x_shape)
    kernel = 0.3 * jax.random.normal(jax.random.key(1), kernel_shape)
    check_against(
        lambda x, w: convolution.conv_transpose2d(x, w, stride, padding),
        lambda x, w: xla_conv_transpose2d(x, w, stride, padding),
        x,
        kernel,
        twice=False,
    )


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    """<conv2d(u), v> == <u, conv_transpose2d(v)> for the same kernel: the transposed convolution
    is the convolution's adjoint, as PyTorch defines it."""
    kernel = jax.random.normal(jax.random.key(0), (4, 4, 6, 5))  # conv2d 6 -> 5, conv_transpose2d 5 -> 6
    u = jax.random.normal(jax.random.key(1), (2, 14, 14, 6))
    v = jax.random.normal(jax.random.key(2), (2, 7, 7, 5))
    lhs, rhs = jax.jit(
        lambda u, v, kernel: (
            jnp.vdot(convolution.conv2d(u, kernel, 2, 1), v),
            jnp.vdot(u, convolution.conv_transpose2d(v, kernel, 2, 1)),
        )
    )(u, v, kernel)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5)


def test_space_to_depth_and_its_kernel_match_a_strided_convolution():
    """space_to_depth and depth_to_space invert each other, and a stride-2 convolution equals the
    stride-1 correlation of the rearranged input with `phase_kernel`."""
    x = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
    np.testing.assert_array_equal(convolution.depth_to_space(convolution.space_to_depth(x, 2), 2), x)
    assert convolution.space_to_depth(x, 2)[0, 1, 2, 3 * 3 + 1] == x[0, 3, 5, 1]  # block (1, 2), phase (1, 1)
    kernel = jax.random.normal(jax.random.key(1), (4, 4, 3, 2))
    phases = convolution.correlate(convolution.space_to_depth(x, 2), convolution.phase_kernel(kernel, 2))
    close(phases, xla_conv2d(x, kernel, 2, 0))


@pytest.mark.parametrize("fn", ["shift_sum", "place_sum"])
def test_the_shift_sums_gradients_are_their_adjoints(fn):
    """shift_sum / place_sum carry their own gradients (shift_stack / place_stack): each must be
    the adjoint, <f(t), y> == <t, f^T(y)>, or every gradient of the DCGAN would be wrong."""
    f = getattr(convolution, fn)
    taps = jax.random.normal(jax.random.key(0), (2, 6, 5, 3, 2, 4))
    y = jax.random.normal(jax.random.key(1), jax.eval_shape(f, taps).shape)

    @jax.jit
    def both_sides(taps, y):
        summed, vjp = jax.vjp(f, taps)
        plain = jax.grad(lambda t: jnp.vdot(f.fun(t), y))(taps)  # autodiff of the plain sums
        return jnp.vdot(summed, y), jnp.vdot(taps, vjp(y)[0]), vjp(y)[0], plain

    lhs, rhs, custom, plain = both_sides(taps, y)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5)
    np.testing.assert_allclose(custom, plain, rtol=1e-6, atol=1e-6)


def test_correlate_way_picks_the_narrowest_intermediate():
    assert convolution.correlate_way(2, 4, 64) == "patches"  # 16 < 128 (rows: 136)
    assert convolution.correlate_way(2, 256, 128) == "taps"  # 512 < 768 < 1024
    assert convolution.correlate_way(5, 16, 32) == "rows"  # 240 < 400 < 800
