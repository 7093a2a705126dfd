"""Weights between jaxgan and PyTorch (torch_ref, the seeds' `nn.Sequential` models).

    python -m jaxgan.convert RUNDIR out.pt [--epoch N]     # a jaxgan checkpoint -> a .pt file
    python -m jaxgan.convert in.pt NEWDIR [--preset P]     # a .pt file -> a jaxgan run directory

Flax layer `net/linear_i` is torch_ref's `net.{2i}` (activations sit at the odd indices);
a Flax kernel (in, out) is the transpose of PyTorch's Linear weight (out, in). Conversion
copies float32 values unchanged, so a round trip is bit-identical.

A .pt file is `torch.save({"generator": g_sd, "discriminator": d_sd, "config": config.to_dict()})`,
read back with `torch.load(..., weights_only=True)`. NEWDIR gets a checkpoint of epoch 0
(fresh Adam states, step 0) that `jaxgan.generate --workdir NEWDIR` samples from and
`jaxgan.train --workdir NEWDIR` trains on; `jaxgan.generate --from-pt FILE` reads the file directly.
Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxgan import models, train
from jaxgan.cli import UserError
from jaxgan.config import Config, preset

PROG = "python -m jaxgan.convert"
NETS = ("generator", "discriminator")


class ConvertError(UserError, ValueError):
    """A file or state dict that cannot be converted; the message is one line naming the problem."""


def _torch():
    import torch

    return torch


def _layers(params: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(kernel (in, out), bias (out,)), ...] of a Generator/Discriminator's params, in layer order."""
    net = params["net"]
    return [(np.asarray(net[f"linear_{i}"]["kernel"]), np.asarray(net[f"linear_{i}"]["bias"])) for i in range(len(net))]


def params_to_state_dict(params: Any) -> OrderedDict:
    """One network's Flax params -> a torch_ref state dict (`net.0.weight` (out, in), `net.0.bias`, ...)."""
    torch = _torch()
    sd = OrderedDict()
    for i, (kernel, bias) in enumerate(_layers(params)):
        sd[f"net.{2 * i}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.T).copy())
        sd[f"net.{2 * i}.bias"] = torch.from_numpy(bias.copy())
    return sd


def to_torch_state_dict(state_or_params: train.GANState | tuple[Any, Any]) -> tuple[OrderedDict, OrderedDict]:
    """A GANState (or (g_params, d_params)) -> (generator, discriminator) torch_ref state dicts."""
    if isinstance(state_or_params, train.GANState):
        g_params, d_params = state_or_params.g_params, state_or_params.d_params
    else:
        g_params, d_params = state_or_params
    return params_to_state_dict(g_params), params_to_state_dict(d_params)


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


@functools.cache
def _expected_layers(config: Config, net: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Zero (kernel, bias) pairs of the shapes `config`'s generator or discriminator has."""
    g_shapes, d_shapes = jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))
    return _layers(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), g_shapes if net == "generator" else d_shapes))


def state_dict_to_params(config: Config, net: str, sd: dict[str, Any]) -> dict:
    """One torch_ref state dict -> Flax params shaped for `config` (copies, never views of the
    tensors); ConvertError naming the first bad key."""
    expected = _expected_layers(config, net)
    names = [f"net.{2 * i}.{kind}" for i in range(len(expected)) for kind in ("weight", "bias")]
    unexpected = sorted(set(sd) - set(names))
    if unexpected:
        raise ConvertError(
            f"{net} state dict has unexpected key {unexpected[0]!r} for preset {config.preset} "
            f"(expected {', '.join(names)})"
        )
    layers = {}
    for i, (kernel, bias) in enumerate(expected):
        arrays = []
        for kind, want in (("weight", kernel.T.shape), ("bias", bias.shape)):
            key = f"net.{2 * i}.{kind}"
            if key not in sd:
                raise ConvertError(
                    f"{net} state dict lacks {key!r} (preset {config.preset} has {len(expected)} layers)"
                )
            array = _as_numpy(sd[key])
            if array.shape != want:
                raise ConvertError(
                    f"{net} {key} has shape {tuple(array.shape)}, preset {config.preset} expects {tuple(want)}"
                )
            if array.dtype != np.float32:
                raise ConvertError(f"{net} {key} has dtype {array.dtype}, expected float32")
            arrays.append(array)
        weight, b = arrays
        layers[f"linear_{i}"] = {"kernel": np.array(weight.T, order="C"), "bias": np.array(b)}
    return {"net": layers}


def from_torch_state_dict(config: Config, g_sd: dict[str, Any], d_sd: dict[str, Any]) -> train.GANState:
    """torch_ref state dicts -> a fresh GANState (step 0, fresh Adam, key from config.seed) holding those weights."""
    g_params = state_dict_to_params(config, "generator", g_sd)
    d_params = state_dict_to_params(config, "discriminator", d_sd)
    state = train.create_state(config, config.seed)
    tx = train.optimizer(config)
    g_params, d_params = jax.device_put((g_params, d_params))
    state = state.replace(
        g_params=g_params, d_params=d_params, g_opt_state=tx.init(g_params), d_opt_state=tx.init(d_params)
    )
    if state.g_ema_params is not None:  # the EMA of a converted generator starts at its weights
        state = state.replace(g_ema_params=jax.tree.map(jax.numpy.copy, g_params))
    return state


def save_pt(path: str | Path, config: Config, state_or_params: train.GANState | tuple[Any, Any]) -> None:
    """Write the .pt file of `state_or_params` (torch.save of generator, discriminator and config)."""
    write_pt(path, config, *to_torch_state_dict(state_or_params))


def write_pt(path: str | Path, config: Config, g_sd: dict[str, Any], d_sd: dict[str, Any]) -> None:
    """The .pt format: torch.save({"generator": g_sd, "discriminator": d_sd, "config": config.to_dict()})."""
    _torch().save({"generator": g_sd, "discriminator": d_sd, "config": config.to_dict()}, str(path))


def load_pt(path: str | Path, config: Config | None = None) -> train.GANState:
    """Read a .pt file (weights_only) into a GANState, with the file's config unless `config` is given.

    ConvertError in one line for anything that is not a convertible file.
    """
    torch = _torch()
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConvertError(f"cannot read {str(path)!r} as a PyTorch file: {str(err).splitlines()[0]}") from None
    if not isinstance(blob, dict) or not all(k in blob for k in NETS):
        raise ConvertError(
            f"{str(path)!r} is not a jaxgan .pt file (needs 'generator' and 'discriminator' state dicts)"
        )
    if config is None:
        if "config" not in blob:
            raise ConvertError(f"{str(path)!r} has no config: name one with --preset")
        config = Config.from_dict(blob["config"])
    return from_torch_state_dict(config.validate(), blob["generator"], blob["discriminator"])


def pt_to_rundir(pt: str | Path, workdir: str | Path, config: Config | None = None) -> Path:
    """A new jaxgan run directory holding the .pt file's weights as its epoch-0 checkpoint."""
    from jaxgan import checkpoint

    workdir = Path(workdir)
    if checkpoint.epochs_in(workdir):
        raise ConvertError(f"{str(workdir)!r} already holds checkpoints; choose a new directory")
    state = load_pt(pt, config)
    dataset = "mnist-5k" if state.config.dataset in ("auto", "mnist-5k") else state.config.dataset
    num_examples = 5000 if dataset == "mnist-5k" else 60000
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(state.config.to_dict(), indent=2) + "\n")
    with checkpoint.Checkpointer(workdir, keep=state.config.keep_checkpoints) as checkpointer:
        checkpointer.save(state, 0, dataset=dataset, num_examples=num_examples)
        checkpointer.wait()
    return workdir


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m jaxgan.convert`; returns the exit status."""
    from jaxgan.cli import OneLineParser, UsageError, require, run

    parser = OneLineParser(prog=PROG, description="Convert weights between a jaxgan run and a PyTorch .pt file.")
    parser.add_argument("source", help="a jaxgan run directory, or a .pt file")
    parser.add_argument("target", help="the .pt file to write, or a new run directory")
    parser.add_argument("--epoch", type=int, default=None, help="checkpoint epoch to convert (default: latest)")
    parser.add_argument("--preset", default=None, help="config of a .pt file (default: the config stored in it)")

    def body() -> None:
        from jaxgan import checkpoint

        args = parser.parse_args(argv)
        require("torch")
        source = Path(args.source)
        if source.is_dir():
            if not args.target.endswith(".pt"):
                raise UsageError(f"target {args.target!r} must be a .pt file when converting a run directory")
            state = checkpoint.load_state(source, args.epoch)
            save_pt(args.target, state.config, state)
        elif source.is_file():
            try:
                config = preset(args.preset) if args.preset else None
            except ValueError as err:
                raise UsageError(str(err)) from None
            pt_to_rundir(source, args.target, config)
        else:
            raise UsageError(f"source {args.source!r} does not exist")
        print(f"wrote {args.target}")

    return run(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
