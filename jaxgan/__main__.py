"""`python -m jaxgan` is `python -m jaxgan.train`."""

import sys

from jaxgan.cli import main

sys.exit(main())
