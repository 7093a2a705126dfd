"""What jaxgan does to the environment it runs in: without an optional dependency its commands
say what to install (one line, exit 2), and using it leaves global state (absl's log level) alone."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from jaxgan import data as data_lib

ROOT = Path(__file__).resolve().parents[1]

# Runs each command as `python -m` would (runpy, its package imported first), torch hidden.
WITHOUT_TORCH = """
import contextlib, io, json, runpy, sys
sys.modules["torch"] = None  # import torch now fails as if torch were not installed
results = []
for module, argv in json.loads(sys.argv[1]):
    sys.argv = [module, *argv]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as exit:
            status = exit.code
    results.append([module, status, err.getvalue()])
print(json.dumps(results))
"""


def test_without_torch_every_command_that_needs_it_says_what_to_install(tmp_path):
    (tmp_path / "g.pt").write_bytes(b"weights")
    commands = [
        ("jaxgan.convert", ["run", "out.pt"]),
        ("jaxgan.generate", ["--from-pt", "g.pt"]),
        ("jaxgan.evaluate", ["--from-pt", "g.pt"]),
        ("torch_ref.train", ["--max-steps", "1"]),
        ("benchmarks.throughput", ["--quick"]),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, json.dumps(commands)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.splitlines()[-1])
    assert [module for module, _, _ in results] == [module for module, _ in commands]
    for module, status, err in results:
        line = f"python -m {module}: error: this needs torch, which is not installed: pip install -e '.[torch]'\n"
        assert (status, err) == (2, line), (module, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.pt"]  # nothing written


def test_tfds_leaves_absls_log_level_as_it_was(tmp_path, caplog):
    absl_logger = logging.getLogger("absl")
    before = absl_logger.level
    builder = data_lib.tfds_builder("mnist", str(tmp_path))
    assert not data_lib.tfds_prepared(builder)
    assert absl_logger.level == before
    assert not [r for r in caplog.records if "dataset_info" in r.getMessage()]  # TFDS's warning, kept quiet
