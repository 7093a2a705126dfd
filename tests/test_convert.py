"""jaxgan.convert: torch_ref state dicts, .pt files and run directories, both ways, bit for bit."""

import jax
import numpy as np
import pytest

from jaxgan import checkpoint, convert, generate, models, rundir, steps
from jaxgan.config import PRESETS, preset

torch = pytest.importorskip("torch")
import torch_ref  # noqa: E402


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def random_variables(config, net: str, seed: int = 0) -> dict:
    """Variables of `config`'s network with random values everywhere, running stats and counters included."""
    rng = np.random.default_rng(seed)
    g_shapes, d_shapes = jax.eval_shape(lambda: models.init_variables(config, jax.random.key(0)))

    def fill(s):
        if s.dtype == np.int32:
            return np.asarray(rng.integers(0, 2**31 - 1), np.int32)
        return rng.normal(size=s.shape).astype(np.float32)

    return jax.tree.map(fill, g_shapes if net == "generator" else d_shapes)


@pytest.mark.parametrize("name", list(PRESETS))
def test_variables_round_trip_is_bit_identical_and_loads_into_torch_ref(name):
    """Every preset, conditional and not: params, running stats and num_batches_tracked, both ways."""
    for conditional in (False, True):
        config = preset(name).replace(conditional=conditional)
        G, D = torch_ref.build_models(config)
        for net, module in (("generator", G), ("discriminator", D)):
            variables = random_variables(config, net)
            sd = convert.variables_to_state_dict(config, net, variables)
            module.load_state_dict(sd)  # strict: every key and shape is torch_ref's
            back = convert.state_dict_to_variables(config, net, module.state_dict())
            assert jax.tree.structure(back) == jax.tree.structure(variables)
            for a, b in zip(leaves(variables), leaves(back), strict=True):
                assert a.dtype == b.dtype and np.array_equal(a, b)
            counters = [k for k in sd if k.endswith("num_batches_tracked")]
            assert all(sd[k].dtype == torch.int64 for k in counters)
            assert len(counters) == (
                2 if config.arch == "dcgan" and net == "generator" else int(config.arch == "dcgan")
            )


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, c in PRESETS.items() if c.arch == "mlp"])
def test_state_round_trip_is_bit_identical_and_loads_into_torch_ref(name):
    config = preset(name)
    state = steps.create_state(config, 3)
    g_sd, d_sd = convert.to_torch_state_dict(state)
    G, D = torch_ref.build_models(config)
    G.load_state_dict(g_sd)  # strict: every key and shape is torch_ref's
    D.load_state_dict(d_sd)
    back = convert.from_torch_state_dict(config, G.state_dict(), D.state_dict())
    for a, b in zip(leaves((state.g_params, state.d_params)), leaves((back.g_params, back.d_params)), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_converted_networks_compute_the_same_functions(tiny_config):
    state = steps.create_state(tiny_config, 0)
    G, D = torch_ref.build_models(tiny_config)
    g_sd, d_sd = convert.to_torch_state_dict(state)
    G.load_state_dict(g_sd)
    D.load_state_dict(d_sd)
    z = np.random.default_rng(0).normal(size=(8, tiny_config.latent_dim)).astype(np.float32)
    images = np.asarray(models.generate(tiny_config, state.g_params, z))  # (8, 28, 28, 1)
    with torch.no_grad():
        torch_images = G(torch.from_numpy(z)).numpy().transpose(0, 2, 3, 1)
        torch_d = D(torch.tensor(images.transpose(0, 3, 1, 2))).numpy()[:, 0]
    np.testing.assert_allclose(images, torch_images, atol=1e-6)
    d = np.asarray(jax.nn.sigmoid(models.discriminate(tiny_config, state.d_params, images)))
    np.testing.assert_allclose(d, torch_d, atol=1e-6)


def test_wrong_shape_missing_and_extra_keys_are_clear_errors():
    small, wide = preset("small"), preset("wide")
    g_sd, d_sd = convert.to_torch_state_dict(steps.create_state(small, 0))
    with pytest.raises(
        ValueError, match=r"generator net\.0\.weight has shape \(128, 100\), preset wide expects \(256, 64\)"
    ):
        convert.from_torch_state_dict(wide, g_sd, d_sd)
    missing = {k: v for k, v in d_sd.items() if k != "net.2.bias"}
    with pytest.raises(ValueError, match=r"discriminator state dict lacks 'net\.2\.bias'"):
        convert.from_torch_state_dict(small, g_sd, missing)
    with pytest.raises(ValueError, match=r"unexpected key 'net\.4\.weight'"):
        convert.from_torch_state_dict(small, g_sd, {**d_sd, "net.4.weight": d_sd["net.2.weight"]})


def test_dcgan_state_dict_errors_name_the_key():
    config = preset("tiny-dcgan")
    g_sd = convert.variables_to_state_dict(config, "generator", random_variables(config, "generator"))
    d_sd = convert.variables_to_state_dict(config, "discriminator", random_variables(config, "discriminator"))
    cases = {
        "generator": [
            (
                {k: v for k, v in g_sd.items() if k != "net.4.running_var"},
                r"generator state dict lacks 'net\.4\.running_var'",
            ),
            (
                {**g_sd, "net.3.weight": g_sd["net.3.weight"][:, :4]},
                r"generator net\.3\.weight has shape \(16, 4, 4, 4\), preset tiny-dcgan expects \(16, 8, 4, 4\)",
            ),
            (
                {**g_sd, "net.1.running_mean": g_sd["net.1.running_mean"].double()},
                r"generator net\.1\.running_mean has dtype float64, expected float32",
            ),
            (
                {**g_sd, "net.1.num_batches_tracked": torch.tensor(1.0)},
                r"generator net\.1\.num_batches_tracked must be a non-negative int32-sized integer",
            ),
            (
                {**g_sd, "net.1.num_batches_tracked": torch.tensor(2**40)},
                r"net\.1\.num_batches_tracked must be a non-negative int32-sized integer",
            ),
            (
                {**g_sd, "net.2.weight": g_sd["net.0.weight"]},
                r"generator state dict has unexpected key 'net\.2\.weight'",
            ),
        ],
        "discriminator": [
            (
                {k: v for k, v in d_sd.items() if k != "net.3.num_batches_tracked"},
                r"discriminator state dict lacks 'net\.3\.num_batches_tracked'",
            ),
        ],
    }
    for net, bad in cases.items():
        for sd, message in bad:
            with pytest.raises(ValueError, match=message):
                convert.state_dict_to_variables(config, net, sd)
    # Parameters only (gradients, Adam moments): the buffers are not expected there.
    with pytest.raises(ValueError, match=r"unexpected key 'net\.1\.num_batches_tracked'"):
        convert.state_dict_to_params(config, "generator", g_sd)
    params_only = {k: v for k, v in g_sd.items() if "running" not in k and "num_batches" not in k}
    params = convert.state_dict_to_params(config, "generator", params_only)
    assert set(params["net"]) == {
        "conv_transpose_0",
        "batch_norm_0",
        "conv_transpose_1",
        "batch_norm_1",
        "conv_transpose_2",
    }
    # A training state holds the running statistics, exactly.
    state = convert.from_torch_state_dict(config, g_sd, d_sd)
    back_g, back_d = convert.to_torch_state_dict(state)
    for sd, back in ((g_sd, back_g), (d_sd, back_d)):
        assert set(back) == set(sd)
        for key, tensor in sd.items():
            assert torch.equal(back[key].to(tensor.dtype), tensor), key


@pytest.fixture
def tiny_rundir(tmp_path, tiny_config):
    """A run directory with one checkpoint (epoch 1) of a tiny state after one step."""
    state = steps.create_state(tiny_config, 5)
    real = jax.numpy.zeros((tiny_config.batch_size, 28, 28, 1))
    state, _ = jax.jit(steps.train_step_keyed)(state, real)
    with checkpoint.Checkpointer(tmp_path / "run") as c:
        c.save(state, 1, dataset="mnist-5k", num_examples=5000)
        c.wait()
    return tmp_path / "run", state


def test_cli_rundir_to_pt_to_rundir_and_generate(tiny_rundir, tmp_path, capsys):
    rundir, state = tiny_rundir
    pt = tmp_path / "g.pt"
    assert convert.main([str(rundir), str(pt)]) == 0
    blob = torch.load(pt, weights_only=True)
    assert blob["config"] == state.config.to_dict()
    assert convert.main([str(pt), str(tmp_path / "back")]) == 0
    back = checkpoint.load_state(tmp_path / "back")
    for a, b in zip(leaves((state.g_params, state.d_params)), leaves((back.g_params, back.d_params)), strict=True):
        assert np.array_equal(a, b)
    # The same images from the run, the converted run and the .pt file.
    outs = [tmp_path / f"{i}.npy" for i in range(3)]
    assert generate.main(["--workdir", str(rundir), "--num", "4", "--out", str(outs[0])]) == 0
    assert generate.main(["--workdir", str(tmp_path / "back"), "--num", "4", "--out", str(outs[1])]) == 0
    assert generate.main(["--from-pt", str(pt), "--num", "4", "--out", str(outs[2])]) == 0
    images = [np.load(o) for o in outs]
    assert np.array_equal(images[0], images[1]) and np.array_equal(images[0], images[2])


def test_converting_into_a_directory_a_run_holds_is_refused_and_changes_nothing(tiny_rundir, tmp_path, capsys):
    rundir_path, _ = tiny_rundir
    pt = tmp_path / "g.pt"
    assert convert.main([str(rundir_path), str(pt)]) == 0
    live = tmp_path / "live"  # a run that is starting: it holds the lock and has written its config
    live.mkdir()
    (live / "config.json").write_text("the run's own config")
    run = rundir.RunDir(live)
    run.lock()
    try:
        capsys.readouterr()
        assert convert.main([str(pt), str(live), "--force"]) == 2
        err = capsys.readouterr().err
        assert "is in use by another run (PID" in err and err.count("\n") == 1, err
        assert err.rstrip().endswith("wait for it to finish, or use another target directory"), err
        assert (live / "config.json").read_text() == "the run's own config" and not checkpoint.epochs_in(live)
    finally:
        run.release()
    assert convert.main([str(pt), str(live), "--force"]) == 0  # the run has ended: --force writes into it
    assert checkpoint.epochs_in(live) == [0]
    assert convert.main([str(pt), str(tmp_path / "fresh")]) == 0  # its own lock file makes no directory non-empty


def test_cli_bad_input_exits_2_in_one_line(tiny_rundir, tmp_path, capsys):
    rundir, _ = tiny_rundir
    pt = tmp_path / "g.pt"
    assert convert.main([str(rundir), str(pt)]) == 0
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a pickle")
    cases = {
        (str(tmp_path / "nope"), str(pt)): "does not exist",
        (str(rundir), str(tmp_path / "x.txt")): "must be a .pt file",
        (str(junk), str(tmp_path / "d1")): "cannot read",
        (str(pt), str(tmp_path / "d2"), "--preset", "small"): "preset small expects",
        (str(pt), str(rundir)): "already holds checkpoints",
    }
    for argv, message in cases.items():
        capsys.readouterr()
        assert convert.main(list(argv)) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert generate.main(["--from-pt", str(junk)]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["small", "dcgan"])
def test_torch_weight_is_the_state_dicts_layout(name):
    """convert.torch_weight (torch_ref.classifier's and benchmarks' conversion of a lone kernel)
    gives every Dense, Conv and ConvTranspose kernel exactly as the state dict holds it."""
    config = preset(name)
    for net in convert.NETS:
        variables = random_variables(config, net)
        sd = convert.variables_to_state_dict(config, net, variables)
        for layer in convert.torch_layout(config, net):
            if layer.kind in ("linear", "conv"):
                kernel = variables["params"]["net"][layer.flax]["kernel"]
                np.testing.assert_array_equal(convert.torch_weight(kernel), sd[f"{layer.torch}.weight"].numpy())
