"""Training: the one loop that drives `jaxgan.steps` over epochs, for one run or a group of runs.

    train_and_evaluate(config, workdir)         one run, in workdir
    train_group(config, {"seed": (0, 1)}, dir)  a group of runs (`jaxgan.multirun`), each in dir/NAME

A single run is a group of one: both go through `train_runs`, which trains K runs as one stacked
state (`steps.stack`: every leaf (K, ...)) with one jitted program per chunk of steps
(`steps.runs_steps`). Every feature lives there once: resume (`checkpoint.restore_or_init` per
run), epochs as jitted chunks of `config.log_every` steps with one host sync each (when the
progress bar moves), sample grids, evaluation, checkpoints, signals, divergence. What a group
adds is only around it: group.json, freezing a member that diverged, the group's summary.

Each run keeps its own run directory (`jaxgan.rundir`, locked while it trains) and saves normal
single-run checkpoints, so a run trained in a group of one is the run trained alone: the
single run's state, outputs and checkpoints are exactly what they were before groups existed.
In mode "map" (the default on CPU) every run of a group computes bit for bit what its single
run computes.

The pure computation (`GANState`, `create_state`, `train_step`, `train_steps`, ...) lives in
`jaxgan.steps` and is re-exported here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxgan import checkpoint, memory, multirun, parallel, rundir, sampling, signals, steps
from jaxgan import data as data_lib
from jaxgan.cli import UserError
from jaxgan.config import MAX_COUNT, Config
from jaxgan.report import (
    format_epoch_line,
    format_group_line,
    format_group_quality_line,
    format_quality_line,
    plural,
)
from jaxgan.steps import (
    METRIC_NAMES,
    GANState,
    create_state,
    ema_decay_at,
    epoch_batch_indices,
    optimizer,
    sampling_params,
    step_noise,
    train_epoch,
    train_step,
    train_step_keyed,
    train_steps,
)

# The pure step API, re-exported from jaxgan.steps, and the loop.
__all__ = [
    "METRIC_NAMES",
    "Diverged",
    "GANState",
    "create_state",
    "ema_decay_at",
    "epoch_batch_indices",
    "optimizer",
    "sampling_params",
    "step_noise",
    "train_and_evaluate",
    "train_epoch",
    "train_group",
    "train_runs",
    "train_step",
    "train_step_keyed",
    "train_steps",
]


class Diverged(Exception):
    """Training produced a non-finite loss or parameter; the message names the step and metric."""


# What the loop trains ---------------------------------------------------------------------------


@dataclasses.dataclass
class Runs:
    """The runs one loop trains: their names and configs (`multirun.Member`), their directories,
    the fields given on the command line (`checkpoint.restore_or_init`'s `explicit`; None for a
    group's members, whose configs are the group's), and the group they belong to (None: one run)."""

    members: list[multirun.Member]
    dirs: list[rundir.RunDir]
    explicit: frozenset[str] | None
    group: multirun.Group | None = None

    @property
    def frozen(self) -> dict[str, str]:
        return self.group.frozen if self.group is not None else {}

    @property
    def workdir(self) -> Path:
        return self.group.dir.workdir if self.group is not None else self.dirs[0].workdir


@dataclasses.dataclass
class Trained:
    """What `train_runs` returns: each run's final state (None: not trained here) and metric rows."""

    states: list[GANState | None]
    histories: list[list[dict]]


def train_and_evaluate(
    config: Config,
    workdir: str | Path,
    *,
    resume: bool | None = None,
    explicit: frozenset[str] | None = None,
    load_dataset: Callable[..., data_lib.Dataset] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    evaluator=None,
) -> tuple[GANState, list[dict]]:
    """Train `config` for config.epochs epochs in total, writing the run's files to `workdir`.

    Continues from the latest checkpoint in `workdir` (`checkpoint.restore_or_init`: `resume`
    None resumes when there is one, True requires one, False starts over; `explicit` names the
    fields given on the command line; None: all of `config`), bit for bit as if never stopped.
    Saves a checkpoint every config.checkpoint_every epochs, at the end, and when SIGINT/SIGTERM
    asks to stop (then raises signals.Interrupted). Raises Diverged on a non-finite loss or
    parameter, keeping the checkpoints saved before it. With config.eval_every > 0 the
    sample-quality metrics of `jaxgan.metrics` join the rows of every eval_every-th and the last
    epoch. Returns the final state and the per-epoch metric rows (also in metrics.jsonl). The run
    holds the workdir's lock (`rundir.RunDir.lock`) until it returns.
    """
    multirun.check_not_a_member(workdir)
    member = multirun.Member(Path(workdir).name, config)
    runs = Runs([member], [rundir.RunDir(workdir)], explicit)
    trained = train_runs(runs, resume=resume, mode="map", load_dataset=load_dataset, progress=progress, log=log,
                         evaluator=evaluator)  # fmt: skip
    return trained.states[0], trained.histories[0]


def train_group(
    config: Config,
    lists: dict[str, tuple],
    workdir: str | Path,
    *,
    resume: bool | None = None,
    explicit: frozenset[str] | None = None,
    mode: str | None = None,
    load_dataset: Callable[..., data_lib.Dataset] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    evaluator=None,
) -> multirun.GroupResult:
    """Train the group of runs `lists` ({"seed": (0, 1, ...), "lr": ..., "beta1": ...}, each
    optional) of `config` in `workdir`, or continue the group there.

    `resume` and `explicit` are `train_and_evaluate`'s, for the whole group: a group resumes from
    its members' checkpoints, with the lists of its group.json; lists given again must be the
    same. `mode`: how the one program runs the members, "map" (one after another: each exactly its
    single run) or "vmap" (batched); None: `steps.default_mode()`. Raises Diverged when every
    member has diverged, signals.Interrupted after a signal (having saved every active member's
    checkpoint), UserError for what cannot work. The group's lock and every member's are held
    until it returns.
    """
    mode = mode or steps.default_mode()
    if mode not in steps.MODES:
        raise UserError(f"--group-mode must be one of {', '.join(steps.MODES)}, got {mode!r}")
    if jax.process_count() > 1:
        raise parallel.ParallelError("a group of runs trains in one process (its runs are spread over its devices)")
    if config.data_parallel:
        raise parallel.ParallelError(
            "--data-parallel shards one run's batches; a group spreads its runs over the devices instead: "
            "drop --data-parallel"
        )
    group_dir = multirun.GroupDir(workdir)
    with rundir.RunDir(group_dir.workdir) as group_run:  # the group's lock, released at the end
        group_run.prepare()
        if checkpoint.checkpoint_dir(group_dir.workdir).is_dir():
            raise UserError(f"{group_dir.workdir} holds a single run (checkpoints/): use another --workdir for a group")
        group = multirun.open_group(group_dir, config, lists, resume, explicit)
        group.dir.write(group.template, group.lists, group.frozen)
        members = group.members
        runs = Runs(members, [group.dir.run(m) for m in members], None, group)
        log = log or _stdout_log
        trained = train_runs(runs, resume=resume, mode=mode, load_dataset=load_dataset, progress=progress, log=log,
                             evaluator=evaluator)  # fmt: skip
        return multirun.finish_group(group, trained.states, trained.histories, log)


def _stdout_log(msg: str) -> None:
    tqdm.write(msg, file=sys.stdout)


# The loop ----------------------------------------------------------------------------------------


def train_runs(runs: Runs, *, resume, mode: str, load_dataset, progress: bool, log, evaluator) -> Trained:
    """Train `runs` together to their configs' epochs: one run, or a group's members (see the module
    docstring). Every run's directory is locked and checked before anything is loaded or deleted."""
    primary = parallel.is_primary()  # only process 0 writes files and logs
    log = (log or _stdout_log) if primary else (lambda msg: None)
    members, dirs, num_runs = runs.members, runs.dirs, len(runs.members)
    placement = parallel.Placement(members[0].config.data_parallel, num_runs=num_runs)
    with contextlib.ExitStack() as held:
        active = [k for k, m in enumerate(members) if m.name not in runs.frozen]
        if primary:
            for k in active:  # each run's lock (held to the end) and pre-flight
                held.enter_context(dirs[k]).prepare()
        if not active:
            raise Diverged(f"every run of {runs.workdir} has diverged (see its {multirun.GROUP_FILE})")
        starts, epoch0 = start_runs(runs, active, resume, placement, load_dataset, log)
        return _train_from(runs, starts, epoch0, active, placement, mode, progress, log, evaluator, primary)


def _train_from(runs: Runs, starts, epoch0: int, active: list[int], placement, mode, progress, log, evaluator, primary):
    """`train_runs` once every active run has its start (all at epoch `epoch0`)."""
    members, dirs, num_runs = runs.members, runs.dirs, len(runs.members)
    start = starts[active[0]]
    dataset, num_examples = start.dataset, len(start.dataset.images)
    epochs_line = start.config.describe_epochs(num_examples, dataset.description or dataset.name)
    configs = [(starts[k].config if k in starts else members[k].config).resolved(num_examples) for k in range(num_runs)]
    template = configs[active[0]]  # the stacked state's static config; seed, lr and beta1 are each run's
    histories = [dirs[k].read_metrics(epoch0 if k in starts else sys.maxsize) for k in range(num_runs)]
    if epoch0 >= template.epochs:
        log(f"{runs.workdir} has already trained {plural(epoch0, 'epoch')} (--epochs {template.epochs}): "
            "nothing to do; raise --epochs to train longer")  # fmt: skip
        return Trained([starts[k].state if k in starts else None for k in range(num_runs)], histories)
    # A frozen member keeps a lane (a fresh state nobody reads): the program stays the one it was.
    states = [starts[k].state if k in starts else create_state(configs[k], configs[k].seed) for k in range(num_runs)]
    chunk = min(template.log_every, num_examples // template.batch_size)
    data = device_data(template, dataset, placement.replicate)  # stays on the device(s)
    stacked = placement.put_state(steps.stack(states, template))
    run_steps = placement.jit_steps(RUNS_STEPS[mode if num_runs > 1 else "map"], with_labels=template.conditional)
    memory.check_compiled(run_steps, stacked, data, chunk, template.batch_size, num_runs, placement.num_devices)
    if primary:  # only now that the runs fit: their files
        for k in active:
            if epoch0 == 0:
                dirs[k].clear_outputs()
            dirs[k].begin(configs[k], dataset.name, dataset.description, histories[k])
    log(banner(runs, template, dataset, epoch0, placement, mode) + f"\nepochs: {epochs_line}")
    loop = Loop(runs, configs, template, dataset, starts, histories, set(active), primary, progress, log, evaluator,
                run_steps, placement.jit_batch_indices(steps.runs_batch_indices), data,
                grid_inputs=[sampling.grid_inputs(configs[k], states[k].key) for k in range(num_runs)],
                savers=[checkpoint.Checkpointer(d.workdir, keep=template.keep_checkpoints) for d in dirs],
                last_saved=[epoch0 or None] * num_runs)  # fmt: skip
    try:
        with contextlib.ExitStack() as closing, signals.StopOnSignal(log) as stop:
            for saver in loop.savers:
                closing.enter_context(saver)  # closed (waiting for their last save) when the loop ends
            for epoch in range(epoch0 + 1, template.epochs + 1):
                stacked, rows = loop.train_epoch(stacked, epoch)  # Diverged when no run is left
                on_host = functools.cache(functools.partial(steps.unstack, stacked, configs))  # fetched once, if needed
                if template.eval_every and due(template.eval_every, epoch, template.epochs):
                    loop.evaluate(rows, on_host)
                loop.record(rows)
                if due(template.sample_every, epoch, template.epochs):
                    loop.save_grids(on_host, epoch)
                for k in loop.live:
                    loop.savers[k].check()  # a save that failed in the background stops the run now
                stop_signal = stop.agreed()  # every process stops after the same epoch
                if due(template.checkpoint_every, epoch, template.epochs) or stop_signal is not None:
                    loop.save(on_host(), epoch)
                if stop_signal is not None and epoch < template.epochs:
                    loop.stop(signal.Signals(stop_signal), epoch)
            for saver in loop.savers:  # still inside StopOnSignal: a signal now lets the last saves finish,
                saver.wait()
            return loop.finish(steps.unstack(stacked, configs), epoch0)  # and the pictures and summary
    except jax.errors.JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" in str(err):
            raise UserError(memory.out_of_memory_advice(num_runs)) from None
        raise


@dataclasses.dataclass
class Loop:
    """What the loop of `train_runs` holds while it trains, and what it does at each epoch's end."""

    runs: Runs
    configs: list[Config]  # each run's, resolved
    template: Config  # the stacked state's static config
    dataset: data_lib.Dataset
    starts: dict[int, checkpoint.Start]
    histories: list[list[dict]]
    live: set[int]  # the runs still training (not frozen, not diverged)
    primary: bool
    progress: bool
    log: Callable[[str], None]
    evaluator: Any
    run_steps: Callable
    batch_indices: Callable
    data: tuple
    grid_inputs: list  # each run's fixed sample-grid (noise, digits or None)
    savers: list[checkpoint.Checkpointer]
    last_saved: list[int | None]

    @property
    def single(self) -> bool:
        return self.runs.group is None

    def train_epoch(self, stacked: GANState, epoch: int) -> tuple[GANState, dict[int, dict]]:
        """Epoch `epoch` of every run, its diverged runs frozen (a single run: Diverged), and the
        rows of the live runs (k -> row)."""
        config, num_examples = self.template, len(self.dataset.images)
        steps_per_epoch = num_examples // config.batch_size
        started = time.perf_counter()
        indices = self.batch_indices(stacked.key, epoch - 1, num_examples, config.batch_size)  # (K, steps, B)
        with tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}", unit="step", leave=False,
                  disable=not (self.progress and self.primary)) as bar:  # fmt: skip
            stacked, means, diverged = run_epoch(stacked, self.data, indices, self.run_steps, epoch=epoch,
                                                 first_step=(epoch - 1) * steps_per_epoch,
                                                 chunk=min(config.log_every, steps_per_epoch), bar=bar,
                                                 active=self.live)  # fmt: skip
        for k, why in diverged.items():
            self.savers[k].wait()
            kept = kept_checkpoint(self.savers[k], self.last_saved[k])
            if self.single:
                raise Diverged(f"training diverged: {why}; {kept}. Try a smaller --lr")
            self.live.discard(k)
            message = self.runs.group.freeze(self.runs.members[k], f"{why}; {kept}")
            self.log(f"{message}; it is frozen, {multirun.others_go_on(len(self.live))}")
        if not self.live:
            raise Diverged(f"training diverged in every run: {'; '.join(self.runs.frozen.values())}")
        seconds = time.perf_counter() - started
        row = {"epoch": epoch, "step": epoch * steps_per_epoch, "seconds": round(seconds, 4),
               "images_per_s": round(steps_per_epoch * config.batch_size / seconds, 1)}  # fmt: skip
        return stacked, {k: {**row, **means[k]} for k in sorted(self.live)}

    def evaluate(self, rows: dict[int, dict], on_host: Callable[[], list[GANState]]) -> None:
        """Each live run's sample quality (`jaxgan.metrics`) into its row (process 0)."""
        if not self.primary:
            return
        self.evaluator = self.evaluator or _evaluator(self.dataset.name, self.template, self.log, self.progress)
        host = on_host()
        for k in rows:
            config, state = self.configs[k], host[k]
            rows[k].update(self.evaluator.generator(config, sampling_params(state), config.seed,
                                                    batch_stats=state.g_batch_stats))  # fmt: skip
        self.log(format_quality_line(rows[0]) if self.single else format_group_quality_line(list(rows.values())))

    def record(self, rows: dict[int, dict]) -> None:
        """The epoch's rows into the histories and metrics.jsonl files, and its log line."""
        for k, row in rows.items():
            self.histories[k].append(row)
            if self.primary:
                self.runs.dirs[k].append(row)
        if self.single:
            self.log(format_epoch_line(rows[0], self.template.epochs))
            return
        row = next(iter(rows.values()))
        self.log(format_group_line(row["epoch"], self.template.epochs, row["step"], list(rows.values()),
                                   row["seconds"], row["images_per_s"]))  # fmt: skip

    def save_grids(self, on_host: Callable[[], list[GANState]], epoch: int) -> None:
        """Each live run's sample grid of `epoch`, from its fixed grid inputs (process 0)."""
        if not self.primary:
            return
        host = on_host()
        for k in sorted(self.live):
            grid = sampling.generate(self.template, sampling_params(host[k]), *self.grid_inputs[k],
                                     host[k].g_batch_stats)  # fmt: skip
            self.runs.dirs[k].save_grid(np.asarray(grid), epoch, self.template.grid_size)

    def save(self, host: list[GANState], epoch: int) -> None:
        """Each live run's checkpoint of `epoch` (written in the background)."""
        for k in sorted(self.live):
            self.savers[k].save(host[k], epoch, dataset=self.dataset.name, num_examples=len(self.dataset.images),
                                data_checksum=self.starts[k].data_checksum)  # fmt: skip
            self.last_saved[k] = epoch

    def stop(self, signum: signal.Signals, epoch: int) -> None:
        """signals.Interrupted, once the checkpoints just started are on disk."""
        for saver in self.savers:
            saver.wait()
        raise signals.Interrupted(
            stopped_message(self.runs, signum.name, epoch, self.template.epochs, len(self.live), self.savers[0]),
            signum,
        )

    def finish(self, final: list[GANState], epoch0: int) -> Trained:
        """The runs' pictures, a single run's closing lines, and what `train_runs` returns."""
        if self.primary:
            for k in sorted(self.live):
                self.runs.dirs[k].finish(self.histories[k])
        if self.single:
            self.log(summary(self.template, final[0], self.histories[0], epoch0, self.runs.dirs[0]))
            if "fd" in self.histories[0][-1] and self.evaluator is not None:
                self.log(quality_table(self.template, self.histories[0][-1], self.evaluator))
        return Trained([final[k] if k in self.live else None for k in range(len(final))], self.histories)


def _map_steps(stacked: GANState, images, batch_indices, labels=None):
    return steps.runs_steps("map", stacked, images, batch_indices, labels)


def _vmap_steps(stacked: GANState, images, batch_indices, labels=None):
    return steps.runs_steps("vmap", stacked, images, batch_indices, labels)


# `steps.runs_steps` of each mode as a function of (stacked, images, batch_indices[, labels]) to jit.
RUNS_STEPS = {"map": _map_steps, "vmap": _vmap_steps}


def start_runs(runs: Runs, active: list[int], resume, placement, load_dataset, log) -> tuple[dict, int]:
    """Each active run's start (`checkpoint.restore_or_init` in its directory; the data loaded and
    checked once), all at one epoch: the earliest any of them reached. A save cut short by a kill
    can leave some runs a checkpoint ahead: those restart from that epoch, and their later
    checkpoints are deleted (they are computed again, bit for bit). Returns (starts, epoch)."""
    datasets: dict = {}

    def prepare(config: Config) -> data_lib.Dataset:
        key = (config.dataset, config.data_dir, config.batch_size)
        if key not in datasets:
            datasets[key] = load_checked(config, placement, log, load_dataset, num_runs=len(runs.members))
        return datasets[key]

    starts = {
        k: checkpoint.restore_or_init(runs.members[k].config, runs.dirs[k].workdir, resume, prepare=prepare,
                                      explicit=runs.explicit, log=log, recorded=runs.dirs[k].read_config())
        for k in active
    }  # fmt: skip
    epoch0 = min(start.epoch for start in starts.values())
    behind = next(runs.members[k].name for k, start in starts.items() if start.epoch == epoch0)
    for k, start in starts.items():
        if start.epoch == epoch0:
            continue
        workdir = runs.dirs[k].workdir
        if epoch0 not in checkpoint.epochs_in(workdir):
            raise checkpoint.CheckpointError(
                f"run {runs.members[k].name} is at epoch {start.epoch} but run {behind} at epoch {epoch0}, and "
                f"{runs.members[k].name} keeps no checkpoint of epoch {epoch0} to continue the group from: "
                f"train the group in another --workdir, or --no-resume to start it over"
            )
        restored = checkpoint.load(workdir, epoch0)
        log(f"run {runs.members[k].name} saved epoch {start.epoch} before the group stopped: it continues from "
            f"epoch {epoch0} with the others")  # fmt: skip
        with checkpoint.Checkpointer(workdir) as writer:
            writer.delete_after(epoch0)
        starts[k] = dataclasses.replace(start, state=restored.state.replace(config=start.config), epoch=epoch0)
    return starts, epoch0


def banner(runs: Runs, config: Config, dataset, epoch0: int, placement, mode: str) -> str:
    """The line a run (or group) starts with: what trains, on what, where."""
    num_examples, resumed = len(dataset.images), f", resuming after epoch {epoch0}" if epoch0 else ""
    data = f"{dataset.description or dataset.name} ({plural(num_examples, 'image')})"
    shape = f"batch {config.batch_size}, {num_examples // config.batch_size} steps/epoch"
    where = f"{plural(config.epochs, 'epoch')}{resumed} on {placement.describe()} -> {runs.workdir}"
    if runs.group is None:
        return f"jaxgan: preset {config.preset}, {data}, {shape}, {where}"
    swept = ", ".join(f"{n} {','.join(map(str, v))}" for n, v in runs.group.lists.items() if len(v) > 1)
    how = f"--group-mode {mode}"
    return (f"jaxgan: {plural(len(runs.members), 'run')} in one program ({swept}), {how}, preset {config.preset}, "
            f"{data}, {shape}, {where}")  # fmt: skip


def stopped_message(runs: Runs, name: str, epoch: int, epochs: int, num_live: int, saver) -> str:
    if runs.group is None:
        saved = checkpoint.step_path(saver.directory, epoch)
        return (f"stopped by {name} after epoch {epoch}/{epochs}; checkpoint saved in {saved}. "
                f"Resume with: python -m jaxgan.train --workdir {runs.workdir}")  # fmt: skip
    return (f"stopped by {name} after epoch {epoch}/{epochs}; checkpoints of {plural(num_live, 'run')} saved in "
            f"{runs.workdir}/*/checkpoints. Resume with: python -m jaxgan.train --workdir {runs.workdir}")  # fmt: skip


def run_epoch(stacked, data, indices, run_steps, *, epoch: int, first_step: int, chunk: int, bar, active: set[int]):
    """One epoch of the runs, batches `indices` (K, steps, B), in jitted chunks of `chunk` steps.
    data: the steps' dataset arguments, (images,) or, for a conditional GAN, (images, labels).

    Returns the stacked state, the epoch means of METRIC_NAMES per active run (k -> dict), and the
    runs that diverged in this epoch (k -> why): at the first non-finite metric (checked per chunk)
    or parameter (checked at the end).
    """
    per_step = {k: {name: [] for name in METRIC_NAMES} for k in active}  # host arrays, one per chunk
    diverged: dict[int, str] = {}
    for first in range(0, indices.shape[1], chunk):
        stacked, metrics = run_steps(stacked, data[0], indices[:, first : first + chunk], *data[1:])
        metrics = jax.device_get(metrics)  # the one host sync per chunk: each (K, n)
        for k in sorted(active - set(diverged)):
            mine = {name: metrics[name][k] for name in METRIC_NAMES}
            try:
                check_finite(mine, first_step + first, epoch)
            except Diverged as err:
                diverged[k] = str(err)
                continue
            for name in METRIC_NAMES:
                per_step[k][name].append(mine[name])
        last = {name: metrics[name][min(active - set(diverged) or active)][-1] for name in ("d_loss", "g_loss")}
        bar.update(len(metrics["d_loss"][0]))
        bar.set_postfix(d_loss=f"{last['d_loss']:.3f}", g_loss=f"{last['g_loss']:.3f}")
    finite = np.asarray(jax.device_get(steps.runs_finite(stacked)))
    for k in sorted(active - set(diverged)):
        if not finite[k]:
            diverged[k] = f"the parameters are not finite after epoch {epoch}"
    # Means over the epoch's steps in one fixed order: the same for any chunk size.
    means = {
        k: {name: float(np.mean(np.concatenate(per_step[k][name]), dtype=np.float64)) for name in METRIC_NAMES}
        for k in active - set(diverged)
    }
    return stacked, means, diverged


def check_finite(metrics: dict, first_step: int, epoch: int) -> None:
    """Diverged naming the first step and metric that is not finite in a chunk's (n,) metrics."""
    for i in range(len(metrics["d_loss"])):
        for name in METRIC_NAMES:
            if not np.isfinite(metrics[name][i]):
                raise Diverged(f"{name} is {metrics[name][i]} at step {first_step + i + 1} (epoch {epoch})")


def due(every: int, epoch: int, last: int) -> bool:
    """True every `every`-th epoch and at the last one."""
    return epoch % every == 0 or epoch == last


def device_data(config: Config, dataset: data_lib.Dataset, replicate: Callable) -> tuple:
    """The steps' dataset arguments, put on every device by `replicate`: (images,) (N, 28, 28, 1),
    or for a conditional GAN (images, labels (N,))."""
    images = replicate(dataset.images)
    return (images, replicate(dataset.labels)) if config.conditional else (images,)


def load_checked(config: Config, placement, log: Callable[[str], None], load_dataset=None, num_runs: int = 1):
    """The run's dataset, checked against the config and devices (DataError/ParallelError if it cannot
    train): the one place the batch size is checked against the data and the devices."""
    dataset = (load_dataset or data_lib.load)(config.dataset, config.data_dir, notify=log)
    placement.check_batch_size(config.batch_size)
    if config.conditional:
        data_lib.check_labels(dataset, config.num_classes)
    if config.batch_size > len(dataset.images):
        raise data_lib.DataError(
            f"batch_size {config.batch_size} is larger than the {len(dataset.images):,} images of {dataset.name}"
        )
    total = config.resolved(len(dataset.images)).epochs * (len(dataset.images) // config.batch_size)
    if total > MAX_COUNT:
        raise data_lib.DataError(f"{total:,} steps in all is more than the step counter holds ({MAX_COUNT:,})")
    memory.check_memory(config, len(dataset.images), num_runs)
    parallel.check_same_data(dataset.images)
    return dataset


def kept_checkpoint(saver: checkpoint.Checkpointer, last_saved: int | None) -> str:
    if last_saved is None:
        return "no checkpoint had been saved yet"
    return f"the last good checkpoint is epoch {last_saved} ({checkpoint.step_path(saver.directory, last_saved)})"


def summary(config: Config, state: GANState, history: list[dict], first_epoch: int, run: rundir.RunDir) -> str:
    """A single run's closing line."""
    final, trained = history[-1], history[first_epoch:]
    return (
        f"done: {plural(config.epochs, 'epoch')}, {plural(int(state.step), 'step')} "
        f"({plural(len(trained), 'epoch')} in {sum(r['seconds'] for r in trained):.1f}s this run); "
        f"final D loss {final['d_loss']:.4f}, G loss {final['g_loss']:.4f}; "
        f"samples in {run.samples}, checkpoints in {checkpoint.checkpoint_dir(run.workdir)}"
    )


def _evaluator(dataset: str, config: Config, log: Callable[[str], None], progress: bool):
    """The dataset's evaluator; training its classifier shows a progress bar only if the run does."""
    from jaxgan import metrics  # the classifier and scipy only when quality is measured

    return metrics.Evaluator.for_dataset(dataset, data_dir=config.data_dir, log=log, progress=progress)


def quality_table(config: Config, final: dict, evaluator) -> str:
    """A single run's closing quality table: its last evaluated epoch, the ceiling and the floor."""
    from jaxgan import metrics

    weights = f"EMA {config.ema_decay}" if config.ema_decay else "raw"
    return metrics.format_table(
        [
            (f"epoch {final['epoch']} ({weights})", final),
            ("ceiling (real)", evaluator.ceiling(config.seed, conditional=config.conditional)),
            ("floor (untrained)", evaluator.floor(config, config.seed)),
        ]
    )


if __name__ == "__main__":  # python -m jaxgan.train
    from jaxgan.main import main

    sys.exit(main())
