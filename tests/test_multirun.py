"""Groups of runs in one program (jaxgan.multirun, trained by jaxgan.train's one loop): in mode "map"
every member is its single run bit for bit; mode "vmap" (batched); directories, resume from any
state a kill leaves, locks, divergence, signals, bad lists, memory, and 8 forced CPU devices."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

import jaxgan.main as train_cli
from jaxgan import checkpoint, cli, evaluate, generate, memory, parallel, rundir, signals, steps, train
from jaxgan import data as data_lib
from jaxgan.config import preset

ROOT = Path(__file__).resolve().parents[1]
IMAGES = 320  # 10 steps per epoch at the tiny preset's batch of 32
# Mode "vmap" batches the runs' matrix products, which round differently: each step equals mode
# "map" to within this (measured: docs/multirun.md).
VMAP_STEP_ATOL = 1e-6
TIMING = ("seconds", "images_per_s")


@pytest.fixture(scope="module")
def data(mnist_5k):
    return mnist_5k._replace(images=mnist_5k.images[:IMAGES], labels=mnist_5k.labels[:IMAGES])


def single(config, workdir, data):
    """A single run (the reference each member must equal)."""
    train.train_and_evaluate(config, workdir, load_dataset=data_lib.given(data), progress=False, log=lambda _: None)
    return workdir


def group(config, lists, workdir, data, **kwargs):
    log = []
    result = train.train_group(
        config, lists, workdir, load_dataset=data_lib.given(data), progress=False, log=log.append, **kwargs
    )
    return result, "\n".join(log)


def state_leaves(state) -> list[np.ndarray]:
    return jax.tree.leaves(checkpoint.saved_tree(state))


def max_gap(a, b) -> float:
    """The largest |difference| between two states' arrays (params, Adam, EMA, statistics, step, key)."""
    pairs = zip(state_leaves(a), state_leaves(b), strict=True)
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0)) for x, y in pairs
    )


def assert_member_is_single(member_dir: Path, single_dir: Path, epoch: int) -> None:
    """The member's checkpoint of `epoch` is the single run's bit for bit, and so are its metric rows."""
    got, want = checkpoint.load(member_dir, epoch), checkpoint.load(single_dir, epoch)
    checkpoint.check_resumable(want.state.config, got.state.config)  # the same run, up to how long or how often
    same = all(np.array_equal(x, y) for x, y in zip(state_leaves(got.state), state_leaves(want.state), strict=True))
    assert same, f"{member_dir.name} is not its single run at epoch {epoch}: gap {max_gap(got.state, want.state):.3g}"
    losses = lambda d: [{k: r[k] for k in ("epoch", "step", *steps.METRIC_NAMES)} for r in rows(d)[:epoch]]  # noqa: E731
    assert losses(member_dir) == losses(single_dir)


def rows(workdir: Path) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


SEEDS_CONFIG = preset("tiny").replace(dataset="mnist-5k", epochs=3, checkpoint_every=1)


def stop_after_epoch(epoch: int, log: list):
    """A log that sends SIGTERM to this process when epoch `epoch` ends (StopOnSignal catches it)."""

    def log_and_signal(message):
        log.append(message)
        if message.startswith(f"Epoch [{epoch}/"):
            os.kill(os.getpid(), signal.SIGTERM)

    return log_and_signal


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, data, evaluator):
    """Seeds 0, 1, 2 for 3 epochs in one program, evaluated at the end; the same group stopped by
    SIGTERM after epoch 1 and resumed; single runs of seeds 0 and 2."""
    root = tmp_path_factory.mktemp("seeds")
    config = SEEDS_CONFIG.replace(eval_every=3)
    whole, whole_log = group(config, {"seed": (0, 1, 2)}, root / "whole", data, evaluator=evaluator)
    stop_log = []
    with pytest.raises(signals.Interrupted) as stopped:
        train.train_group(config, {"seed": (0, 1, 2)}, root / "split", load_dataset=data_lib.given(data),
                             progress=False, log=stop_after_epoch(1, stop_log), evaluator=evaluator)  # fmt: skip
    stopped_at = [checkpoint.epochs_in(root / "split" / f"seed_{s}") for s in range(3)]
    _, split_log = group(config, {}, root / "split", data, evaluator=evaluator)  # no lists: the group's own
    singles = {s: single(SEEDS_CONFIG.replace(seed=s), root / f"single_{s}", data) for s in (0, 2)}
    return SimpleNamespace(
        root=root, whole=whole, whole_log=whole_log, split_log=split_log, singles=singles,
        stopped=stopped.value, stop_log="\n".join(stop_log), stopped_at=stopped_at,
    )  # fmt: skip


@pytest.mark.slow
def test_members_equal_single_runs_of_their_seeds(seeds):
    root, whole, log, singles = seeds.root, seeds.whole, seeds.whole_log, seeds.singles
    assert [m.name for m in whole.members] == ["seed_0", "seed_1", "seed_2"]
    assert "3 runs in one program (seed 0,1,2)" in log and "Epoch [3/3] step 30  3 runs" in log
    for seed in (0, 2):  # member 0 and member K-1
        assert_member_is_single(root / "whole" / f"seed_{seed}", singles[seed], epoch=3)
    # Without a sweep lr and beta1 stay compiled-in constants; members differ.
    assert all(state.adam is None for state in whole.states)
    assert not np.array_equal(
        jax.tree.leaves(whole.states[0].g_params)[0], jax.tree.leaves(whole.states[1].g_params)[0]
    )


@pytest.mark.slow
def test_group_resume_is_bit_identical(seeds):
    root, whole = seeds.root, seeds.whole
    assert "received SIGTERM: stopping after this epoch" in seeds.stop_log and seeds.stopped.signum == signal.SIGTERM
    assert str(seeds.stopped) == (
        f"stopped by SIGTERM after epoch 1/3; checkpoints of 3 runs saved in {root / 'split'}/*/checkpoints. "
        f"Resume with: python -m jaxgan.train --workdir {root / 'split'}"
    )
    assert seeds.stopped_at == [[1], [1], [1]]
    assert "resuming after epoch 1" in seeds.split_log
    for member in whole.members:
        a, b = root / "whole" / member.name, root / "split" / member.name
        with checkpoint.Checkpointer(a) as x, checkpoint.Checkpointer(b) as y:
            assert x.read_meta(3)["checksum"] == y.read_meta(3)["checksum"], member.name
        assert rows(a) == rows(b)
        for epoch in (1, 2, 3):
            grid = f"samples/epoch_{epoch:04d}.png"
            assert (a / grid).read_bytes() == (b / grid).read_bytes()


@pytest.mark.slow
def test_run_directories_are_normal_runs_and_the_group_has_a_summary(seeds, tmp_path, capsys):
    root, log = seeds.root, seeds.whole_log
    member = root / "whole" / "seed_2"
    config = json.loads((member / "config.json").read_text())
    assert (config["seed"], config["epochs"], config["dataset_resolved"]) == (2, 3, "mnist-5k")
    assert len(rows(member)) == 3 and (member / "losses.png").is_file() and (member / "samples/progress.gif").is_file()
    assert generate.main(["--workdir", str(member), "--num", "9", "--out", str(tmp_path / "g.npz")]) == 0
    assert np.load(tmp_path / "g.npz")["images"].shape == (9, 28, 28, 1)
    assert generate.main(["--workdir", str(root / "whole")]) == 2  # the group is not one run
    assert "has no checkpoint" in capsys.readouterr().err
    summary = json.loads((root / "whole" / "summary.json").read_text())
    assert list(summary["runs"]) == ["seed_0", "seed_1", "seed_2"] and summary["num_frozen"] == 0
    assert summary["runs"]["seed_1"]["d_loss"] == rows(root / "whole" / "seed_1")[-1]["d_loss"]
    losses = [r["d_loss"] for r in (rows(root / "whole" / f"seed_{s}")[-1] for s in range(3))]
    assert summary["mean"]["d_loss"] == pytest.approx(np.mean(losses))
    assert summary["std"]["d_loss"] == pytest.approx(np.std(losses, ddof=1))
    assert (root / "whole" / "losses.png").stat().st_size > 10_000
    assert "mean ± std: D loss" in log


@pytest.mark.slow
def test_convert_reads_a_member(seeds, tmp_path):
    pytest.importorskip("torch")
    from jaxgan import convert

    root = seeds.root
    assert convert.main([str(root / "whole" / "seed_1"), str(tmp_path / "seed_1.pt")]) == 0
    assert (tmp_path / "seed_1.pt").stat().st_size > 0


@pytest.mark.slow
def test_sweep_members_equal_single_runs(seeds, tmp_path, data):
    """seed x lr x beta1 (8 runs), lr and beta1 traced: members 0 and K-1 against single runs."""
    lists = {"seed": (0, 2), "lr": (4e-4, 2e-4), "beta1": (0.9, 0.5)}
    result, log = group(SEEDS_CONFIG.replace(epochs=1), lists, tmp_path / "sweep", data)
    first, last = result.members[0], result.members[-1]
    assert (first.name, last.name, len(result.members)) == (
        "seed_0-lr_0.0004-beta1_0.9",
        "seed_2-lr_0.0002-beta1_0.5",
        8,
    )
    assert "8 runs in one program (seed 0,2, lr 0.0004,0.0002, beta1 0.9,0.5)" in log
    reference = single(first.config, tmp_path / "single", data)
    assert_member_is_single(tmp_path / "sweep" / first.name, reference, epoch=1)
    assert_member_is_single(tmp_path / "sweep" / last.name, seeds.singles[2], epoch=1)  # lr 2e-4, beta1 0.5


@pytest.mark.parametrize("name", ["tiny", pytest.param("tiny-dcgan", marks=pytest.mark.slow)])
def test_vmap_lanes_never_mix_and_each_step_equals_map(name, data):
    """Mode "vmap" batches the runs: a lane's contents (here NaN, as a frozen member's could be) change
    no other lane's numbers, bit for bit; one step equals mode "map" up to float32 reduction order."""
    config = preset(name).replace(dataset="mnist-5k", epochs=1).resolved(IMAGES)
    states = [steps.create_state(config.replace(seed=s), s) for s in range(3)]
    stacked = steps.stack(states, config)
    nan = lambda tree: jax.tree.map(lambda x: x * np.nan, tree)  # noqa: E731
    spoiled = steps.stack([states[0], states[1].replace(g_params=nan(states[1].g_params),
                                                        d_params=nan(states[1].d_params)), states[2]], config)  # fmt: skip
    images = jax.device_put(data.images)
    indices = steps.runs_batch_indices(stacked.key, 0, IMAGES, config.batch_size)  # (3, 10, B)
    run = jax.jit(train.RUNS_STEPS["vmap"])
    clean = steps.unstack(run(stacked, images, indices)[0], [config] * 3)
    spoilt = steps.unstack(run(spoiled, images, indices)[0], [config] * 3)
    for k in (0, 2):
        assert all(np.array_equal(x, y) for x, y in zip(state_leaves(clean[k]), state_leaves(spoilt[k]), strict=True))
    one_step = indices[:, :1]
    by_map = steps.unstack(jax.jit(train.RUNS_STEPS["map"])(stacked, images, one_step)[0], [config] * 3)
    by_vmap = steps.unstack(run(stacked, images, one_step)[0], [config] * 3)
    gaps = [max_gap(a, b) for a, b in zip(by_map, by_vmap, strict=True)]
    print(f"{name}: one step, vmap vs map, max gap per run {gaps}")
    assert max(gaps) < VMAP_STEP_ATOL


@pytest.mark.slow
def test_vmap_mode_trains_a_group_through_the_same_loop(tmp_path, data):
    result, log = group(SEEDS_CONFIG.replace(epochs=1), {"seed": (0, 1)}, tmp_path / "vmap", data, mode="vmap")
    assert "2 runs in one program (seed 0,1), --group-mode vmap" in log
    assert [len(h) for h in result.histories] == [1, 1] and checkpoint.epochs_in(tmp_path / "vmap" / "seed_1") == [1]
    with pytest.raises(cli.UserError, match="--group-mode must be one of map, vmap, got 'sequential'"):
        group(SEEDS_CONFIG, {"seed": (0, 1)}, tmp_path / "other", data, mode="sequential")


@pytest.mark.slow
def test_a_diverging_run_is_named_and_frozen_while_the_others_go_on(seeds, tmp_path, data, capsys):
    """lr 1e30 diverges at once and is frozen; lr 2e-4 goes on as the single run; a signal and a
    resume keep the frozen run frozen; when every run diverges the group stops (exit 1)."""
    workdir, frozen = tmp_path / "lr", "seed_0-lr_1e+30"
    log = []
    with pytest.raises(signals.Interrupted):
        train.train_group(SEEDS_CONFIG, {"lr": (1e30, 2e-4)}, workdir, load_dataset=data_lib.given(data),
                             progress=False, log=stop_after_epoch(2, log))  # fmt: skip
    why = f"run {frozen} (seed 0, lr 1e+30, beta1 0.5) diverged: g_loss is nan at step 1 (epoch 1)"
    assert f"{why}; no checkpoint had been saved yet; it is frozen, the other run goes on" in "\n".join(log)
    assert json.loads((workdir / "group.json").read_text())["frozen"] == {
        frozen: f"{why}; no checkpoint had been saved yet"
    }
    assert rows(workdir / frozen) == [] and not checkpoint.epochs_in(workdir / frozen)
    # The other member goes on as the single run with its seed and lr (here lr is traced: a sweep).
    assert_member_is_single(workdir / "seed_0-lr_0.0002", seeds.singles[0], epoch=2)
    # Resumed, the frozen run stays frozen; the CLI names it and exits 0.
    assert train_cli.main(["--workdir", str(workdir), "--no-progress"], load_dataset=data_lib.given(data)) == 0
    out, err = capsys.readouterr()
    assert "resuming after epoch 2" in out and "Epoch [3/3] step 30  1 run  D loss" in out
    assert err == f"python -m jaxgan.train: 1 of 2 runs diverged and were frozen ({frozen}): see {workdir}/group.json\n"
    assert_member_is_single(workdir / "seed_0-lr_0.0002", seeds.singles[0], epoch=3)
    assert rows(workdir / frozen) == [] and not checkpoint.epochs_in(workdir / frozen)
    # Every run diverging stops the group: exit 1, one line (the same program as above: no compile).
    flags = "--preset tiny --dataset mnist-5k --epochs 3 --checkpoint-every 1 --lr 1e30,3e30 --no-progress"
    assert train_cli.main([*flags.split(), "--workdir", str(tmp_path / "all")], load_dataset=data_lib.given(data)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"python -m jaxgan.train: error: training diverged in every run: run {frozen} (seed 0")
    assert err.count("\n") == 1 and "run seed_0-lr_3e+30 (seed 0, lr 3e+30, beta1 0.5) diverged" in err


@pytest.mark.slow
def test_evaluate_a_group_prints_each_run_and_mean_and_std(seeds, quality_cache, monkeypatch, capsys):
    monkeypatch.setenv("JAXGAN_CACHE", str(quality_cache))
    workdir = seeds.root / "whole"
    summary = json.loads((workdir / "summary.json").read_text())
    fds = [summary["runs"][f"seed_{s}"]["fd"] for s in range(3)]
    assert summary["mean"]["fd"] == pytest.approx(np.mean(fds)) and summary["std"]["fd"] == pytest.approx(
        np.std(fds, ddof=1)
    )
    assert "quality (3 runs): FD@1000" in seeds.whole_log and ", FD " in seeds.whole_log
    assert evaluate.main(["--workdir", str(workdir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result["runs"]) == ["seed_0", "seed_1", "seed_2"]
    # --seed 0 draws seed_0's own evaluation noise: the FD its training measured at epoch 3.
    assert result["runs"]["seed_0"]["generator"]["fd"] == pytest.approx(fds[0], rel=1e-5)
    assert result["mean"]["fd"] == pytest.approx(np.mean([r["generator"]["fd"] for r in result["runs"].values()]))
    assert evaluate.main(["--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "3 runs, mnist-5k" in out and "seed_2 (epoch 3)" in out and "ceiling (real)" in out
    assert "mean ± std over 3 run(s): FD " in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seeds", "a,b"], "argument --seeds: expected seeds like 0,1,2 or 0-7, got 'a,b'"),
        (["--seeds", "3-1"], "argument --seeds: expected seeds like 0,1,2 or 0-7, got '3-1'"),
        (["--lr", "0,1e-4"], "lr must be positive, got 0.0"),
        (["--beta1", "0.5,1"], "beta1 must be in [0, 1), got 1.0"),
        (
            ["--latent-dim", "8,16"],
            "argument --latent-dim: takes one value for every run, got '8,16' "
            "(only --seeds, --lr and --beta1 take lists, one run per value)",
        ),
        (["--batch-size", "32,64"], "argument --batch-size: takes one value for every run"),
        (["--seed", "1", "--seeds", "0-3"], "give --seed (one run) or --seeds (a group of runs), not both"),
        (["--seeds", "0,1,0"], "--seeds lists a value twice: 0,1,0"),
        (["--group-mode", "vmap"], "--group-mode is for a group of runs"),
        (["--seeds", "0,1", "--group-mode", "sequential"], "argument --group-mode: invalid choice: 'sequential'"),
    ],
)
def test_bad_lists_exit_2_with_one_line(flags, message, tmp_path, capsys):
    argv = ["--preset", "tiny", "--dataset", "mnist-5k", "--workdir", str(tmp_path / "w"), *flags]
    assert train_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m jaxgan.train: error: ") and err.count("\n") == 1, err
    assert message in err, err


def test_seed_lists_and_ranges():
    args = train_cli.parse(["--seeds", "0-3,8", "--lr", "1e-4,2e-4"])[2]
    assert args.lists == {"lr": (1e-4, 2e-4), "seed": (0, 1, 2, 3, 8)}
    config, explicit, args = train_cli.parse(["--lr", "3e-4"])
    assert config.lr == 3e-4 and args.lists == {} and "lr" in explicit


@pytest.mark.slow
def test_a_group_refuses_other_lists_and_a_single_runs_workdir(seeds, data, tmp_path, monkeypatch):
    root = seeds.root
    config = preset("tiny").replace(dataset="mnist-5k", epochs=4)
    with pytest.raises(checkpoint.CheckpointError, match=r"the runs asked for \(seed=0,1 .*are not the group's"):
        group(config, {"seed": (0, 1)}, root / "whole", data)
    with pytest.raises(cli.UserError, match="holds a single run"):
        group(config, {"seed": (0, 1)}, root / "single_0", data)
    with monkeypatch.context() as m:  # one chunk of one run that cannot fit: advice, before anything is written
        m.setattr(memory, "free_memory", lambda device: 1000)
        with pytest.raises(cli.UserError, match=r"one chunk of steps needs about .* use a smaller --batch-size"):
            single(SEEDS_CONFIG, tmp_path / "tight", data)
    assert not (tmp_path / "tight" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_not_enough_memory_is_advice_not_a_crash(seeds, tmp_path, data, monkeypatch):
    with pytest.raises(
        cli.UserError, match=r"8 runs at once need about .* GiB per CPU device .* train at most 2 at once"
    ):
        memory.check_fits(8 * 2**30, 2.5 * 2**30, 8, 8, "CPU")
    memory.check_fits(2**30, None, 8, 8, "CPU")  # unknown free memory: no check
    monkeypatch.setattr(memory, "free_memory", lambda device: 1000)
    with pytest.raises(cli.UserError, match=r"train at most 1 at once"):  # the seeds group's program: compiled
        group(SEEDS_CONFIG.replace(eval_every=3), {"seed": (0, 1, 2)}, tmp_path / "w", data)
    assert not checkpoint.epochs_in(tmp_path / "w" / "seed_0")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["small", "small-beta09", "wide", "deep"])
def test_every_presets_first_and_last_members_equal_single_runs(name, tmp_path, mnist_5k):
    """A few steps of each preset's networks (256 images: 2 to 4 steps), seeds 0 and 1."""
    data = mnist_5k._replace(images=mnist_5k.images[:256], labels=mnist_5k.labels[:256])
    config = preset(name).replace(dataset="mnist-5k", epochs=1)
    group(config, {"seed": (0, 1)}, tmp_path / "group", data)
    for seed in (0, 1):
        reference = single(config.replace(seed=seed), tmp_path / f"single_{seed}", data)
        assert_member_is_single(tmp_path / "group" / f"seed_{seed}", reference, epoch=1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [preset("tiny-dcgan"), preset("tiny").replace(conditional=True)],
    ids=["tiny-dcgan", "tiny-conditional"],
)
def test_batch_norm_and_conditional_members_equal_single_runs(
    config, tmp_path, mnist_5k, evaluator, quality_cache, monkeypatch, capsys
):
    """A DCGAN's running statistics and a conditional GAN's labels in a group: seeds 0 and 1, one epoch
    of 256 images drawn over every digit (8 steps), evaluated; each member equals its single run, and
    `jaxgan.evaluate` of the group measures what training measured."""
    every = np.linspace(0, len(mnist_5k.images) - 1, 256).astype(int)
    data = mnist_5k._replace(images=mnist_5k.images[every], labels=mnist_5k.labels[every])
    config = config.replace(dataset="mnist-5k", epochs=1, eval_every=1)
    result, log = group(config, {"seed": (0, 1)}, tmp_path / "group", data, evaluator=evaluator)
    for seed in (0, 1):
        member = tmp_path / "group" / f"seed_{seed}"
        reference = single(config.replace(seed=seed, eval_every=0), tmp_path / f"single_{seed}", data)
        assert_member_is_single(member, reference, epoch=1)  # running statistics included
        assert (member / "samples" / "epoch_0001.png").is_file()
    if config.arch == "dcgan":
        stats = jax.tree.leaves(result.states[0].g_batch_stats)
        assert stats and not np.array_equal(stats[0], jax.tree.leaves(steps.create_state(config, 0).g_batch_stats)[0])
    summary = json.loads((tmp_path / "group" / "summary.json").read_text())
    assert "fd" in summary["mean"] and ("cond_acc" in summary["mean"]) == config.conditional
    assert ("conditional accuracy" in log) == config.conditional
    monkeypatch.setenv("JAXGAN_CACHE", str(quality_cache))
    capsys.readouterr()
    assert evaluate.main(["--workdir", str(tmp_path / "group"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # --seed 0 draws the noise training evaluated seed_0 with (in eval mode, with its own statistics).
    assert result["runs"]["seed_0"]["generator"]["fd"] == pytest.approx(summary["runs"]["seed_0"]["fd"], rel=1e-4)
    assert ("cond_acc" in result["mean"]) == ("cond_acc" in result["ceiling"]) == config.conditional


@jax.jit
def reference_epoch(state, images):
    """The single run's first epoch (train_and_evaluate's one chunk at 10 steps an epoch)."""
    return steps.train_epoch(state, images)[0]


@pytest.mark.slow
def test_eight_devices_hold_one_run_each_and_equal_single_runs(seeds, tmp_path, data):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAXGAN_TEST_IMAGES": str(IMAGES),
    }
    flags = f"--preset tiny --dataset mnist-5k --no-progress --epochs 1 --seeds 0-7 --workdir {tmp_path / 'group'}"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "subset_train.py"), flags],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.stdout.splitlines()[-1] == "exit 0", proc.stderr
    assert "8 runs in one program (seed 0,1,2,3,4,5,6,7)" in proc.stdout
    assert "on 8 CPU devices, 1 run(s) each" in proc.stdout
    # The single runs' first epochs, compiled once (seed lives in the key, not in the static config)...
    config = preset("tiny").replace(dataset="mnist-5k", epochs=1).resolved(IMAGES)
    references = [reference_epoch(steps.create_state(config.replace(seed=s), s).replace(config=config), data.images)
                  for s in range(8)]  # fmt: skip
    for seed in (0, 2):  # ... are the single runs' (train_and_evaluate's checkpoints), bit for bit
        single_state = checkpoint.load(seeds.singles[seed], 1).state
        for a, b in zip(jax.tree.leaves(checkpoint.saved_tree(single_state)),
                        jax.tree.leaves(checkpoint.saved_tree(references[seed])), strict=True):  # fmt: skip
            np.testing.assert_array_equal(a, b)
    for seed in range(8):  # ... and so are the members, each on a device of its own
        member = checkpoint.load(tmp_path / "group" / f"seed_{seed}", 1).state
        assert int(member.step) == int(references[seed].step) == 10
        assert max_gap(member, references[seed]) == 0, f"seed_{seed}: {max_gap(member, references[seed]):.3g}"


def test_runs_go_to_the_most_devices_that_divide_them():
    assert [parallel.devices_for(k, 8) for k in (8, 12, 7, 16, 1)] == [8, 6, 7, 8, 1]
    assert parallel.devices_for(5, 4) == 1
    assert parallel.Placement(num_runs=3).describe() == "CPU"  # one device here: plain jit


@pytest.mark.slow
def test_a_member_trains_only_with_its_group(seeds, tmp_path, data, capsys):
    """While its group trains, a member's directory is locked (as a run's is); after, it is refused to a
    run of its own in one line, and nothing in it changes."""
    refusals = []

    def try_members(message):
        if message.startswith("Epoch [1/"):
            for name in ("seed_0", "seed_1"):
                with pytest.raises(cli.UserError) as held:
                    rundir.RunDir(tmp_path / "g" / name).lock()
                refusals.append(str(held.value))

    train.train_group(SEEDS_CONFIG.replace(epochs=2), {"seed": (0, 1)}, tmp_path / "g", load_dataset=data_lib.given(data),
                      progress=False, log=try_members)  # fmt: skip
    assert len(refusals) == 2 and all(f"is in use by another run (PID {os.getpid()}" in r for r in refusals)
    member = tmp_path / "g" / "seed_0"
    before = checkpoint.epochs_in(member)
    argv = ["--workdir", str(member), "--no-resume", "--no-progress"]
    assert train_cli.main(argv, load_dataset=data_lib.given(data)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is run seed_0 of the group of runs in {tmp_path / 'g'}: continue the group" in err
    assert checkpoint.epochs_in(member) == before == [1, 2]  # nothing deleted


@pytest.mark.slow
def test_a_group_resumes_from_a_save_cut_short(seeds, tmp_path, data):
    """A kill during the group's save of epoch 2 left seed_0 and seed_1 with it, seed_2 without: the
    group continues from epoch 1 (seed_0's and seed_1's epoch 2 computed again) and ends as the
    group that was never stopped."""
    import shutil

    workdir = tmp_path / "cut"
    shutil.copytree(seeds.root / "split", workdir)  # stopped after epoch 1, resumed to 3: epochs 1, 2, 3
    for name in ("seed_0", "seed_1", "seed_2"):
        with checkpoint.Checkpointer(workdir / name) as writer:
            writer.delete_after(2 if name != "seed_2" else 1)
    assert [checkpoint.epochs_in(workdir / f"seed_{s}") for s in range(3)] == [[1, 2], [1, 2], [1]]
    result, log = group(SEEDS_CONFIG, {}, workdir, data)
    assert "run seed_0 saved epoch 2 before the group stopped: it continues from epoch 1 with the others" in log
    assert "resuming after epoch 1" in log and [len(h) for h in result.histories] == [3, 3, 3]
    for seed in (0, 2):
        assert_member_is_single(workdir / f"seed_{seed}", seeds.singles[seed], epoch=3)
