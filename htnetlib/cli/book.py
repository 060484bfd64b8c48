"""Render the book: ``python -m htnetlib.cli.book --out DIR`` (``make book``: ``_build/book/``).

The committed notebooks, as executed, become a static HTML site in DIR: the README as the front
page (``index.html``), a contents page in the paper's order and a page per notebook, each with
previous / contents / next links (:mod:`htnetlib.study.book`). Nothing is executed.

Exit status: 0 done, 2 a bad argument, 3 a notebook or the README is missing or unreadable,
4 DIR is not writable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import EXIT_DATA, EXIT_USAGE, UsageError
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

    try:
        index = build_book(check_out(args.out))
    except UsageError as exc:
        print(f"book: error: {exc}", file=sys.stderr)
        return exc.code
    except (FileNotFoundError, ValueError) as exc:  # a notebook or the README missing or bad
        print(f"book: error: {exc}", file=sys.stderr)
        return EXIT_DATA
    pages = sorted(p.name for p in Path(index).parent.glob("*.html"))
    print(f"{len(pages)} pages in {index.parent}\nopen {index}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
