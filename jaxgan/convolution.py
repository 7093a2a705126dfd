"""PyTorch's Conv2d and ConvTranspose2d (NHWC, no bias) as matrix products, shaped for XLA:CPU.

A strided convolution is a stride-1 one on its input rearranged by `space_to_depth`: with stride
s, each s x s block of pixels becomes one pixel of s*s*C channels and the k x k kernel becomes
k' x k', k' = ceil(k / s) (`phase_kernel`; the DCGAN's k = 4, s = 2 gives k' = 2, no zero taps).
A transposed convolution is that convolution's adjoint (`correlate_transpose`), which yields the
s*s output phases of each block as channels, interleaved by `depth_to_space` ("sub-pixel").

A stride-1 correlation is computed one of three ways, whichever has the narrowest intermediate
per pixel (`correlate_way`):

- "patches": the input unfolded (`patches`, k*k*C values per output pixel) and one product, for
  layers that widen (F > C: the first layers);
- "taps": one product of every pixel with every tap (`tap_products`, k*k*F values per input
  pixel), then the k*k shifted slices summed (`shift_sum`), for layers that narrow or keep their
  width;
- "rows": the rows unfolded (`row_patches`, k*C), times every column tap (k*F), the k column
  shifts summed: the classifier's second 5 x 5 layer, where k*k of either would be wide.

The adjoint (`correlate_transpose`) adds every pixel's tap products into place (`place_sum`).

The gradients that matter are written out (`jax.custom_vjp`) so that each is one read per
element: autodiff of k*k slices of a (B, H, W, k, k, F) array would add k*k zero-padded copies
of the whole array, and of a product contracting over rows would copy its wider operand into
its transpose first. Gradients of gradients (WGAN-GP's penalty) go through the same functions.
Profiles and timings: docs/performance.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def patches(x: jax.Array, kernel: int) -> jax.Array:
    """im2col, stride 1: x (B, H, W, C) -> (B, H - k + 1, W - k + 1, k * k * C), k = kernel.

    Entry [b, h, w, (j, i, c)] is x[b, h + i, w + j, c]: the row taps i are stacked first, then
    the column taps j of those (2k slices rather than k**2).
    """
    cols = x.shape[2] - kernel + 1
    stacked = row_patches(x, kernel)  # (B, rows, W, (i, c))
    return jnp.concatenate([stacked[:, :, j : j + cols] for j in range(kernel)], axis=-1)


def kernel_matrix(kernel: jax.Array) -> jax.Array:
    """(k, k, C, F) [i, j, c, f] -> (k * k * C, F) in `patches`' (j, i, c) order."""
    return kernel.transpose(1, 0, 2, 3).reshape(-1, kernel.shape[-1])


@jax.custom_vjp
def tap_products(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Every pixel times every tap: x (B, H, W, C), kernel (kh, kw, C, F) -> T (B, H, W, kh, kw, F),
    T[b, h, w, i, j] = x[b, h, w] @ kernel[i, j], one product."""
    kh, kw, c, f = kernel.shape
    return (x @ kernel.transpose(2, 0, 1, 3).reshape(c, kh * kw * f)).reshape(*x.shape[:3], kh, kw, f)


def _tap_products_fwd(x: jax.Array, kernel: jax.Array):
    return tap_products(x, kernel), (x, kernel)


def _tap_products_bwd(residuals, dtaps: jax.Array):
    """The kernel's gradient is x^T @ dT with x, the narrower operand, first: XLA:CPU copied the
    first operand of such a product (contracting over rows) into its transpose, 5 ms for dT."""
    x, kernel = residuals
    kh, kw, c, f = kernel.shape
    dt = dtaps.reshape(-1, kh * kw * f)
    dx = (dt @ kernel.transpose(2, 0, 1, 3).reshape(c, kh * kw * f).T).reshape(x.shape)
    dkernel = jnp.einsum("nc,nt->ct", x.reshape(-1, c), dt).reshape(c, kh, kw, f).transpose(1, 2, 0, 3)
    return dx, dkernel


tap_products.defvjp(_tap_products_fwd, _tap_products_bwd)


def _shift_pad(kh: int, kw: int, i: int, j: int) -> tuple:
    return ((0, 0, 0), (i, kh - 1 - i, 0), (j, kw - 1 - j, 0), (0, 0, 0))


def shift_stack(y: jax.Array, kh: int, kw: int) -> jax.Array:
    """y (B, H', W', F) -> (B, H'+kh-1, W'+kw-1, kh, kw, F), [b, h, w, i, j] = y[b, h - i, w - j] (0 outside)."""
    zero = jnp.zeros((), y.dtype)
    shifted = [jax.lax.pad(y, zero, _shift_pad(kh, kw, i, j)) for i in range(kh) for j in range(kw)]
    return jnp.stack(shifted, axis=3).reshape(*shifted[0].shape[:3], kh, kw, y.shape[-1])


@jax.custom_vjp
def shift_sum(taps: jax.Array) -> jax.Array:
    """taps (B, H, W, kh, kw, F) -> (B, H-kh+1, W-kw+1, F): y[h, w] = sum_ij taps[h + i, w + j, i, j].
    Its gradient is `shift_stack`, one read per element (the slices' own would add kh*kw
    zero-padded copies of the whole array)."""
    kh, kw = taps.shape[3:5]
    rows, cols = taps.shape[1] - kh + 1, taps.shape[2] - kw + 1
    return sum(taps[:, i : i + rows, j : j + cols, i, j] for i in range(kh) for j in range(kw))


shift_sum.defvjp(lambda taps: (shift_sum(taps), taps.shape[3:5]), lambda k, dy: (shift_stack(dy, *k),))


def place_stack(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """x (B, H, W, C) -> (B, H-kh+1, W-kw+1, kh, kw, C), [b, h, w, i, j] = x[b, h + i, w + j]."""
    rows, cols = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    taps = [x[:, i : i + rows, j : j + cols] for i in range(kh) for j in range(kw)]
    return jnp.stack(taps, axis=3).reshape(x.shape[0], rows, cols, kh, kw, x.shape[-1])


@jax.custom_vjp
def place_sum(taps: jax.Array) -> jax.Array:
    """taps (B, H, W, kh, kw, C) -> (B, H+kh-1, W+kw-1, C): x[h + i, w + j] += taps[h, w, i, j], the
    adjoint of `shift_sum`; its gradient is `place_stack`."""
    (kh, kw), zero = taps.shape[3:5], jnp.zeros((), taps.dtype)
    pads = (jax.lax.pad(taps[:, :, :, i, j], zero, _shift_pad(kh, kw, i, j)) for i in range(kh) for j in range(kw))
    return sum(pads)


place_sum.defvjp(lambda taps: (place_sum(taps), taps.shape[3:5]), lambda k, dx: (place_stack(dx, *k),))


def row_patches(x: jax.Array, k: int) -> jax.Array:
    """im2col along rows only: x (B, H, W, C) -> (B, H - k + 1, W, k * C), [b, h, w, (i, c)] = x[b, h + i, w, c]."""
    rows = x.shape[1] - k + 1
    return jnp.concatenate([x[:, i : i + rows] for i in range(k)], axis=-1)


def correlate(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 VALID cross-correlation: x (B, H, W, C), kernel (k, k, C, F) -> (B, H-k+1, W-k+1, F).

    A kernel the size of its input is one product. Otherwise one of three ways, whichever has the
    narrowest intermediate per pixel:
    - "patches", k*k*C: the input unfolded (`patches`), one product;
    - "taps", k*k*F: every pixel times every tap (`tap_products`), the k*k shifts summed (`shift_sum`);
    - "rows", k*C + k*F: the rows unfolded (`row_patches`), times every column tap, the k column
      shifts summed.
    """
    k, _, c, f = kernel.shape
    if x.shape[1:3] == (k, k):
        return (x.reshape(x.shape[0], -1) @ kernel.reshape(-1, f)).reshape(x.shape[0], 1, 1, f)
    way = correlate_way(k, c, f)
    if way == "patches":
        return patches(x, k) @ kernel_matrix(kernel)
    if way == "taps":
        return shift_sum(tap_products(x, kernel))
    column_taps = kernel.transpose(1, 0, 2, 3).reshape(1, k, k * c, f)  # [0, j]: (i, c) x f
    return shift_sum(tap_products(row_patches(x, k), column_taps))


def correlate_way(k: int, c: int, f: int) -> str:
    """`correlate`'s way for a k x k kernel from C to F channels: the narrowest intermediate."""
    widths = {"patches": k * k * c, "taps": k * k * f, "rows": k * (c + f)}
    return min(widths, key=widths.get)


def correlate_transpose(y: jax.Array, kernel: jax.Array) -> jax.Array:
    """The adjoint of `correlate(., kernel)`: y (B, H', W', F), kernel (k, k, C, F) ->
    (B, H' + k - 1, W' + k - 1, C): each pixel's products with every (transposed) tap,
    (B, H', W', k, k, C), added into place (`place_sum`). The products are exact (no padded border
    multiplied) and the gradient gathers."""
    return place_sum(tap_products(y, kernel.transpose(0, 1, 3, 2)))


def space_to_depth(x: jax.Array, s: int) -> jax.Array:
    """(B, H, W, C) -> (B, H/s, W/s, s*s*C): pixel [b, s*h + a, s*w + d, c] -> [b, h, w, (a, d, c)]."""
    b, h, w, c = x.shape
    return x.reshape(b, h // s, s, w // s, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // s, w // s, s * s * c)


def depth_to_space(x: jax.Array, s: int) -> jax.Array:
    """The inverse of `space_to_depth`: (B, H, W, s*s*C) -> (B, s*H, s*W, C)."""
    b, h, w, c = x.shape
    return x.reshape(b, h, w, s, s, c // (s * s)).transpose(0, 1, 3, 2, 4, 5).reshape(b, s * h, s * w, c // (s * s))


def phase_kernel(kernel: jax.Array, s: int) -> jax.Array:
    """(k, k, C, F) -> (k', k', s*s*C, F), k' = ceil(k / s): tap (s*i' + a, s*j' + d) moves to
    (i', j') with channel block (a, d), as `space_to_depth` orders the channels; taps past k are 0."""
    k, _, c, f = kernel.shape
    taps = -(-k // s)
    extra = taps * s - k
    kernel = jnp.pad(kernel, ((0, extra), (0, extra), (0, 0), (0, 0)))
    return kernel.reshape(taps, s, taps, s, c, f).transpose(0, 2, 1, 3, 4, 5).reshape(taps, taps, s * s * c, f)


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """PyTorch's Conv2d(bias=False): x (B, H, W, C), kernel (k, k, C, F) -> (B, H', W', F),
    H' = (H + 2 * padding - k) // stride + 1.

    The input is zero-padded by `padding` (and at the end to a multiple of the stride, or cropped
    where the last rows meet no tap), rearranged by `space_to_depth` and correlated with
    `phase_kernel` at stride 1.
    """
    k, s = kernel.shape[0], stride
    taps = -(-k // s)
    out_h, out_w = ((n + 2 * padding - k) // s + 1 for n in x.shape[1:3])
    end_h, end_w = (s * (o + taps - 1) - n - padding for o, n in ((out_h, x.shape[1]), (out_w, x.shape[2])))
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (padding, end_h, 0), (padding, end_w, 0), (0, 0, 0)))
    if s == 1:
        return correlate(x, kernel)
    return correlate(space_to_depth(x, s), phase_kernel(kernel, s))


def conv_transpose2d(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """PyTorch's ConvTranspose2d(bias=False): x (B, H, W, C), kernel (k, k, F, C) -> (B, H', W', F),
    H' = (H - 1) * stride - 2 * padding + k: the adjoint of `conv2d(., kernel, stride, padding)`.

    A 1 x 1 input without padding (the DCGAN's first layer) is one product, each tap a pixel.
    Otherwise `correlate_transpose` with `phase_kernel` gives every block's s*s output phases
    (B, H + k' - 1, W + k' - 1, s*s*F), `depth_to_space` interleaves them and `padding` is cropped.
    """
    k, s = kernel.shape[0], stride
    if x.shape[1:3] == (1, 1) and padding == 0:
        return jnp.einsum("bc,ijfc->bijf", x[:, 0, 0], kernel)
    out_h, out_w = ((n - 1) * s - 2 * padding + k for n in x.shape[1:3])
    if s == 1:
        return correlate_transpose(x, kernel)[:, padding : padding + out_h, padding : padding + out_w]
    phases = correlate_transpose(x, phase_kernel(kernel, s))
    return depth_to_space(phases, s)[:, padding : padding + out_h, padding : padding + out_w]
