"""The benchmarks run end to end (`--quick`) and write sound results. Timings are never asserted."""

import hashlib
import json
import math
import tempfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import end_to_end, throughput, torch_bench  # noqa: E402
from benchmarks.timing import Call, Timing, time_calls, time_interleaved  # noqa: E402
from jaxgan import data as data_lib  # noqa: E402
from jaxgan.config import preset  # noqa: E402


def published() -> dict[str, str]:
    """SHA-256 of every file in benchmarks/results/."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(throughput.RESULTS.iterdir())}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`--quick` as the docs write it (no --out), its temporary directory inside pytest's."""
    before = published()
    threads = torch.get_num_threads()
    tmp = tmp_path_factory.mktemp("tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(tmp))
        assert throughput.main(["--quick"]) == 0
    (json_path,) = tmp.glob("jaxgan-benchmark-*/*.json")
    assert torch.get_num_threads() == threads  # the benchmark leaves torch's threads as it found them
    return json.loads(json_path.read_text()), json_path.parent, before


@pytest.mark.slow
def test_quick_run_writes_results_and_plot_into_a_temporary_directory(quick_run):
    result, out, before = quick_run
    assert published() == before  # the published results are untouched
    assert (out / f"{result['device']}.png").stat().st_size > 0
    assert result["quick"] and result["command"].startswith("python -m benchmarks.throughput --quick")
    assert result["matmul_peak_gflops"] > 0 and result["cores"] >= 1


@pytest.mark.slow
def test_quick_run_ratios_are_finite_and_positive(quick_run):
    result, *_ = quick_run
    assert [(r["preset"], r["batch_size"]) for r in result["rows"]] == [("tiny", 32)]
    for row in result["rows"]:
        for key in ("jax_step_ratio", "jax_scan_ratio", "roofline_scan_pct", "flops_per_step", "jax_peak_mb"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        assert row["jax_scan_images_per_s"] == pytest.approx(row["batch_size"] * 1e3 / row["jax_scan_ms"])
    (e2e,) = result["end_to_end"]
    assert math.isfinite(e2e["ratio"]) and e2e["ratio"] > 0
    assert e2e["jax_steps"] == 128 // 32 and e2e["torch_steps"] == 4


@pytest.mark.slow
def test_a_conditional_preset_is_benchmarked_with_its_labels(tmp_path):
    """cgan-small's steps take the batch's digits and fake labels, on both sides and end to end."""
    argv = ["--quick", "--presets", "cgan-small", "--repeats", "1", "--out", str(tmp_path)]
    assert throughput.main(argv) == 0
    (path,) = tmp_path.glob("*.json")
    result = json.loads(path.read_text())
    assert [r["preset"] for r in result["rows"]] == ["cgan-small"]
    for row in [*result["rows"], *result["end_to_end"]]:
        for key in ("jax_scan_ratio", "ratio"):
            if key in row:
                assert math.isfinite(row[key]) and row[key] > 0, (row["preset"], key)


@pytest.mark.slow
def test_markdown_table_has_a_line_per_row(quick_run):
    result, *_ = quick_run
    table = throughput.markdown_table(result["rows"]).splitlines()
    assert len(table) == 2 + len(result["rows"])
    assert all(line.count("|") == len(throughput.COLUMNS) + 1 for line in table)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--quick", "--presets", "nope"], "nope"),
        (["--quick", "--batch-sizes", "0"], "must be positive"),
        (["--quick", "--batch-sizes", "4096"], "larger than --examples"),
        (["--quick", "--out", str(throughput.RESULTS)], "never writes the published results"),
        (["--torch-compile", "target"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv, message, capsys):
    assert throughput.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m benchmarks.throughput: error: ") and err.count("\n") == 1, err
    assert message in err, err


def test_torch_memory_is_measured_without_profiler_noise(mnist_5k, capfd):
    config = preset("tiny").replace(batch_size=32)
    prepared = torch_bench.prepare_eager(config, mnist_5k.images[:64], steps_per_call=1, threads=1)
    assert prepared.peak_bytes > 0
    err = capfd.readouterr().err
    assert "Memory block of unknown size" not in err and "profiler_st" not in err, err


def test_time_calls_warms_up_and_syncs_every_call():
    calls, synced = [], []
    timing = time_calls(lambda: calls.append(1) or len(calls), synced.append, repeats=3, warmup=2)
    assert len(calls) == 5 and synced == [1, 2, 3, 4, 5]
    assert timing.repeats == 3 and 0 <= timing.min_s <= timing.median_s <= timing.max_s
    assert Timing(4.0, 2.0, 6.0, 3).per(2) == Timing(2.0, 1.0, 3.0, 3)


def test_time_interleaved_runs_the_calls_round_robin_after_their_setup():
    log = []
    calls = {
        name: Call(
            lambda name=name: log.append(name), lambda _: None, per=per, setup=lambda name=name: log.append("+" + name)
        )
        for name, per in (("a", 1), ("b", 4))
    }
    timings = time_interleaved(calls, repeats=2, warmup=1)
    assert log == ["+a", "a", "+b", "b"] * 3
    assert set(timings) == {"a", "b"} and timings["b"].repeats == 2
    assert 0 <= timings["b"].min_s <= timings["b"].median_s <= timings["b"].max_s


def test_seeds_dataset_transform_equals_jaxgans_scaling(mnist_5k):
    pixels, labels = data_lib.load_mnist_5k()
    dataset = end_to_end.SeedsMNIST(pixels[:10], labels[:10])
    image, label = dataset[3]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and label == labels[3]
    np.testing.assert_array_equal(image.numpy()[0], mnist_5k.images[3, ..., 0])


def write_idx_dir(directory, pixels: np.ndarray, labels: np.ndarray) -> None:
    """train-images-idx3-ubyte and train-labels-idx1-ubyte of uint8 pixels (N, 28, 28, 1) and labels (N,)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in (("train-images-idx3-ubyte", pixels[..., 0]), ("train-labels-idx1-ubyte", labels)):
        header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
        (directory / name).write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.slow  # two fresh interpreters import jax and torch
def test_full_scale_quick_run_on_an_idx_directory(tmp_path, capsys):
    from benchmarks import full_scale

    pixels, labels = data_lib.load_mnist_5k()
    write_idx_dir(tmp_path / "idx", pixels[:200], labels[:200])
    assert full_scale.main(["--quick", "--dataset", str(tmp_path / "idx"), "--out", str(tmp_path / "out")]) == 0
    (json_path,) = (tmp_path / "out").glob("full-scale-*.json")
    result = json.loads(json_path.read_text())
    assert result["examples"] == 200 and result["command"].startswith("python -m benchmarks.full_scale --quick")
    epoch = result["epoch"]
    assert math.isfinite(epoch["ratio"]) and epoch["ratio"] > 0
    assert epoch["jax_steps"] == 200 // 32 and epoch["torch_steps"] == math.ceil(200 / 32)
    for kind, child in result["startup"].items():
        marks = list(child["marks"].values())
        assert marks == sorted(marks) and marks[0] >= 0, (kind, child["marks"])  # phases in order, from spawn
        assert child["peak_rss_bytes"] > 0 and child["process_wall_s"] >= marks[-1]
        assert child["chunk"] == 200 // 32  # log_every is longer than this epoch
    jx, pt = result["startup"]["jax"], result["startup"]["torch"]
    assert jx["device_live_bytes"] >= jx["images_bytes"] == 200 * 28 * 28 * 4
    assert pt["time_to_first_step_s"] <= pt["time_to_first_chunk_s"]
    table = capsys.readouterr().out
    assert "| jaxgan |" in table and "| the seeds |" in table


def test_full_scale_refuses_a_dataset_that_is_not_a_directory(tmp_path, capsys):
    from benchmarks import full_scale

    with pytest.raises(SystemExit) as exc:
        full_scale.parse_args(["--dataset", str(tmp_path / "missing")])
    assert exc.value.code == 2 and "not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_multirun_quick_run_writes_sound_rows(tmp_path):
    from benchmarks import multirun as multirun_bench

    assert multirun_bench.main(["--quick", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("multirun_*.json")
    result = json.loads(path.read_text())
    assert [(r["preset"], r["batch_size"], r["runs"]) for r in result["rows"]] == [("tiny", 32, 1), ("tiny", 32, 2)]
    for row in result["rows"]:
        for mode in ("map", "vmap"):
            for key in ("images_per_s_per_run", "vs_single", "vs_torch", "compile_s", "xla_mb"):
                assert math.isfinite(row[f"{mode}_{key}"]) and row[f"{mode}_{key}"] > 0, (mode, key)
            ratio = row[f"{mode}_images_per_s_per_run"] / row["single_images_per_s"]
            assert row[f"{mode}_vs_single"] == pytest.approx(ratio)
    assert [(c["mode"], c["best_k"]) for c in result["crossovers"]] == [("map", 2), ("vmap", 2)]
    assert result["load_average_start"] is not None
    assert len(multirun_bench.markdown(result["rows"]).splitlines()) == 4


@pytest.mark.slow
@pytest.mark.parametrize("config", [preset("tiny-dcgan"), preset("tiny-dcgan").replace(conditional=True)])
def test_conv_layers_baseline_is_the_same_network_through_xlas_convolutions(config):
    """benchmarks.conv_layers' DCGAN of flax nn.Conv / nn.ConvTranspose has jaxgan's parameters and,
    in train mode, its images, logits and running statistics."""
    import jax

    from benchmarks import conv_layers
    from jaxgan import models

    z = jax.random.normal(jax.random.key(1), (8, config.latent_dim))
    labels = jax.numpy.arange(8) % 10 if config.conditional else None
    g_vars, d_vars = models.init_variables(config, jax.random.key(0))

    def forward():
        images, g_stats = models.generate_train(config, g_vars["params"], g_vars["batch_stats"], z, labels)
        logits, d_stats = models.discriminate_train(config, d_vars["params"], d_vars["batch_stats"], images, labels)
        return images, logits, g_stats, d_stats

    with conv_layers.xla_layers():
        assert jax.tree.map(np.shape, models.init_variables(config, jax.random.key(0))) == jax.tree.map(
            np.shape, (g_vars, d_vars)
        )
        xla = jax.jit(lambda: forward())()  # compiled whole (eager convolutions compile one by one)
    assert models.torch_conv is not conv_layers.xla_conv  # the block restored jaxgan's layers
    ours = jax.jit(lambda: forward())()  # a new function: jit would reuse the trace of the XLA layers
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(xla), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_layers_refuses_an_mlp_preset(capsys):
    from benchmarks import conv_layers

    with pytest.raises(SystemExit) as exit_info:
        conv_layers.main(["--preset", "small"])
    assert exit_info.value.code == 2
    assert "--preset small is an MLP" in capsys.readouterr().err


def test_conv_flags_reads_each_convolutions_path_from_the_optimized_hlo():
    """benchmarks.conv_flags.hlo_paths on real programs: XLA's convolution of the DCGAN's D (64
    channels in) runs in a YNNPACK fusion by default, the matrix-product layer is dots only."""
    import jax
    import jax.numpy as jnp

    from benchmarks import conv_flags
    from jaxgan import models

    x = jnp.ones((2, 14, 14, 64))
    paths = {}
    for impl in ("xla", "gemm"):
        layer = models.Conv(128, 4, 2, 1, impl=impl)
        variables = layer.init(jax.random.key(0), x)
        paths[impl] = conv_flags.hlo_paths(jax.jit(layer.apply).lower(variables, x).compile().as_text())
    assert sum(v for k, v in paths["xla"].items() if k.startswith("convolution")) == 1
    assert not any(k.startswith("dot") for k in paths["xla"])
    assert not any(k.startswith("convolution") for k in paths["gemm"]) and sum(paths["gemm"].values()) >= 1
    assert set(conv_flags.SETTINGS) >= {"default (YNNPACK)", "YNNPACK off (Eigen)"}


def table_rows(out: str, first_cells: tuple[str, ...]) -> list[list[str]]:
    """The cells of the markdown rows of `out` whose first cell starts with one of `first_cells`."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    return [r for r in rows if r[0].startswith(first_cells)]


@pytest.mark.slow
def test_classifier_benchmark_times_each_implementation_against_torch(capsys):
    from benchmarks import classifier as classifier_bench

    argv = ["--batch-size", "16", "--steps", "2", "--repeats", "1", "--examples", "64"]
    assert classifier_bench.main(argv) == 0
    rows = table_rows(capsys.readouterr().out, ("jaxgan", "torch"))
    assert [r[0] for r in rows[:2]] == ["jaxgan gemm", "jaxgan xla"]
    assert rows[2:] and all(r[0].startswith("torch eager") for r in rows[2:])
    for row in rows:
        assert all(math.isfinite(float(cell)) and float(cell) > 0 for cell in row[1:]), row
    assert max(float(r[2]) for r in rows[2:]) == pytest.approx(1.0, abs=0.006)  # the best torch is the unit


def test_classifier_benchmark_refuses_fewer_examples_than_a_batch(capsys):
    from benchmarks import classifier as classifier_bench

    with pytest.raises(SystemExit) as exit_info:
        classifier_bench.main(["--batch-size", "16", "--examples", "8"])
    assert exit_info.value.code == 2
    assert "--examples at least --batch-size" in capsys.readouterr().err


def test_dcgan_layers_benchmark_computes_torchs_layers():
    """benchmarks.dcgan_layers' jaxgan and torch contestants compute the same convolutions (the
    torch weight is the kernel transposed, as convert does), forward and backward."""
    import jax.numpy as jnp

    from benchmarks import dcgan_layers

    rng = np.random.default_rng(0)
    for layer in dcgan_layers.layers(preset("tiny-dcgan")):
        x = rng.standard_normal((2, layer.size, layer.size, layer.channels)).astype(np.float32)
        kernel = rng.standard_normal(dcgan_layers.kernel_shape(layer)).astype(np.float32)
        ours = dcgan_layers.jax_calls(layer, "gemm", jnp.asarray(x), jnp.asarray(kernel))
        theirs = dcgan_layers.torch_calls(layer, x, kernel)
        y = np.asarray(ours["fwd"].fn())
        assert y.shape[1] == dcgan_layers.out_size(layer)
        np.testing.assert_allclose(y, theirs["fwd"].fn().numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
        dx, dkernel = ours["fwd+bwd"].fn()
        torch_dx, torch_dweight = theirs["fwd+bwd"].fn()
        np.testing.assert_allclose(dx, torch_dx.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(dkernel, torch_dweight.numpy().transpose(2, 3, 1, 0), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_dcgan_layers_benchmark_prints_a_row_per_layer(capsys):
    from benchmarks import dcgan_layers

    assert dcgan_layers.main(["--preset", "tiny-dcgan", "--batch-size", "4", "--repeats", "1"]) == 0
    rows = table_rows(capsys.readouterr().out, ("G ", "D "))
    assert [r[0].split(",")[0] for r in rows] == [layer.name for layer in dcgan_layers.layers(preset("tiny-dcgan"))]
    for row in rows:
        assert len(row) == 1 + 6 + 1 and all(float(cell) > 0 for cell in row[1:]), row


def test_dcgan_layers_refuses_an_mlp_preset(capsys):
    from benchmarks import dcgan_layers

    with pytest.raises(SystemExit) as exit_info:
        dcgan_layers.main(["--preset", "small"])
    assert exit_info.value.code == 2
    assert "--preset small is an MLP" in capsys.readouterr().err


@pytest.mark.slow
def test_step_profile_names_each_costly_op_and_what_it_computes(capsys):
    from benchmarks import step_profile

    assert step_profile.main(["--preset", "tiny-dcgan", "--batch-size", "8", "--steps", "2", "--top", "5"]) == 0
    out = capsys.readouterr().out
    rows = [r for r in table_rows(out, ("",)) if r[0] not in ("op", "---")]
    assert len(rows) == 5
    assert all(float(r[1]) > 0 and r[2].endswith("%") for r in rows)
    assert any("Discriminator" in r[3] or "Generator" in r[3] for r in rows)  # read from the HLO's metadata
    assert "ms per step" in out
