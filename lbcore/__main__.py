"""``python -m lbcore``: the ``lbcore`` command; see `lbcore.cli`."""

import sys

from .cli import main

if __name__ == "__main__":  # not when a test collector imports the module
    sys.exit(main())
