"""`python -m jaxgan` is `python -m jaxgan.train`."""

import sys

from jaxgan.main import main

sys.exit(main())
