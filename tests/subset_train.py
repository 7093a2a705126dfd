"""`python -m jaxgan.train` on the first JAXGAN_TEST_IMAGES images of each dataset, for fast subprocess tests.

Usage: python tests/subset_train.py 'FLAGS OF RUN 1' ['FLAGS OF RUN 2' ...]: runs the CLI once per
argument in this one process (one JAX start-up for all), printing `exit STATUS` after each.
"""

import os
import shlex
import sys

from jaxgan import cli
from jaxgan import data as data_lib

_load = data_lib.load


def load_subset(*args, **kwargs) -> data_lib.Dataset:
    dataset = _load(*args, **kwargs)
    n = int(os.environ["JAXGAN_TEST_IMAGES"])
    return dataset._replace(images=dataset.images[:n], labels=dataset.labels[:n])


if __name__ == "__main__":
    data_lib.load = load_subset  # the loop looks it up on the module
    for flags in sys.argv[1:]:
        status = cli.main(shlex.split(flags))
        print(f"exit {status}", flush=True)
