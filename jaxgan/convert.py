"""Weights between jaxgan and PyTorch (torch_ref, the seeds' `nn.Sequential` models).

    python -m jaxgan.convert RUNDIR out.pt [--epoch N]     # a jaxgan checkpoint -> a .pt file
    python -m jaxgan.convert in.pt NEWDIR [--preset P]     # a .pt file -> a jaxgan run directory

Each network's layers map to torch_ref's `nn.Sequential` indices (`torch_layout`): for the
MLP, Flax layer `net/linear_i` is `net.{2i}` (activations sit at the odd indices) and a Flax
kernel (in, out) is the transpose of PyTorch's Linear weight (out, in); for the DCGAN, conv
and transposed-conv kernels are torch's weights transposed by (2, 3, 1, 0), and BatchNorm's
scale, bias and batch_stats mean, var, num_batches_tracked are torch's weight, bias,
running_mean, running_var, num_batches_tracked (a GANState's g_batch_stats / d_batch_stats). Conversion copies float32 values unchanged
(and the int counter between int32 and int64), so a round trip is bit-identical.

A .pt file is `torch.save({"generator": g_sd, "discriminator": d_sd, "config": config.to_dict()})`,
read back with `torch.load(..., weights_only=True)`. NEWDIR gets a checkpoint of epoch 0
(fresh Adam states, step 0) that `jaxgan.generate --workdir NEWDIR` samples from and
`jaxgan.train --workdir NEWDIR` trains on; `jaxgan.generate --from-pt FILE` reads the file directly.
Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxgan import checkpoint, models, rundir, steps
from jaxgan.cli import UserError, first_line
from jaxgan.config import Config, preset

PROG = "python -m jaxgan.convert"
NETS = ("generator", "discriminator")


class ConvertError(UserError, ValueError):
    """A file or state dict that cannot be converted; the message is one line naming the problem."""


def _torch():
    import torch

    return torch


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer with weights: its Flax name under `net`, its torch_ref state-dict prefix, its kind."""

    flax: str
    torch: str
    kind: str  # a key of TENSORS


# kind -> its tensors: (Flax collection, Flax name, torch name, axes taking the Flax array to torch's).
# Conv kernels (kh, kw, in, out) are torch's weight (out, in, kh, kw) transposed; the DCGAN's
# ConvTranspose kernels (kh, kw, out, in) with transpose_kernel=True are torch's (in, out, kh, kw)
# transposed the same way (jaxgan.models.torch_conv_transpose), so both are kind "conv".
TENSORS: dict[str, tuple[tuple[str, str, str, tuple[int, ...] | None], ...]] = {
    "linear": (("params", "kernel", "weight", (1, 0)), ("params", "bias", "bias", None)),
    "conv": (("params", "kernel", "weight", (3, 2, 0, 1)),),
    "embedding": (("params", "embedding", "weight", None),),  # a projection D's (10, F), the same both sides
    "batch_norm": (
        ("params", "scale", "weight", None),
        ("params", "bias", "bias", None),
        ("batch_stats", "mean", "running_mean", None),
        ("batch_stats", "var", "running_var", None),
        ("batch_stats", "num_batches_tracked", "num_batches_tracked", None),
    ),
}
COUNTER = "num_batches_tracked"  # int32 in jaxgan, int64 in PyTorch; every other tensor is float32


def torch_layout(config: Config, net: str) -> list[Layer]:
    """The layers with weights of `config`'s generator or discriminator, in torch_ref's order
    (a projection discriminator's label embedding last: Flax `net/embed`, torch `embed`)."""
    if config.arch == "dcgan":
        if net == "generator":
            return [
                Layer("conv_transpose_0", "net.0", "conv"),
                Layer("batch_norm_0", "net.1", "batch_norm"),
                Layer("conv_transpose_1", "net.3", "conv"),
                Layer("batch_norm_1", "net.4", "batch_norm"),
                Layer("conv_transpose_2", "net.6", "conv"),
            ]
        layers = [
            Layer("conv_0", "net.0", "conv"),
            Layer("conv_1", "net.2", "conv"),
            Layer("batch_norm_1", "net.3", "batch_norm"),
            Layer("conv_2", "net.5", "conv"),
        ]
    else:
        hidden = config.g_hidden if net == "generator" else config.d_hidden
        layers = [Layer(f"linear_{i}", f"net.{2 * i}", "linear") for i in range(len(hidden) + 1)]
    if net == "discriminator" and config.projection_discriminator:
        layers.append(Layer("embed", "embed", "embedding"))
    return layers


def _tensors(config: Config, net: str, collections: tuple[str, ...]):
    """(layer, collection, Flax name, torch key, axes) of every tensor of `net` in `collections`."""
    for layer in torch_layout(config, net):
        for collection, flax_name, torch_name, axes in TENSORS[layer.kind]:
            if collection in collections:
                yield layer, collection, flax_name, f"{layer.torch}.{torch_name}", axes


def variables_to_state_dict(config: Config, net: str, variables: dict[str, Any]) -> OrderedDict:
    """One network's Flax variables ({"params": ..., and "batch_stats": ... if it has BatchNorm})
    -> a torch_ref state dict (copies). Without "batch_stats", only the parameters' keys (as for
    gradients or Adam moments)."""
    torch = _torch()
    sd = OrderedDict()
    for layer, collection, flax_name, key, axes in _tensors(config, net, tuple(variables)):
        array = np.asarray(variables[collection]["net"][layer.flax][flax_name])
        if axes is not None:
            array = array.transpose(axes)
        if flax_name == COUNTER:
            array = array.astype(np.int64)
        sd[key] = torch.from_numpy(np.array(array, order="C"))
    return sd


def torch_weight(kernel: Any) -> np.ndarray:
    """A Flax kernel in torch's weight layout, by `TENSORS`' axes (a C-ordered copy): a Dense
    kernel (in, out) -> (out, in); a Conv (kh, kw, in, out) or the DCGAN's ConvTranspose
    (kh, kw, out, in) kernel -> (out, in, kh, kw) or (in, out, kh, kw)."""
    kernel = np.asarray(kernel)
    (_, _, _, axes), *_ = TENSORS["conv" if kernel.ndim == 4 else "linear"]
    return np.array(kernel.transpose(axes), order="C")


def params_to_state_dict(config: Config, net: str, params: Any) -> OrderedDict:
    """One network's Flax params (or a pytree shaped like them: gradients, Adam moments) -> the
    torch_ref state dict of its parameters (`net.0.weight`, `net.0.bias`, ...)."""
    return variables_to_state_dict(config, net, {"params": params})


def to_torch_state_dict(state: steps.GANState) -> tuple[OrderedDict, OrderedDict]:
    """A GANState's weights (and a DCGAN's BatchNorm running statistics) -> (generator,
    discriminator) torch_ref state dicts."""
    return (
        variables_to_state_dict(state.config, "generator", models.variables(state.g_params, state.g_batch_stats)),
        variables_to_state_dict(state.config, "discriminator", models.variables(state.d_params, state.d_batch_stats)),
    )


def _as_numpy(value: Any, name: str) -> np.ndarray:
    """A state dict's value as a NumPy array; ConvertError naming `name` for a tensor NumPy cannot hold
    (sparse, bfloat16, ...)."""
    if hasattr(value, "detach"):  # a torch tensor
        layout = str(getattr(value, "layout", "torch.strided"))
        if layout != "torch.strided":
            raise ConvertError(f"{name} is a {layout.removeprefix('torch.')} tensor, expected a dense float32 one")
        try:
            value = value.detach().cpu().numpy()
        except (TypeError, RuntimeError):
            raise ConvertError(
                f"{name} has dtype {str(value.dtype).removeprefix('torch.')}, expected float32"
            ) from None
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        raise ConvertError(f"{name} is a {type(value).__name__}, not an array") from None


@functools.cache
def _expected_variables(config: Config, net: str) -> dict[str, Any]:
    """The shapes and dtypes of `config`'s generator or discriminator variables (no FLOPs)."""
    g_shapes, d_shapes = jax.eval_shape(lambda: models.init_variables(config, jax.random.key(0)))
    return g_shapes if net == "generator" else d_shapes


def state_dict_to_variables(config: Config, net: str, sd: dict[str, Any], buffers: bool = True) -> dict[str, Any]:
    """One torch_ref state dict -> Flax variables shaped for `config` (copies, never views of the
    tensors): {"params": ...} and, for networks with BatchNorm and `buffers`, {"batch_stats": ...}.

    buffers=False reads a dict of parameters only (gradients, Adam moments). ConvertError naming
    the first bad key.
    """
    if not isinstance(sd, dict):
        raise ConvertError(f"the {net} state dict is a {type(sd).__name__}, not a dict of tensors")
    expected = _expected_variables(config, net)
    collections = ("params", "batch_stats") if buffers else ("params",)
    tensors = list(_tensors(config, net, tuple(c for c in collections if c in expected)))
    names = [key for *_, key, _ in tensors]
    unexpected = sorted(set(sd) - set(names), key=str)
    if unexpected:
        raise ConvertError(
            f"{net} state dict has unexpected key {unexpected[0]!r} for preset {config.preset} "
            f"(expected {', '.join(names)})"
        )
    variables: dict[str, Any] = {}
    for layer, collection, flax_name, key, axes in tensors:
        if key not in sd:
            raise ConvertError(f"{net} state dict lacks {key!r} (preset {config.preset} has {', '.join(names)})")
        want = expected[collection]["net"][layer.flax][flax_name]
        want_shape = tuple(want.shape) if axes is None else tuple(want.shape[a] for a in axes)
        array = _as_numpy(sd[key], f"{net} {key}")
        if array.shape != want_shape:
            raise ConvertError(
                f"{net} {key} has shape {tuple(array.shape)}, preset {config.preset} expects {want_shape}"
            )
        if flax_name == COUNTER:
            if not np.issubdtype(array.dtype, np.integer) or not 0 <= int(array) <= np.iinfo(np.int32).max:
                raise ConvertError(f"{net} {key} must be a non-negative int32-sized integer, got {array.dtype} {array}")
            array = array.astype(np.int32)
        elif array.dtype != np.float32:
            raise ConvertError(f"{net} {key} has dtype {array.dtype}, expected float32")
        if axes is not None:
            array = array.transpose(np.argsort(axes))
        variables.setdefault(collection, {"net": {}})["net"].setdefault(layer.flax, {})[flax_name] = np.array(
            array, order="C"
        )
    return variables


def state_dict_to_params(config: Config, net: str, sd: dict[str, Any]) -> dict:
    """A torch_ref dict of one network's parameters only (weights, gradients, Adam moments) ->
    Flax params shaped for `config`; ConvertError naming the first bad key."""
    return state_dict_to_variables(config, net, sd, buffers=False)["params"]


def from_torch_state_dict(config: Config, g_sd: dict[str, Any], d_sd: dict[str, Any]) -> steps.GANState:
    """torch_ref state dicts -> a fresh GANState (step 0, fresh Adam, key from config.seed) holding
    those weights and, for the DCGAN, those BatchNorm running statistics."""
    g_variables = state_dict_to_variables(config, "generator", g_sd)
    d_variables = state_dict_to_variables(config, "discriminator", d_sd)
    state = steps.create_state(config, config.seed)
    tx = steps.optimizer(config)
    g_variables, d_variables = jax.device_put((g_variables, d_variables))
    g_params, d_params = g_variables["params"], d_variables["params"]
    state = state.replace(
        g_params=g_params,
        d_params=d_params,
        g_opt_state=tx.init(g_params),
        d_opt_state=tx.init(d_params),
        g_batch_stats=g_variables.get("batch_stats"),
        d_batch_stats=d_variables.get("batch_stats"),
    )
    if state.g_ema_params is not None:  # the EMA of a converted generator starts at its weights
        state = state.replace(g_ema_params=jax.tree.map(jax.numpy.copy, g_params))
    return state


def save_pt(path: str | Path, config: Config, state: steps.GANState) -> None:
    """Write the .pt file of `state` (torch.save of generator, discriminator and config)."""
    write_pt(path, config, *to_torch_state_dict(state))


def write_pt(path: str | Path, config: Config, g_sd: dict[str, Any], d_sd: dict[str, Any]) -> None:
    """The .pt format: torch.save({"generator": g_sd, "discriminator": d_sd, "config": config.to_dict()}),
    written to a temporary file beside `path` and renamed into place."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        _torch().save({"generator": g_sd, "discriminator": d_sd, "config": config.to_dict()}, str(tmp))
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        raise ConvertError(f"cannot write {str(path)!r}: {first_line(err)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def load_pt(path: str | Path, config: Config | None = None) -> steps.GANState:
    """Read a .pt file (weights_only) into a GANState, with the file's config unless `config` is given.

    ConvertError in one line for anything that is not a convertible file.
    """
    torch = _torch()
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConvertError(f"cannot read {str(path)!r} as a PyTorch file: {first_line(err)}") from None
    if not isinstance(blob, dict) or not all(k in blob for k in NETS):
        raise ConvertError(
            f"{str(path)!r} is not a jaxgan .pt file (needs 'generator' and 'discriminator' state dicts)"
        )
    if config is None:
        if "config" not in blob:
            raise ConvertError(
                f"{str(path)!r} has no config: name its preset with python -m jaxgan.convert {path} NEWDIR --preset NAME"
            )
        try:  # the same rules as the command line's, by type and range, before anything is allocated
            config = Config.from_dict(blob["config"]).validate()
        except ValueError as err:
            raise ConvertError(f"{str(path)!r} has an unusable config: {err}") from None
    return from_torch_state_dict(config.validate(), blob["generator"], blob["discriminator"])


def pt_to_rundir(pt: str | Path, workdir: str | Path, config: Config | None = None, force: bool = False) -> Path:
    """A new jaxgan run directory holding the .pt file's weights as its epoch-0 checkpoint.

    ConvertError for a directory that holds checkpoints, and, unless `force`, for any non-empty one
    (its config.json would be replaced); UserError naming the PID when a run holds the directory's lock
    (`rundir.RunDir.lock`, taken here too while writing)."""
    workdir = Path(workdir)

    def check_target() -> None:
        if workdir.exists() and not workdir.is_dir():
            raise ConvertError(f"{str(workdir)!r} exists and is not a directory")
        if checkpoint.epochs_in(workdir):
            raise ConvertError(f"{str(workdir)!r} already holds checkpoints; choose a new directory")
        if workdir.is_dir() and any(p.name != rundir.LOCK for p in workdir.iterdir()) and not force:
            raise ConvertError(
                f"{str(workdir)!r} is not empty; choose a new directory, or add --force to write into it "
                "(replacing its config.json)"
            )

    check_target()
    state = load_pt(pt, config)  # before anything is created: a bad .pt file changes nothing
    dataset = "mnist-5k" if state.config.dataset in ("auto", "mnist-5k") else state.config.dataset
    num_examples = 5000 if dataset == "mnist-5k" else 60000
    workdir.mkdir(parents=True, exist_ok=True)
    run = rundir.RunDir(workdir)
    run.lock(elsewhere="another target directory")
    try:
        check_target()  # again under the lock: a run may have started here meanwhile
        run.config.write_text(json.dumps(state.config.to_dict(), indent=2) + "\n")
        with checkpoint.Checkpointer(workdir, keep=state.config.keep_checkpoints) as checkpointer:
            checkpointer.save(state, 0, dataset=dataset, num_examples=num_examples)
            checkpointer.wait()
    finally:
        run.release()
    return workdir


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m jaxgan.convert`; returns the exit status."""
    from jaxgan.cli import OneLineParser, UsageError, check_writable, require, run

    parser = OneLineParser(prog=PROG, description="Convert weights between a jaxgan run and a PyTorch .pt file.")
    parser.add_argument("source", help="a jaxgan run directory, or a .pt file")
    parser.add_argument("target", help="the .pt file to write, or a new run directory")
    parser.add_argument("--epoch", type=int, default=None, help="checkpoint epoch to convert (default: latest)")
    parser.add_argument("--preset", default=None, help="config of a .pt file (default: the config stored in it)")
    parser.add_argument(
        "--force", action="store_true", help="write a run directory into a non-empty directory (no checkpoints in it)"
    )

    def body() -> None:
        from jaxgan import signals

        with signals.exit_at_once(PROG, when=""):
            args = parser.parse_args(argv)
            require("torch")
            source = Path(args.source)
            if source.is_dir():
                if not args.target.endswith(".pt"):
                    raise UsageError(f"target {args.target!r} must be a .pt file when converting a run directory")
                check_writable(args.target, "target")
                state = checkpoint.load_state(source, args.epoch)
                save_pt(args.target, state.config, state)
            elif source.is_file():
                try:
                    config = preset(args.preset) if args.preset else None
                except ValueError as err:
                    raise UsageError(str(err)) from None
                pt_to_rundir(source, args.target, config, force=args.force)
            else:
                raise UsageError(f"source {args.source!r} does not exist")
        print(f"wrote {args.target}")

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
