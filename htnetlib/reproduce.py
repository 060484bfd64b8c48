"""``python -m htnetlib.reproduce``: the same as ``make reproduce`` (:mod:`htnetlib.cli.reproduce`)."""

import sys

from .cli.reproduce import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
