"""torch_ref.train: the PyTorch loop sees jaxgan's batches and noise, and writes a convertible .pt."""

import jax
import numpy as np
import pytest

from jaxgan import convert, steps
from jaxgan.config import preset

torch = pytest.importorskip("torch")
from torch_ref import train as torch_train  # noqa: E402


@pytest.mark.slow
@pytest.mark.parity
def test_torch_loop_follows_jaxgans_steps(mnist_5k):
    config = preset("tiny")
    images = mnist_5k.images[:320]  # 10 steps per epoch
    gan, history = torch_train.train(config.replace(epochs=1), images, log=lambda _: None)
    state = steps.create_state(config, config.seed)
    indices = steps.epoch_batch_indices(state.key, 0, len(images), config.batch_size)
    state, metrics = jax.jit(steps.train_steps)(state, images, indices)
    assert gan.step == int(state.step) == 10
    assert abs(history[0]["d_loss"] - float(np.mean(metrics["d_loss"]))) < 1e-5
    g_sd, _ = convert.to_torch_state_dict(state)
    for name, value in gan.generator.state_dict().items():
        np.testing.assert_allclose(value.numpy(), g_sd[name].numpy(), atol=1e-5, err_msg=name)


def test_cli_writes_a_pt_that_jaxgan_loads(tmp_path, capsys):
    out = tmp_path / "t.pt"
    assert torch_train.main(["--preset", "tiny", "--max-steps", "2", "--out", str(out)]) == 0
    state = convert.load_pt(out)
    assert state.config.preset == "tiny"
    assert torch_train.main(["--preset", "nope"]) == 2
    assert torch_train.main(["--preset", "tiny", "--max-steps", "0"]) == 2
    assert torch_train.main(["--preset", "tiny", "--out", str(tmp_path / "x.txt")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset" in err and "--max-steps must be positive" in err and "must end in .pt" in err
