"""Build the book: ``python -m htnetlib.cli.book --out DIR`` (``make book``: ``_build/book/``).

The README, the docs pages and the committed notebooks, as executed, become a Jupyter Book in
DIR (:mod:`htnetlib.study.book`): a sidebar with every page, search, each page's contents,
equations as MathML and code folded above its outputs; nothing is executed and nothing is
fetched from the network when it is read. Open DIR/index.html.

Exit status: 0 done, 2 a bad argument, 3 a notebook or the README is missing or unreadable, or
the book did not build, 4 DIR is not writable, or the ``book`` extra is not installed
(``pip install -e '.[book]'``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import EXIT_DATA, EXIT_RUNTIME, EXIT_USAGE, UsageError
from .common import OneLineParser, check_out


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="python -m htnetlib.cli.book", name="book", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="_build/book",
                    help="folder of the site, made if needed (default _build/book)")
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error argparse has printed (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    from ..study.book import build_book

    start = time.perf_counter()
    try:
        index = build_book(check_out(args.out))
    except UsageError as exc:
        print(f"book: error: {exc}", file=sys.stderr)
        return exc.code
    except ImportError as exc:  # the book extra is missing
        print(f"book: error: {exc.name or exc} is not installed; pip install -e '.[book]' "
              "(make book installs it)", file=sys.stderr)
        return EXIT_RUNTIME
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # a missing or bad source
        print(f"book: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_DATA
    pages = sorted(Path(index).parent.rglob("*.html"))
    print(f"{len(pages)} pages in {index.parent} ({time.perf_counter() - start:.1f} s)\n"
          f"open {index}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
