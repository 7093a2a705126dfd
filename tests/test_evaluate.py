"""`python -m jaxgan.evaluate` and `--eval-every` during training (quickly trained classifier).

The tests that measure need the trained classifier (conftest.quality_cache) and are slow;
bad input is refused before any classifier is needed, on an untrained run's checkpoint.
"""

import json
import re

import pytest

from jaxgan import checkpoint, evaluate, steps, train
from jaxgan import data as data_lib
from jaxgan.config import preset
from jaxgan.data import Dataset


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """A run directory whose only checkpoint (epoch 1) holds a fresh tiny state."""
    workdir = tmp_path_factory.mktemp("untrained_run")
    with checkpoint.Checkpointer(workdir) as saver:
        saver.save(steps.create_state(preset("tiny"), 0), 1, dataset="mnist-5k", num_examples=640)
    return workdir


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, mnist_5k, evaluator):
    """2 tiny epochs on 640 digits with EMA 0.9 and evaluation every epoch."""
    workdir = tmp_path_factory.mktemp("ema_run")
    data = Dataset(mnist_5k.images[:640], mnist_5k.labels[:640], "mnist-5k")
    config = preset("tiny").replace(epochs=2, ema_decay=0.9, eval_every=1)
    log = []
    state, history = train.train_and_evaluate(
        config, workdir, load_dataset=data_lib.given(data), progress=False, log=log.append, evaluator=evaluator
    )
    return workdir, state, history, "\n".join(log)


@pytest.mark.slow
def test_eval_every_adds_metrics_rows_a_plot_and_a_summary(ema_run):
    workdir, _, history, log = ema_run
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert rows == history and len(rows) == 2
    for row in rows:
        assert row["fd_n"] == 1000 and row["fd"] > 0 and 1 <= row["score"] <= 10
        assert 0 <= row["coverage_kl"] <= 2.31 and 0.1 <= row["max_prob"] <= 1 and len(row["coverage"]) == 10
    assert (workdir / "quality.png").stat().st_size > 10_000
    assert log.count("quality: FD@1000") == 2
    assert re.search(r"epoch 2 \(EMA 0.9\).*\n.*ceiling \(real\).*\n.*floor \(untrained\)", log)


def evaluate_json(argv, capsys):
    assert evaluate.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_evaluate_measures_the_ema_generator_unless_no_ema(ema_run, quality_cache, monkeypatch, capsys):
    monkeypatch.setenv("JAXGAN_CACHE", str(quality_cache))
    workdir, _, history, _ = ema_run
    ema = evaluate_json(["--workdir", str(workdir)], capsys)
    raw = evaluate_json(["--workdir", str(workdir), "--no-ema", "--num", "500"], capsys)
    assert (ema["generator_weights"], raw["generator_weights"]) == ("ema", "raw")
    assert (ema["epoch"], ema["step"], ema["dataset"]) == (2, 40, "mnist-5k")
    # The same generator, noise and classifier as the last training evaluation.
    assert ema["generator"]["fd"] == pytest.approx(history[-1]["fd"], rel=1e-6)
    assert raw["generator"]["fd_n"] == raw["ceiling"]["fd_n"] == 500
    assert raw["generator"]["fd"] != ema["generator"]["fd"]
    # 40 tiny steps need not beat the untrained floor yet; real images beat both.
    assert ema["ceiling"]["fd"] < min(ema["generator"]["fd"], ema["floor"]["fd"]) / 5
    assert evaluate.main(["--workdir", str(workdir), "--epoch", "1"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1, step 20, mnist-5k" in out and "generator (ema 0.9)" in out and "FD@N" in out


def assert_one_line_error(capsys, message):
    err = capsys.readouterr().err
    assert err.startswith("python -m jaxgan.evaluate: error: ") and err.count("\n") == 1, err
    assert message in err, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workdir", "{tmp}/nope"], "does not exist"),
        (["--workdir", "{tmp}"], "has no checkpoint"),
        (["--workdir", "{run}", "--num", "1"], "--num must be at least 2"),
        (["--workdir", "{run}", "--epoch", "7"], "no checkpoint of epoch 7"),
        (["--workdir", "{run}", "--num", "x"], "invalid int value"),
        ([], "one of the arguments --workdir --from-pt is required"),
        (["--from-pt", "{tmp}/missing.pt"], "is not a file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, untrained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXGAN_CACHE", str(tmp_path / "cache"))  # empty: no classifier is trained or read
    argv = [a.format(tmp=tmp_path, run=untrained_run) for a in argv]
    assert evaluate.main(argv) == 2
    assert_one_line_error(capsys, message)
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_more_images_than_the_heldout_split_is_one_line_and_exit_2(ema_run, quality_cache, monkeypatch, capsys):
    monkeypatch.setenv("JAXGAN_CACHE", str(quality_cache))
    assert evaluate.main(["--workdir", str(ema_run[0]), "--num", "5000"]) == 2
    assert_one_line_error(capsys, "held-out split has 1000 images, fewer than the 5000")


@pytest.mark.slow
def test_from_pt_measures_the_converted_generator(ema_run, quality_cache, tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    from jaxgan import convert

    monkeypatch.setenv("JAXGAN_CACHE", str(quality_cache))
    workdir, state, _, _ = ema_run
    pt = tmp_path / "g.pt"
    convert.save_pt(pt, state.config, state)
    from_pt = evaluate_json(["--from-pt", str(pt), "--num", "500"], capsys)
    raw = evaluate_json(["--workdir", str(workdir), "--no-ema", "--num", "500"], capsys)
    assert from_pt["generator_weights"] == "pt" and from_pt["dataset"] == "mnist-5k"
    assert from_pt["generator"]["fd"] == pytest.approx(raw["generator"]["fd"], rel=1e-5)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    assert evaluate.main(["--from-pt", str(tmp_path / "junk.pt")]) == 2
    assert "cannot read" in capsys.readouterr().err


class _Stop(Exception):
    pass


@pytest.mark.slow  # one tiny epoch
def test_eval_every_trains_the_classifier_with_a_bar_only_when_the_run_has_one(tmp_path, mnist_5k, monkeypatch):
    from jaxgan import classifier

    seen = []

    def load_or_train(name, seed=0, **kwargs):
        seen.append(kwargs["progress"])
        raise _Stop  # the run is only here to say whether it shows progress

    monkeypatch.setattr(classifier, "load_or_train", load_or_train)
    data = Dataset(mnist_5k.images[:320], mnist_5k.labels[:320], "mnist-5k")
    config = preset("tiny").replace(epochs=1, eval_every=1)
    for progress in (False, True):
        with pytest.raises(_Stop):
            train.train_and_evaluate(
                config,
                tmp_path / str(progress),
                load_dataset=data_lib.given(data),
                progress=progress,
                log=lambda _: None,
            )
    assert seen == [False, True]
