"""The generator and discriminator as Flax modules: the seeds' MLPs and a DCGAN for 28x28x1.

Both networks have one interface for every architecture (mlp | dcgan), conditional or not:

    Generator(config).apply(variables, z, labels=None, train=True)       -> images (B, 28, 28, 1)
    Discriminator(config).apply(variables, images, labels=None, train=True) -> logits (B,)

`labels` (B,) int32 digits are required exactly when config.conditional. `train` only
matters for the DCGAN's BatchNorm: in train mode it normalises with the batch's statistics
and updates the running ones (pass `mutable=["batch_stats"]`), in eval mode (train=False)
it uses the running ones. A DCGAN's variables are {"params": ..., "batch_stats": ...}; an
MLP's only {"params": ...}. Every network's layers live under the submodule `net`.

MLP layers are initialised like PyTorch's `nn.Linear` default, so jaxgan and torch_ref
start from the same distribution: weights kaiming-uniform with a=sqrt(5), which is
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
Parameters are named `linear_0`, `linear_1`, ... in layer order; a kernel is
`(in, out)` (PyTorch's weight is its transpose). A conditional MLP takes z ⊕ one-hot(label)
or flatten(x) ⊕ one-hot(label): only its first layer grows 10 inputs.

A conditional discriminator takes its label one of two ways (config.conditioning): "concat",
the one-hot joined to its input (above; PyTorch-GAN's cgan), or "projection" (Miyato & Koyama
2018): the input is the bare image and the logit gains <embed[label], φ(x)>, φ(x) the features
the last layer reads (the MLP's last hidden layer; the DCGAN's 7x7 features summed over space),
`net/embed/embedding` (10, |φ|). The generator takes z ⊕ one-hot(label) either way.

The DCGAN (pytorch/examples dcgan scaled to 28x28; docs/presets-dcgan.md), ngf =
config.g_features, ndf = config.d_features, no conv biases (BatchNorm follows), layer names
as in the params tree:

    G: z (B, nz [+10])  -> (B, 1, 1, nz [+10])
       conv_transpose_0  k7 s1 p0 -> (B, 7, 7, 2ngf),   batch_norm_0, ReLU
       conv_transpose_1  k4 s2 p1 -> (B, 14, 14, ngf), batch_norm_1, ReLU
       conv_transpose_2  k4 s2 p1 -> (B, 28, 28, 1),   Tanh
    D: x (B, 28, 28, 1 [+10 one-hot label planes])
       conv_0  k4 s2 p1 -> (B, 14, 14, ndf),  LeakyReLU(0.2)          (no BatchNorm, as the example)
       conv_1  k4 s2 p1 -> (B, 7, 7, 2ndf),   batch_norm_1, LeakyReLU(0.2)
       conv_2  k7 s1 p0 -> (B, 1, 1, 1) -> logits (B,)

(The activations are config.g_activation / d_activation, relu / leaky_relu by default.)
Initialisation is the example's `weights_init`: conv kernels N(0, 0.02), BatchNorm scale
N(1, 0.02) and bias 0. Padding p is PyTorch's; `torch_conv` and `torch_conv_transpose`
translate it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan import convolution
from jaxgan.config import Config

DCGAN_INIT_STD = 0.02  # pytorch/examples dcgan weights_init


def torch_linear_init(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Linear weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def dcgan_kernel_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """N(0, 0.02): the DCGAN example's conv weight init, drawn flat and reshaped (XLA on CPU
    compiles a 4-D draw much more slowly than a 1-D one)."""
    return (DCGAN_INIT_STD * jax.random.normal(key, (math.prod(shape),), dtype)).reshape(shape)


def dcgan_scale_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """N(1, 0.02): the DCGAN example's BatchNorm weight init."""
    return 1.0 + DCGAN_INIT_STD * jax.random.normal(key, shape, dtype)


def activation(name: str, leaky_slope: float):
    if name == "relu":
        return nn.relu
    return lambda x: nn.leaky_relu(x, negative_slope=leaky_slope)


# How `Conv` and `ConvTranspose` compute: matrix products, XLA's convolutions, or XLA's with a
# transposed convolution's input dilated by padding (a stride-1 convolution, no lhs dilation).
CONV_IMPLS = ("gemm", "xla", "xla-pad")


def conv_impl(backend: str | None = None) -> str:
    """The convolution implementation for `backend` (default: JAX's): "gemm" (`jaxgan.convolution`:
    matrix products) on CPU, where XLA's convolutions are about 10x slower inside the DCGAN's training
    scan under every XLA:CPU flag measured (docs/performance.md), and "xla" (`lax.conv_general_dilated`,
    cuDNN / the TPU's) elsewhere. "xla-pad" is measured by benchmarks/conv_flags.py, never chosen."""
    return "gemm" if (backend or jax.default_backend()) == "cpu" else "xla"


class Conv(nn.Module):
    """PyTorch's Conv2d(in, features, kernel, stride, padding, bias=use_bias) on NHWC inputs.

    x (B, H, W, in) -> (B, H', W', features), H' = (H + 2 * padding - kernel) // stride + 1.
    impl "gemm" (`conv_impl()`'s choice on CPU): `convolution.conv2d`, matrix products on the input
    rearranged by space-to-depth. impl "xla": `lax.conv_general_dilated`. Both are
    cross-correlations, as flax's nn.Conv and torch's Conv2d are, and agree up to summation order
    (tests/test_models.py, tests/test_convolution.py).

    kernel: (kernel, kernel, in, features), torch's weight (features, in, kernel, kernel)
    transposed by (2, 3, 1, 0) (the layout of flax's nn.Conv); bias (features,) when use_bias.
    """

    features: int
    kernel: int
    stride: int
    padding: int
    use_bias: bool = False
    kernel_init: Callable = dcgan_kernel_init
    impl: str | None = None  # None: conv_impl()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, p = self.kernel, self.stride, self.padding
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        if (self.impl or conv_impl()) in ("xla", "xla-pad"):
            y = jax.lax.conv_general_dilated(
                x, kernel, (s, s), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        else:
            y = convolution.conv2d(x, kernel, s, p)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return y


def torch_conv(features: int, kernel: int, stride: int, padding: int, name: str) -> Conv:
    """PyTorch's Conv2d(in, features, kernel, stride, padding, bias=False) on NHWC inputs (`Conv`).

    Both are cross-correlations; the kernel is (kernel, kernel, in, features), torch's weight
    (features, in, kernel, kernel) transposed by (2, 3, 1, 0).
    """
    return Conv(features, kernel, stride, padding, name=name)


class ConvTranspose(nn.Module):
    """PyTorch's ConvTranspose2d(in, features, kernel, stride, padding, bias=False) on NHWC inputs.

    x (B, H, W, in) -> (B, H', W', features), H' = (H - 1) * stride - 2 * padding + kernel.
    impl "gemm" (`conv_impl()`'s choice on CPU): `convolution.conv_transpose2d`, one matrix product
    of every input pixel with every tap, added into place as stride * stride output phases
    (sub-pixel) and interleaved. impl "xla" (`conv_impl()`'s choice off CPU) computes the same as
    `lax.conv_general_dilated`: the input dilated by the stride, padded by kernel - 1 - padding,
    correlated with the spatially flipped kernel (the gradient of Conv2d); impl "xla-pad" the same
    with the input dilated and padded by `lax.pad`, a stride-1 convolution without lhs dilation.
    They agree up to summation order; XLA's CPU convolutions run about 10x slower inside the training scan.

    kernel: (kernel, kernel, features, in), torch's weight (in, features, kernel, kernel)
    transposed by (2, 3, 1, 0) (the layout of flax's nn.ConvTranspose with transpose_kernel=True).
    """

    features: int
    kernel: int
    stride: int
    padding: int
    impl: str | None = None  # None: conv_impl()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, p = self.kernel, self.stride, self.padding
        kernel = self.param("kernel", dcgan_kernel_init, (k, k, self.features, x.shape[-1]))
        impl = self.impl or conv_impl()
        if impl in ("xla", "xla-pad"):
            flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)  # (k, k, in, features)
            edge = k - 1 - p
            numbers = ("NHWC", "HWIO", "NHWC")
            if impl == "xla-pad":  # dilate and pad the input itself: a plain stride-1 convolution
                x = jax.lax.pad(
                    x, jnp.zeros((), x.dtype), ((0, 0, 0), (edge, edge, s - 1), (edge, edge, s - 1), (0, 0, 0))
                )
                return jax.lax.conv_general_dilated(x, flipped, (1, 1), "VALID", dimension_numbers=numbers)
            pad = ((edge, edge), (edge, edge))
            return jax.lax.conv_general_dilated(x, flipped, (1, 1), pad, lhs_dilation=(s, s), dimension_numbers=numbers)
        return convolution.conv_transpose2d(x, kernel, s, p)


def torch_conv_transpose(features: int, kernel: int, stride: int, padding: int, name: str) -> ConvTranspose:
    """PyTorch's ConvTranspose2d(in, features, kernel, stride, padding, bias=False) on NHWC inputs
    (`ConvTranspose`).

    PyTorch's transposed convolution is the gradient of Conv2d: the input dilated by the stride,
    padded by kernel - 1 - padding on each side, correlated with the spatially flipped kernel;
    equivalently, every input pixel scatters kernel-weighted copies of itself. The kernel is
    (kernel, kernel, features, in): torch's weight (in, features, kernel, kernel) transposed by
    (2, 3, 1, 0), the same permutation as for Conv2d, with no flip in the copy.
    Output size (in - 1) * stride - 2 * padding + kernel, as PyTorch's.
    """
    return ConvTranspose(features, kernel, stride, padding, name=name)


class BatchNorm(nn.Module):
    """PyTorch's BatchNorm2d(C, eps=1e-5, momentum=0.1) over the channel (last) axis, to the letter.

    x: (B, H, W, C). Train mode normalises with the batch's mean and *biased* variance over
    (B, H, W) and updates the running statistics with the mean and the *unbiased* variance
    (n / (n - 1) times the biased one, n = B*H*W), as PyTorch does; flax's nn.BatchNorm uses the
    biased variance for both, which is why this module exists. Eval mode normalises with the
    running statistics. `momentum` is flax's convention, running = momentum * running +
    (1 - momentum) * batch, so PyTorch's 0.1 is 0.9 here.

    params: scale (C,) (torch's weight), bias (C,). batch_stats: mean (C,), var (C,) (torch's
    running_mean, running_var) and num_batches_tracked () int32, counting train-mode calls.
    Initialising does not touch the statistics (mean 0, var 1, count 0, as PyTorch's).
    """

    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", dcgan_scale_init, (channels,))
        bias = self.param("bias", nn.initializers.zeros_init(), (channels,))
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
        count = self.variable("batch_stats", "num_batches_tracked", jnp.zeros, (), jnp.int32)
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = x.mean(axes)  # (C,)
            var = jnp.square(x - mean).mean(axes)  # (C,), biased
            if not self.is_initializing():
                n = x.size // channels
                m = self.momentum
                running_mean.value = m * running_mean.value + (1 - m) * mean
                running_var.value = m * running_var.value + (1 - m) * var * (n / (n - 1))
                count.value = count.value + 1
        else:
            mean, var = running_mean.value, running_var.value
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class MLP(nn.Module):
    """Linear layers of widths `features` with `act` between them (none after the last).

    x (B, in) -> (B, features[-1]). With `labels` (B,) (a projection discriminator's, whose last
    width is 1) the output also gets <embed[label], h>, h (B, features[-2]) the last layer's input
    (`projection`, the embedding (num_classes, features[-2])).
    """

    features: Sequence[int]
    act: str
    leaky_slope: float
    num_classes: int = 0  # > 0: a projection discriminator's classes (the `embed` layer)

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        act = activation(self.act, self.leaky_slope)
        for i, width in enumerate(self.features):
            init = torch_linear_init(x.shape[-1])
            h = x
            x = nn.Dense(width, kernel_init=init, bias_init=init, name=f"linear_{i}")(x)
            if i < len(self.features) - 1:
                x = act(x)
        if self.num_classes:
            x = x + projection(h, labels, self.num_classes)[:, None]
        return x


def projection(features: jax.Array, labels: jax.Array, num_classes: int, std: float = 1.0) -> jax.Array:
    """A projection discriminator's label term (Miyato & Koyama 2018): <embed[label], features>.

    features (B, F), labels (B,) int -> (B,). The embedding (num_classes, F) is the param
    `embed/embedding`, torch_ref's nn.Embedding weight, initialised N(0, std²): std 1 is PyTorch's
    nn.Embedding default (the MLP's: of N(0, 1), N(0, 0.1²) and U(±1/√F) the label sticks soonest
    with it, docs/quality.md), the DCGAN passes its weights' 0.02.
    """
    init = nn.initializers.normal(std)
    embedded = nn.Embed(num_classes, features.shape[-1], embedding_init=init, name="embed")(labels)  # (B, F)
    return jnp.sum(embedded * features, axis=-1)


class DCGANGenerator(nn.Module):
    """z (B, in) -> images (B, 28, 28, 1) in [-1, 1]; in = latent_dim (+ 10 when conditional)."""

    config: Config

    @nn.compact
    def __call__(self, z: jax.Array, train: bool) -> jax.Array:
        c = self.config
        act = activation(c.g_activation, c.leaky_slope)
        x = z[:, None, None, :]  # (B, 1, 1, in)
        x = torch_conv_transpose(2 * c.g_features, 7, 1, 0, "conv_transpose_0")(x)  # (B, 7, 7, 2ngf)
        x = act(BatchNorm(name="batch_norm_0")(x, train))
        x = torch_conv_transpose(c.g_features, 4, 2, 1, "conv_transpose_1")(x)  # (B, 14, 14, ngf)
        x = act(BatchNorm(name="batch_norm_1")(x, train))
        x = torch_conv_transpose(c.image_shape[-1], 4, 2, 1, "conv_transpose_2")(x)  # (B, 28, 28, 1)
        return jnp.tanh(x)


class DCGANDiscriminator(nn.Module):
    """images (B, 28, 28, C) -> logits (B,); C = 1 (+ 10 label planes when conditional by concat).

    With `labels` (B,) (conditioning "projection") the logit also gets <embed[label], sum of the
    7x7 features over space> (B, 2ndf), as Miyato & Koyama's discriminators pool (`projection`);
    the embedding is initialised N(0, 0.02) like every DCGAN weight (N(0, 1) would start the
    logits in the hundreds, a sum over 49 positions).
    """

    config: Config

    @nn.compact
    def __call__(self, images: jax.Array, train: bool, labels: jax.Array | None = None) -> jax.Array:
        c = self.config
        act = activation(c.d_activation, c.leaky_slope)
        x = act(torch_conv(c.d_features, 4, 2, 1, "conv_0")(images))  # (B, 14, 14, ndf)
        x = torch_conv(2 * c.d_features, 4, 2, 1, "conv_1")(x)  # (B, 7, 7, 2ndf)
        features = act(BatchNorm(name="batch_norm_1")(x, train))
        logits = torch_conv(1, 7, 1, 0, "conv_2")(features).reshape(x.shape[0])  # (B,)
        if labels is not None:
            logits = logits + projection(features.sum((1, 2)), labels, c.num_classes, DCGAN_INIT_STD)
        return logits


def one_hot_labels(config: Config, labels: jax.Array | None, network: str) -> jax.Array | None:
    """labels (B,) int -> one-hot (B, 10) float32, or None for an unconditional config.

    ValueError when labels are missing from a conditional network or given to an unconditional one.
    """
    if config.conditional and labels is None:
        raise ValueError(f"the conditional {network} needs labels")
    if not config.conditional and labels is not None:
        raise ValueError(f"the {network} is not conditional (config.conditional is False) but got labels")
    if labels is None:
        return None
    return jax.nn.one_hot(labels, config.num_classes, dtype=jnp.float32)


class Generator(nn.Module):
    """z (B, latent_dim), labels (B,) int when conditional -> images (B, 28, 28, 1) in [-1, 1] (Tanh)."""

    config: Config

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array | None = None, train: bool = True) -> jax.Array:
        c = self.config
        one_hot = one_hot_labels(c, labels, "generator")
        x = z if one_hot is None else jnp.concatenate([z, one_hot], axis=1)  # (B, latent_dim [+10])
        if c.arch == "dcgan":
            return DCGANGenerator(c, name="net")(x, train)
        x = MLP((*c.g_hidden, c.image_size), c.g_activation, c.leaky_slope, name="net")(x)
        return jnp.tanh(x).reshape((z.shape[0], *c.image_shape))


class Discriminator(nn.Module):
    """images (B, 28, 28, 1), labels (B,) int when conditional -> logits (B,).

    For the bce and minimax losses D(x) = sigmoid(logit) is P(real): the seeds end in
    `nn.Sigmoid()`, jaxgan keeps the logit and folds the sigmoid into the loss
    (`jaxgan.losses`); lsgan, hinge and wgan-gp read the logit itself.
    """

    config: Config

    @nn.compact
    def __call__(self, images: jax.Array, labels: jax.Array | None = None, train: bool = True) -> jax.Array:
        c = self.config
        one_hot = one_hot_labels(c, labels, "discriminator")
        projected = labels if c.projection_discriminator else None
        if projected is not None:  # the label reaches the logit through `projection`, not the input
            one_hot = None
        if c.arch == "dcgan":
            if one_hot is not None:  # one constant plane per class, after the image channel
                planes = jnp.broadcast_to(one_hot[:, None, None, :], (*images.shape[:3], c.num_classes))
                images = jnp.concatenate([images, planes], axis=3)  # (B, 28, 28, 11)
            return DCGANDiscriminator(c, name="net")(images, train, projected)
        x = images.reshape((images.shape[0], -1))  # (B, 784)
        if one_hot is not None:
            x = jnp.concatenate([x, one_hot], axis=1)  # (B, 794)
        classes = c.num_classes if projected is not None else 0
        x = MLP((*c.d_hidden, 1), c.d_activation, c.leaky_slope, classes, name="net")(x, projected)
        return x[:, 0]


def init_variables(config: Config, key: jax.Array) -> tuple[dict, dict]:
    """Fresh (generator, discriminator) Flax variables for `config`: {"params": ...} and, for the
    DCGAN, {"batch_stats": ...} (running mean 0, var 1, num_batches_tracked 0)."""
    g_key, d_key = jax.random.split(key)
    z = jnp.zeros((1, config.latent_dim), jnp.float32)
    images = jnp.zeros((1, *config.image_shape), jnp.float32)
    labels = jnp.zeros((1,), jnp.int32) if config.conditional else None
    g_variables = Generator(config).init(g_key, z, labels, train=False)
    d_variables = Discriminator(config).init(d_key, images, labels, train=False)
    return dict(g_variables), dict(d_variables)


def init_params(config: Config, key: jax.Array) -> tuple[dict, dict]:
    """Fresh (generator, discriminator) params for `config` (`init_variables` without batch_stats)."""
    g_variables, d_variables = init_variables(config, key)
    return g_variables["params"], d_variables["params"]


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def expected_param_count(widths: Sequence[int]) -> int:
    """Parameters of a chain of Linear layers of `widths` (in, h1, ..., out)."""
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def variables(params, batch_stats=None) -> dict:
    """A network's Flax variables: {"params"} and, for the DCGAN, {"batch_stats"}."""
    return {"params": params} if batch_stats is None else {"params": params, "batch_stats": batch_stats}


def generate(config: Config, g_params, z: jax.Array, labels: jax.Array | None = None, batch_stats=None) -> jax.Array:
    """Eval mode (BatchNorm uses the running `batch_stats`): z (B, latent_dim), labels (B,) when
    conditional -> images (B, 28, 28, 1) in [-1, 1]."""
    return Generator(config).apply(variables(g_params, batch_stats), z, labels, train=False)


def discriminate(
    config: Config, d_params, images: jax.Array, labels: jax.Array | None = None, batch_stats=None
) -> jax.Array:
    """Eval mode: images (B, 28, 28, 1), labels (B,) when conditional -> logits (B,)."""
    return Discriminator(config).apply(variables(d_params, batch_stats), images, labels, train=False)


def generate_train(
    config: Config, g_params, batch_stats, z: jax.Array, labels: jax.Array | None = None
) -> tuple[jax.Array, Any]:
    """Train mode: (images (B, 28, 28, 1), the updated batch_stats). BatchNorm normalises with
    the batch's statistics and updates the running ones; an MLP (batch_stats None) returns None."""
    return _apply_train(Generator(config), g_params, batch_stats, z, labels)


def discriminate_train(
    config: Config, d_params, batch_stats, images: jax.Array, labels: jax.Array | None = None
) -> tuple[jax.Array, Any]:
    """Train mode: (logits (B,), the updated batch_stats; None for an MLP)."""
    return _apply_train(Discriminator(config), d_params, batch_stats, images, labels)


def _apply_train(module: nn.Module, params, batch_stats, x: jax.Array, labels: jax.Array | None):
    if batch_stats is None:
        return module.apply({"params": params}, x, labels), None
    out, updates = module.apply(variables(params, batch_stats), x, labels, train=True, mutable=["batch_stats"])
    return out, updates["batch_stats"]
