"""`python -m jaxgan.train` on the first JAXGAN_TEST_IMAGES images of each dataset, for fast subprocess tests.

Usage: python tests/subset_train.py 'FLAGS OF RUN 1' ['FLAGS OF RUN 2' ...]: runs the CLI once per
argument in this one process (one JAX start-up for all), printing `exit STATUS` after each; the
process exits with the last one's status.
"""

import os
import shlex
import sys

from jaxgan import data as data_lib
from jaxgan import main


def load_subset(*args, **kwargs) -> data_lib.Dataset:
    dataset = data_lib.load(*args, **kwargs)
    n = int(os.environ["JAXGAN_TEST_IMAGES"])
    return dataset._replace(images=dataset.images[:n], labels=dataset.labels[:n])


if __name__ == "__main__":
    status = 0
    for flags in sys.argv[1:]:
        status = main.main(shlex.split(flags), load_dataset=load_subset)
        print(f"exit {status}", flush=True)
    sys.exit(status)
