"""``python -m htnetlib.cli``: the ``htnet`` command."""

import sys

from .app import main

sys.exit(main())
