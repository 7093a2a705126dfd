"""The benchmarks run end to end (`--quick`) and write sound results. Timings are never asserted."""

import json
import math

import numpy as np
import pytest
import torch

from benchmarks import end_to_end, throughput
from benchmarks.timing import Call, Timing, time_calls, time_interleaved
from jaxgan import data as data_lib

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    assert throughput.main(["--quick", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the benchmark leaves torch's threads as it found them
    (json_path,) = out.glob("*.json")
    return json.loads(json_path.read_text()), out


def test_quick_run_writes_results_and_plot(quick_run):
    result, out = quick_run
    assert (out / f"{result['device']}.png").stat().st_size > 0
    assert result["quick"] and result["command"].startswith("python -m benchmarks.throughput --quick")
    assert result["matmul_peak_gflops"] > 0 and result["cores"] >= 1
    assert {k for k in result["targets"]} == {
        "scan_vs_torch_eager_at_64",
        "end_to_end_epoch",
        "roofline_pct_at_256",
        "first_call_compile_s",
    }


def test_quick_run_ratios_are_finite_and_positive(quick_run):
    result, _ = quick_run
    assert [(r["preset"], r["batch_size"]) for r in result["rows"]] == [("tiny", 32)]
    for row in result["rows"]:
        for key in ("jax_step_ratio", "jax_scan_ratio", "roofline_scan_pct", "flops_per_step", "jax_peak_mb"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        assert row["jax_scan_images_per_s"] == pytest.approx(row["batch_size"] * 1e3 / row["jax_scan_ms"])
    (e2e,) = result["end_to_end"]
    assert math.isfinite(e2e["ratio"]) and e2e["ratio"] > 0
    assert e2e["jax_steps"] == 128 // 32 and e2e["torch_steps"] == 4


def test_markdown_table_has_a_line_per_row(quick_run):
    result, _ = quick_run
    table = throughput.markdown_table(result["rows"]).splitlines()
    assert len(table) == 2 + len(result["rows"])
    assert all(line.count("|") == len(throughput.COLUMNS) + 1 for line in table)


@pytest.mark.parametrize(
    "argv",
    [["--quick", "--presets", "nope"], ["--quick", "--batch-sizes", "0"], ["--quick", "--batch-sizes", "4096"]],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        throughput.parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


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


@pytest.mark.slow
def test_multirun_quick_run_writes_sound_rows(tmp_path):
    from benchmarks import multirun as multirun_bench

    assert multirun_bench.main(["--quick", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("multirun_*.json")
    result = json.loads(path.read_text())
    assert [(r["preset"], r["batch_size"], r["runs"]) for r in result["rows"]] == [("tiny", 32, 1), ("tiny", 32, 2)]
    for row in result["rows"]:
        for key in ("vmap_images_per_s_per_run", "vmap_vs_single", "vmap_vs_torch", "vmap_compile_s", "vmap_xla_mb"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        assert row["vmap_vs_single"] == pytest.approx(row["vmap_images_per_s_per_run"] / row["single_images_per_s"])
    (crossover,) = result["crossovers"]
    assert crossover["best_k"] == 2 and result["load_average_start"] is not None
    assert len(multirun_bench.markdown(result["rows"]).splitlines()) == 4
