"""``python -m lmforge``: the ``lmforge`` command (:mod:`lmforge.console`)."""

import sys

from lmforge.console import main

if __name__ == "__main__":
    sys.exit(main())
