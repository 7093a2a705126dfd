"""Many runs in one program: one GAN per seed (x lr x beta1), trained together by one jitted,
vmapped epoch scan: `python -m jaxgan.train --seeds 0-7 [--lr 1e-4,2e-4] [--beta1 0.5,0.9]`.

The group's state is one `train.GANState` whose every leaf has a leading run axis (K, ...):
the members' params, Adam states, steps, PRNG keys and (a DCGAN's) BatchNorm statistics, stacked
(`stack`). Its static config is the group's template (member 0's). What differs between members
is data, not config: the seed lives in each member's key, and a swept lr or beta1 in
`GANState.adam` (float32 arrays (K,), `optim.AdamHyper`), so one compilation serves the whole
grid. `train.train_steps` and `train.epoch_batch_indices` are vmapped over the run axis as they
are: each member shuffles and draws its noise (and a conditional GAN's fake labels) from its own
key exactly as the single run with its seed does, and equals that run up to float32 reduction
order (docs/multirun.md gives the measured gaps). The dataset's images and labels are shared by
every member.

    WORKDIR/group.json       the template config, the lists, and the frozen (diverged) runs
            seed_3/          each member's own run directory (`jaxgan.rundir`; seed_3-lr_0.0002/
                             in a sweep) with normal single-run checkpoints: generate, evaluate,
                             convert, even `jaxgan.train --workdir WORKDIR/seed_3`, work on it
            losses.png       every run's loss curves in one plot
            summary.json     each run's last row (FD and score with --eval-every), mean and std

Divergence: a member whose loss or parameters turn non-finite is named, with its seed, lr and
beta1, and frozen: its directory keeps what it had (the rows of its good epochs, its last good
checkpoint), nothing more is written to it, and the others go on. Its lane stays in the compiled
program (lanes never mix, so the others' numbers do not change). The group stops with
`train.Diverged` only when every member has diverged.

Devices: the runs are spread over the local devices, a 1-D mesh (axis "runs") over the largest
device count that divides K: each device trains its own members, with no communication.
`mode="sequential"` trains the members one after another through the single-run loop instead
(the same directories and summary; docs/multirun.md says when that is faster).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxgan import checkpoint, models, parallel, rundir, signals, train, visualize
from jaxgan import data as data_lib
from jaxgan.checkpoint import CheckpointError
from jaxgan.cli import UserError, first_line
from jaxgan.config import Config
from jaxgan.optim import AdamHyper

GROUP_FILE = "group.json"
FORMAT_VERSION = 1
SWEPT = ("seed", "lr", "beta1")  # the fields whose values differ between members
MODES = ("vmap", "sequential")
AXIS = "runs"


# The group: its members, its directory ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Member:
    """One run of a group: its directory name under the group's workdir and its config."""

    name: str
    config: Config

    def describe(self) -> str:
        c = self.config
        return f"{self.name} (seed {c.seed}, lr {c.lr:g}, beta1 {c.beta1:g})"


def members_of(template: Config, lists: dict[str, tuple]) -> list[Member]:
    """One member per combination of the `lists` of SWEPT fields (seed-major; a field without a
    list keeps template's value). A field with several values is part of the names:
    seed_3, or seed_3-lr_0.0002 when lr is swept."""
    values = {name: tuple(lists.get(name) or (getattr(template, name),)) for name in SWEPT}
    named = [name for name in SWEPT[1:] if len(values[name]) > 1]
    members = []
    for combo in itertools.product(*(values[name] for name in SWEPT)):
        config = template.replace(**dict(zip(SWEPT, combo, strict=True)))
        parts = [f"seed_{config.seed}", *(f"{name}_{getattr(config, name)!r}" for name in named)]
        members.append(Member("-".join(parts), config))
    return members


def is_group(workdir: str | Path) -> bool:
    """True when `workdir` holds a group of runs (its group.json)."""
    return (Path(workdir) / GROUP_FILE).is_file()


class GroupDir:
    """The group's directory: group.json, the summary, and one `rundir.RunDir` per member."""

    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.manifest = self.workdir / GROUP_FILE
        self.losses = self.workdir / "losses.png"
        self.summary = self.workdir / "summary.json"

    def run(self, member: Member) -> rundir.RunDir:
        return rundir.RunDir(self.workdir / member.name)

    def read(self) -> dict:
        """group.json: {"config": template, "lists": {field: values}, "frozen": {name: why}}."""
        try:
            manifest = json.loads(self.manifest.read_text())
            template = Config.from_dict(manifest["config"]).validate()
            lists = {name: tuple(manifest["lists"][name]) for name in SWEPT}
            frozen = dict(manifest["frozen"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{self.manifest} is not a jaxgan group file: {first_line(err)}") from None
        return {"config": template, "lists": lists, "frozen": frozen}

    def write(self, template: Config, lists: dict[str, tuple], frozen: dict[str, str]) -> None:
        record = {
            "format_version": FORMAT_VERSION,
            "config": template.to_dict(),
            "lists": {name: list(lists[name]) for name in SWEPT},
            "frozen": frozen,
        }
        partial = self.manifest.with_name(f".{GROUP_FILE}.tmp")
        partial.write_text(json.dumps(record, indent=2) + "\n")
        partial.replace(self.manifest)  # atomic: a reader sees the old file or the new one


@dataclasses.dataclass
class Group:
    """A group being trained: its directory, template config, lists, members and frozen runs."""

    dir: GroupDir
    template: Config
    lists: dict[str, tuple]
    frozen: dict[str, str]

    @property
    def members(self) -> list[Member]:
        return members_of(self.template, self.lists)

    def freeze(self, member: Member, why: str) -> str:
        """Record `member` as diverged in group.json; returns the message naming it."""
        self.frozen[member.name] = f"run {member.describe()} diverged: {why}"
        self.dir.write(self.template, self.lists, self.frozen)
        return self.frozen[member.name]


# The stacked state and the vmapped functions ---------------------------------------------------


def stack(states: list[train.GANState], template: Config) -> train.GANState:
    """The members' states as one group state: every leaf (K, ...), static config `template`, and
    `adam` holding lr and beta1 as (K,) arrays when they differ between members (else None).
    Stacked in host memory (no compilation per leaf shape)."""
    impl = jax.random.key_impl(states[0].key)
    host = [jax.device_get(s.replace(key=jax.random.key_data(s.key), config=template, adam=None)) for s in states]
    group = jax.tree.map(lambda *xs: np.stack(xs), *host)
    group = group.replace(key=jax.random.wrap_key_data(group.key, impl=impl))
    if len({(s.config.lr, s.config.beta1) for s in states}) > 1:
        hypers = [AdamHyper.of(s.config.lr, s.config.beta1) for s in states]
        group = group.replace(adam=jax.tree.map(lambda *xs: np.stack(xs), *hypers))
    return group


def unstack(group: train.GANState, configs: list[Config]) -> list[train.GANState]:
    """The members' single-run states (config their own, adam None), on the host, in one transfer."""
    host = jax.device_get(group.replace(key=jax.random.key_data(group.key), adam=None))
    impl = jax.random.key_impl(group.key)
    return [
        jax.tree.map(lambda x, k=k: x[k], host).replace(
            key=jax.random.wrap_key_data(host.key[k], impl=impl), config=config
        )
        for k, config in enumerate(configs)
    ]


def group_steps(group: train.GANState, images: jax.Array, batch_indices: jax.Array, labels: jax.Array | None = None):
    """`train.train_steps` of every member: batch_indices (K, steps, B) -> (group, metrics each (K, steps)).
    images (N, 28, 28, 1) and a conditional GAN's labels (N,) are every member's."""
    return jax.vmap(train.train_steps, in_axes=(0, None, 0, None))(group, images, batch_indices, labels)


def group_batch_indices(keys: jax.Array, epoch: jax.Array | int, num_examples: int, batch_size: int) -> jax.Array:
    """`train.epoch_batch_indices` of every member's key: (K, steps, B)."""
    return jax.vmap(lambda key: train.epoch_batch_indices(key, epoch, num_examples, batch_size))(keys)


@functools.partial(jax.jit, static_argnums=0)
def group_generate(config: Config, g_params, z: jax.Array, labels: jax.Array | None = None, batch_stats=None):
    """Every member's generator (eval mode) on its own inputs: z (K, n, latent_dim), a conditional
    GAN's labels (K, n), a DCGAN's running batch_stats (K, ...) -> images (K, n, 28, 28, 1)."""
    return jax.vmap(lambda *args: models.generate(config, *args))(g_params, z, labels, batch_stats)


@jax.jit
def members_finite(group: train.GANState) -> jax.Array:
    """(K,) bool: every parameter (and BatchNorm statistic) of the member is finite."""
    return jax.vmap(lambda s: train.all_finite(train.learned(s)))(group)


def devices_for(num_runs: int, num_devices: int) -> int:
    """How many devices K runs are spread over: the most (up to num_devices) that divide K."""
    return max(n for n in range(1, num_devices + 1) if num_runs % n == 0)


class RunPlacement:
    """Where a group's arrays live: one device, or a mesh over the largest number of local
    devices that divides K, the state and batch indices split along the run axis, the images
    on every device. No collective: each device trains its own members."""

    def __init__(self, num_runs: int, devices: list[jax.Device] | None = None):
        devices = list(jax.local_devices() if devices is None else devices)
        self.num_devices = devices_for(num_runs, len(devices))
        self.num_runs = num_runs
        self.mesh = Mesh(np.array(devices[: self.num_devices]), (AXIS,)) if self.num_devices > 1 else None
        if self.mesh is not None:
            self.runs = NamedSharding(self.mesh, P(AXIS))
            self.replicated = NamedSharding(self.mesh, P())

    def describe(self) -> str:
        platform = jax.devices()[0].platform.upper()
        if self.mesh is None:
            return platform
        return f"{self.num_devices} {platform} devices, {self.num_runs // self.num_devices} run(s) each"

    def _put(self, tree, sharding):
        if self.mesh is None:
            return jax.device_put(tree)

        def put(x):
            if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
                return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
            return jax.device_put(x, sharding)

        return jax.tree.map(put, tree)

    def split(self, group: train.GANState) -> train.GANState:
        return self._put(group, self.mesh and self.runs)

    def replicate(self, tree):
        return self._put(tree, self.mesh and self.replicated)

    def jit_steps(self, with_labels: bool = False) -> Callable:
        """Jitted `group_steps(group, images, batch_indices[, labels])`; the group is donated.
        with_labels: it is called with the dataset's labels too (a conditional GAN), replicated."""
        if self.mesh is None:
            return jax.jit(group_steps, donate_argnums=0)
        labels = (self.replicated,) if with_labels else ()
        return jax.jit(
            group_steps,
            in_shardings=(self.runs, self.replicated, self.runs, *labels),
            out_shardings=(self.runs, self.runs),
            donate_argnums=0,
        )

    def jit_batch_indices(self) -> Callable:
        if self.mesh is None:
            return jax.jit(group_batch_indices, static_argnums=(2, 3))
        return jax.jit(group_batch_indices, static_argnums=(2, 3), out_shardings=self.runs)


# Memory -----------------------------------------------------------------------------------------


def free_memory(device: jax.Device) -> int | None:
    """Bytes free on `device` (an accelerator's allocator, or the host's MemAvailable), None if unknown."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(needed: int, free: int | None, num_runs: int, per_device: int, platform: str) -> None:
    """UserError, with what to do, when `needed` bytes per device (XLA's buffers for the group's
    chunk of steps) exceed `free`."""
    if free is None or needed <= free:
        return
    per_run = needed / per_device
    fit = max(1, int(free // per_run))
    raise UserError(
        f"{num_runs} runs at once need about {needed / 2**30:.2f} GiB per {platform} device "
        f"({per_run / 2**20:,.0f} MiB a run) but {free / 2**30:.2f} GiB is free: train at most {fit} at once "
        "(split the list over several --workdir), use a smaller --batch-size, or --group-mode sequential"
    )


def out_of_memory_advice(num_runs: int) -> str:
    return (
        f"the device ran out of memory training {num_runs} runs at once: train fewer at once (split the list "
        "over several --workdir), use a smaller --batch-size, or --group-mode sequential"
    )


# The loop ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class GroupResult:
    """What a group's training returns: each member, its final state (None if never trained
    here), its metric rows, and the frozen members' reasons."""

    members: list[Member]
    states: list[train.GANState | None]
    histories: list[list[dict]]
    frozen: dict[str, str]


def run_group_epoch(group, data, indices, run_steps, *, epoch: int, first_step: int, chunk: int, bar, active):
    """One epoch of the group, batches `indices` (K, steps, B), in jitted chunks of `chunk` steps.
    data: `group_steps`' dataset arguments, (images,) or, for a conditional GAN, (images, labels).

    Returns the group, the epoch means of METRIC_NAMES per active member (k -> dict), and the
    members that diverged in this epoch (k -> why), no longer in `active`.
    """
    per_step = {k: {name: [] for name in train.METRIC_NAMES} for k in active}
    diverged: dict[int, str] = {}
    for first in range(0, indices.shape[1], chunk):
        group, metrics = run_steps(group, data[0], indices[:, first : first + chunk], *data[1:])
        metrics = jax.device_get(metrics)  # the one host sync per chunk: each (K, n)
        for k in sorted(active - set(diverged)):
            mine = {name: metrics[name][k] for name in train.METRIC_NAMES}
            try:
                train.check_finite(mine, first_step + first, epoch)
            except train.Diverged as err:
                diverged[k] = str(err)
                continue
            for name in train.METRIC_NAMES:
                per_step[k][name].append(mine[name])
        bar.update(len(metrics["d_loss"][0]))
    finite = np.asarray(members_finite(group))
    for k in sorted(active - set(diverged)):
        if not finite[k]:
            diverged[k] = f"the parameters are not finite after epoch {epoch}"
    means = {
        k: {name: float(np.mean(np.concatenate(per_step[k][name]), dtype=np.float64)) for name in train.METRIC_NAMES}
        for k in active - set(diverged)
    }
    return group, means, diverged


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for one value)."""
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def show(values: list[float], spec: str) -> str:
    mean, std = mean_std(values)
    return format(mean, spec) + ("" if std is None else f" ± {std:{spec}}")


def format_group_line(epoch: int, epochs: int, step: int, rows: list[dict], seconds: float, images_per_s: float) -> str:
    """The per-epoch log line of a group: means ± std over its active runs."""
    col = {name: [r[name] for r in rows] for name in train.METRIC_NAMES}
    return (
        f"Epoch [{epoch}/{epochs}] step {step}  {train.plural(len(rows), 'run')}  D loss: {show(col['d_loss'], '.4f')}  "
        f"G loss: {show(col['g_loss'], '.4f')}  D(x): {show(col['d_real'], '.3f')}  "
        f"D(G(z)): {show(col['d_fake'], '.3f')}  {seconds:.2f}s  {images_per_s:,.0f} img/s per run"
    )


def train_group(
    config: Config,
    lists: dict[str, tuple],
    workdir: str | Path,
    *,
    resume: bool | None = None,
    explicit: frozenset[str] | None = None,
    mode: str = "vmap",
    load_dataset: Callable[..., data_lib.Dataset] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    evaluator=None,
) -> GroupResult:
    """Train the group of runs `lists` ({"seed": (0, 1, ...), "lr": ..., "beta1": ...}, each
    optional) of `config` in `workdir`, or continue the group there.

    `resume` and `explicit` are `train.train_and_evaluate`'s, for the whole group: a group resumes
    from its members' checkpoints (the latest epoch all its active members have), with the lists
    of its group.json; lists given again must be the same. `mode`: "vmap" (every member in one
    program) or "sequential" (one after another, each through `train.train_and_evaluate`).
    Raises train.Diverged when every member has diverged, signals.Interrupted after a signal
    (having saved every active member's checkpoint), UserError for what cannot work.
    """
    log = log or (lambda msg: tqdm.write(msg, file=sys.stdout))
    if mode not in MODES:
        raise UserError(f"--group-mode must be one of {', '.join(MODES)}, got {mode!r}")
    if jax.process_count() > 1:
        raise parallel.ParallelError("a group of runs trains in one process (its runs are spread over its devices)")
    if config.data_parallel:
        raise parallel.ParallelError(
            "--data-parallel shards one run's batches; a group spreads its runs over the devices instead: "
            "drop --data-parallel"
        )
    group_dir = GroupDir(workdir)
    with rundir.RunDir(group_dir.workdir) as group_run:  # the group's lock, released at the end
        group_run.prepare()
        if checkpoint.checkpoint_dir(group_dir.workdir).is_dir():
            raise UserError(f"{group_dir.workdir} holds a single run (checkpoints/): use another --workdir for a group")
        group = open_group(group_dir, config, lists, resume, explicit)
        group.dir.write(group.template, group.lists, group.frozen)
        train_members = _train_in_turn if mode == "sequential" else _train_together
        return train_members(group, resume, load_dataset, progress, log, evaluator)


def open_group(group_dir: GroupDir, config: Config, lists: dict[str, tuple], resume, explicit) -> Group:
    """The group to train: a new one from `config` and `lists`, or the one in group.json with the
    `explicit` fields of `config` applied (CheckpointError when one may not change, or when the
    lists differ from the group's)."""
    explicit_given = explicit is not None  # None: every field of config, but the lists only from `lists`
    explicit = frozenset(f.name for f in dataclasses.fields(Config)) if explicit is None else explicit
    given = {name: tuple(lists[name]) if name in lists else (getattr(config, name),) for name in SWEPT}
    if resume is False or not is_group(group_dir.workdir):
        if resume:
            raise CheckpointError(f"--resume: no group of runs to resume in {group_dir.workdir}")
        return Group(group_dir, config, given, {})
    saved = group_dir.read()
    template = checkpoint.merge_config(saved["config"], config, explicit - set(SWEPT))
    asked = set(lists) | (explicit & set(SWEPT) if explicit_given else set())
    wanted = {name: given[name] if name in asked else saved["lists"][name] for name in SWEPT}
    if wanted != saved["lists"]:
        raise CheckpointError(
            f"the runs asked for ({show_lists(wanted)}) are not the group's in {group_dir.workdir} "
            f"({show_lists(saved['lists'])}); use another --workdir, or --no-resume to start over"
        )
    return Group(group_dir, template, saved["lists"], saved["frozen"])


def show_lists(lists: dict[str, tuple]) -> str:
    return " ".join(f"{name}={','.join(map(str, values))}" for name, values in lists.items())


def _train_in_turn(group: Group, resume, load_dataset, progress, log, evaluator) -> GroupResult:
    """Mode "sequential": each member through the single-run loop, one after another."""
    members = group.members
    states, histories = [], []
    for i, member in enumerate(members):
        run = group.dir.run(member)
        state = None
        if member.name in group.frozen:
            log(f"run {i + 1}/{len(members)}: {group.frozen[member.name]}; it stays frozen")
        else:
            log(f"run {i + 1}/{len(members)}: {member.describe()}")
            try:
                state, _ = train.train_and_evaluate(
                    member.config, run.workdir, resume=resume, explicit=None, load_dataset=load_dataset,
                    progress=progress, log=log, evaluator=evaluator,
                )  # fmt: skip
            except train.Diverged as err:
                log(f"{group.freeze(member, str(err))}; it is frozen, the other runs go on")
            except signals.Interrupted as err:
                stopped = str(err).split(" Resume with:")[0]
                raise signals.Interrupted(
                    f"run {member.name}: {stopped} Resume the group with: python -m jaxgan.train --workdir "
                    f"{group.dir.workdir}",
                    err.signum,
                ) from None
        states.append(state)
        histories.append(run.read_metrics(sys.maxsize))
    if len(group.frozen) == len(members):
        raise train.Diverged(f"training diverged in every run: {'; '.join(group.frozen.values())}")
    return finish_group(group, states, histories, log)


def _train_together(group: Group, resume, load_dataset, progress, log, evaluator) -> GroupResult:
    """Mode "vmap": every member in one jitted, vmapped epoch scan."""
    members = group.members
    num_runs, runs = len(members), [group.dir.run(m) for m in members]
    active = {k for k, m in enumerate(members) if m.name not in group.frozen}
    if not active:
        raise train.Diverged(f"every run of {group.dir.workdir} has diverged (see its {GROUP_FILE})")
    starts, epoch0 = start_members(members, runs, active, resume, load_dataset, log)
    start = starts[min(active)]
    dataset, num_examples = start.dataset, len(start.dataset.images)
    epochs_line = start.config.describe_epochs(num_examples, dataset.description or dataset.name)
    configs = [m.config.resolved(num_examples) for m in members]
    template = configs[0]  # the group state's static config; seed, lr and beta1 are each member's
    histories = [runs[k].read_metrics(epoch0 if k in active else sys.maxsize) for k in range(num_runs)]
    if epoch0 >= template.epochs:
        log(f"{group.dir.workdir} has already trained {train.plural(epoch0, 'epoch')} (--epochs {template.epochs}): "
            "nothing to do; raise --epochs to train longer")  # fmt: skip
        return GroupResult(members, [None] * num_runs, histories, group.frozen)
    # A frozen member keeps a lane (a fresh state nobody reads): the program stays the one it was.
    states = [starts[k].state if k in active else train.create_state(configs[k], configs[k].seed)
              for k in range(num_runs)]  # fmt: skip
    state = stack(states, template)
    batch_size, steps_per_epoch = template.batch_size, num_examples // template.batch_size
    chunk = min(template.log_every, steps_per_epoch)
    placement = RunPlacement(num_runs)
    run_steps, batch_indices = placement.jit_steps(with_labels=template.conditional), placement.jit_batch_indices()
    data = train.device_data(template, dataset, placement.replicate)  # on every device
    check_memory(run_steps, state, data, chunk, batch_size, placement)
    for k in sorted(active):  # only now that the group fits: the runs' files
        if epoch0 == 0:
            runs[k].clear_outputs()
        runs[k].begin(configs[k], dataset.name, dataset.description, histories[k])
    state = placement.split(state)
    grid_inputs = [train.sampling_grid_noise(s) for s in states]  # each member's (noise, digits or None)
    grid_noise = placement.split(np.stack([noise for noise, _ in grid_inputs]))  # (K, grid**2, latent)
    grid_labels = (
        placement.split(np.stack([d for _, d in grid_inputs])) if template.conditional else None
    )  # (K, grid**2)
    swept = ", ".join(f"{n} {','.join(map(str, v))}" for n, v in group.lists.items() if len(v) > 1)
    resumed = f", resuming after epoch {epoch0}" if epoch0 else ""
    log(f"jaxgan: {train.plural(num_runs, 'run')} in one program ({swept}), preset {template.preset}, "
        f"{dataset.description or dataset.name} ({train.plural(num_examples, 'image')}), batch {batch_size}, "
        f"{steps_per_epoch} steps/epoch, {train.plural(template.epochs, 'epoch')}{resumed} on {placement.describe()} "
        f"-> {group.dir.workdir}\nepochs: {epochs_line}")  # fmt: skip
    savers = [checkpoint.Checkpointer(run.workdir, keep=template.keep_checkpoints) for run in runs]
    last_saved = [epoch0 or None] * num_runs
    try:
        with signals.StopOnSignal(log) as stop:
            for epoch in range(epoch0 + 1, template.epochs + 1):
                started = time.perf_counter()
                indices = batch_indices(state.key, epoch - 1, num_examples, batch_size)  # (K, steps, B)
                with tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{template.epochs}", unit="step", leave=False,
                          disable=not progress) as bar:  # fmt: skip
                    state, means, diverged = run_group_epoch(
                        state, data, indices, run_steps, epoch=epoch, first_step=(epoch - 1) * steps_per_epoch,
                        chunk=chunk, bar=bar, active=active,
                    )  # fmt: skip
                for k, why in diverged.items():
                    savers[k].wait()
                    active.discard(k)
                    message = group.freeze(members[k], f"{why}; {train.kept_checkpoint(savers[k], last_saved[k])}")
                    log(f"{message}; it is frozen, {others_go_on(len(active))}")
                if not active:
                    raise train.Diverged(f"training diverged in every run: {'; '.join(group.frozen.values())}")
                seconds = time.perf_counter() - started
                step, per_run = epoch * steps_per_epoch, steps_per_epoch * batch_size / seconds
                rows = {k: {"epoch": epoch, "step": step, **means[k], "seconds": round(seconds, 4),
                            "images_per_s": round(per_run, 1)} for k in sorted(active)}  # fmt: skip
                if template.eval_every and train.due(template.eval_every, epoch, template.epochs):
                    evaluator = evaluator or train._evaluator(dataset.name, template, log, progress)
                    params = member_params(train.sampling_params(state), sorted(active))
                    stats = member_params(state.g_batch_stats, sorted(active))  # a DCGAN's; else None each
                    for k in sorted(active):
                        rows[k].update(
                            evaluator.generator(configs[k], params[k], configs[k].seed, batch_stats=stats[k])
                        )
                    log(format_quality_line(list(rows.values())))
                for k, row in rows.items():
                    histories[k].append(row)
                    runs[k].append(row)
                log(format_group_line(epoch, template.epochs, step, list(rows.values()), seconds, per_run))
                if train.due(template.sample_every, epoch, template.epochs):
                    grids = np.asarray(group_generate(
                        template, train.sampling_params(state), grid_noise, grid_labels, state.g_batch_stats
                    ))  # fmt: skip
                    for k in sorted(active):
                        runs[k].save_grid(grids[k], epoch, template.grid_size)
                stop_signal = stop.agreed()
                if train.due(template.checkpoint_every, epoch, template.epochs) or stop_signal is not None:
                    singles = unstack(state, configs)
                    for k in sorted(active):
                        savers[k].save(singles[k], epoch, dataset=dataset.name, num_examples=num_examples,
                                       data_checksum=starts[k].data_checksum)  # fmt: skip
                        last_saved[k] = epoch
                if stop_signal is not None and epoch < template.epochs:
                    for saver in savers:
                        saver.wait()
                    raise signals.Interrupted(
                        f"stopped by {signal.Signals(stop_signal).name} after epoch {epoch}/{template.epochs}; "
                        f"checkpoints of {train.plural(len(active), 'run')} saved in {group.dir.workdir}/*/checkpoints. "
                        f"Resume with: python -m jaxgan.train --workdir {group.dir.workdir}",
                        stop_signal,
                    )
            for saver in savers:  # inside StopOnSignal: a signal now waits for the last saves
                saver.wait()
    except jax.errors.JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" in str(err):
            raise UserError(out_of_memory_advice(num_runs)) from None
        raise
    finally:
        for saver in savers:
            saver.close()
    for k in sorted(active):
        runs[k].finish(histories[k])
    final = unstack(state, configs)
    return finish_group(group, [final[k] if k in active else None for k in range(num_runs)], histories, log)


def start_members(members, runs, active, resume, load_dataset, log) -> tuple[dict[int, checkpoint.Start], int]:
    """Each active member's start (`checkpoint.restore_or_init` in its directory; the data loaded and
    checked once), all at one epoch: the earliest any of them reached (a save cut short can leave
    some a checkpoint ahead: those are read back at that epoch). Returns (starts, epoch)."""
    datasets: dict = {}

    def prepare(config: Config) -> data_lib.Dataset:
        key = (config.dataset, config.data_dir, config.batch_size)
        if key not in datasets:
            datasets[key] = train.load_checked(config, parallel.Placement(False), log, load_dataset)
        return datasets[key]

    starts = {
        k: checkpoint.restore_or_init(members[k].config, runs[k].workdir, resume, prepare=prepare, log=log)
        for k in sorted(active)
    }
    epoch0 = min(start.epoch for start in starts.values())
    behind = next(members[k].name for k, start in starts.items() if start.epoch == epoch0)
    for k, start in starts.items():
        if start.epoch == epoch0:
            continue
        if epoch0 not in checkpoint.epochs_in(runs[k].workdir):
            raise CheckpointError(
                f"run {members[k].name} is at epoch {start.epoch} but run {behind} at epoch {epoch0}, and "
                f"{members[k].name} keeps no checkpoint of epoch {epoch0}: train the runs behind alone to epoch "
                f"{start.epoch} first (python -m jaxgan.train --workdir {runs[0].workdir.parent}/RUN --epochs {start.epoch})"
            )
        restored = checkpoint.load(runs[k].workdir, epoch0)
        starts[k] = dataclasses.replace(start, state=restored.state.replace(config=start.config), epoch=epoch0)
    return starts, epoch0


def others_go_on(n: int) -> str:
    return "the other run goes on" if n == 1 else f"the other {n} runs go on"


def member_params(params, members: list[int]) -> dict[int, object]:
    """Members' slices of stacked params (K, ...), on the host: k -> params."""
    host = jax.device_get(params)
    return {k: jax.tree.map(lambda x, k=k: x[k], host) for k in members}


def format_quality_line(rows: list[dict]) -> str:
    col = {
        name: [r[name] for r in rows if name in r] for name in ("fd", "score", "coverage_kl", "max_prob", "cond_acc")
    }
    conditional = f"  conditional accuracy {show(col['cond_acc'], '.3f')}" if col["cond_acc"] else ""
    return (
        f"  quality ({train.plural(len(rows), 'run')}): FD@{rows[0]['fd_n']} {show(col['fd'], '.2f')}  "
        f"score {show(col['score'], '.2f')}  coverage KL {show(col['coverage_kl'], '.3f')}  "
        f"max-prob {show(col['max_prob'], '.3f')}{conditional}"
    )


def check_memory(run_steps, state, data, chunk: int, batch_size: int, placement: RunPlacement) -> None:
    """UserError (`check_fits`) when XLA's buffers for one chunk of the group exceed the free memory.
    data: (images,) or (images, labels), as `run_group_epoch` gets them."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    indices = jax.ShapeDtypeStruct((placement.num_runs, chunk, batch_size), jnp.int32)
    try:
        stats = run_steps.lower(abstract, data[0], indices, *data[1:]).compile().memory_analysis()
    except jax.errors.JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" in str(err):
            raise UserError(out_of_memory_advice(placement.num_runs)) from None
        raise
    if stats is None:
        return
    needed = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    needed -= stats.alias_size_in_bytes
    device = jax.local_devices()[0]
    runs_per_device = placement.num_runs // placement.num_devices
    check_fits(needed, free_memory(device), placement.num_runs, runs_per_device, device.platform.upper())


# The summary ------------------------------------------------------------------------------------


def finish_group(group: Group, states, histories: list[list[dict]], log) -> GroupResult:
    """The group's own files, losses.png (every run's curves) and summary.json, and the closing table."""
    members = group.members
    visualize.plot_runs({m.name: h for m, h in zip(members, histories, strict=True) if h}, group.dir.losses)
    summary = summarize(members, histories, group.frozen)
    group.dir.summary.write_text(json.dumps(summary, indent=1) + "\n")
    log(format_summary(summary))
    return GroupResult(members, states, histories, group.frozen)


SUMMARY_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "fd", "score", "coverage_kl", "max_prob", "cond_acc")


def summarize(members: list[Member], histories: list[list[dict]], frozen: dict[str, str]) -> dict:
    """{"runs": {name: last row + seed, lr, beta1, frozen}, "mean": ..., "std": ...} over the runs
    that were not frozen (std with ddof 1; None for one run)."""
    runs, good = {}, []
    for member, history in zip(members, histories, strict=True):
        last = history[-1] if history else {}
        c = member.config
        runs[member.name] = {"seed": c.seed, "lr": c.lr, "beta1": c.beta1, "frozen": frozen.get(member.name), **last}
        if member.name not in frozen and history:
            good.append(last)
    keys = [key for key in SUMMARY_KEYS if good and all(key in row for row in good)]
    stats = {key: mean_std([row[key] for row in good]) for key in keys}
    return {
        "runs": runs,
        "num_runs": len(members),
        "num_frozen": len(frozen),
        "mean": {key: s[0] for key, s in stats.items()},
        "std": {key: s[1] for key, s in stats.items()},
    }


def format_summary(summary: dict) -> str:
    """The closing table: each run's last epoch, and the mean ± std of the runs that finished."""
    quality = "fd" in summary["mean"]
    head = f"{'run':<28}{'epoch':>6}{'D loss':>9}{'G loss':>9}" + (f"{'FD':>9}{'score':>8}" if quality else "")
    lines = [head]
    for name, row in summary["runs"].items():
        if row["frozen"]:
            lines.append(f"{name:<28}  frozen (diverged): see group.json")
            continue
        if "epoch" not in row:
            continue
        line = f"{name:<28}{row['epoch']:>6}{row['d_loss']:>9.4f}{row['g_loss']:>9.4f}"
        lines.append(line + (f"{row['fd']:>9.2f}{row['score']:>8.2f}" if quality else ""))
    mean, std = summary["mean"], summary["std"]
    if mean:
        pm = lambda key, spec: format(mean[key], spec) + ("" if std[key] is None else f" ± {std[key]:{spec}}")  # noqa: E731
        text = f"mean ± std: D loss {pm('d_loss', '.4f')}, G loss {pm('g_loss', '.4f')}"
        lines.append(text + (f", FD {pm('fd', '.2f')}, score {pm('score', '.2f')}" if quality else ""))
    return "\n".join(lines)
