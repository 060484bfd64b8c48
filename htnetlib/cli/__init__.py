"""The command line: ``htnet`` (:mod:`~htnetlib.cli.app`), ``htnet grid``
(:mod:`~htnetlib.cli.grid`), ``make reproduce`` (:mod:`~htnetlib.cli.reproduce`), and the options
of every command. All argument parsing and terminal printing of the package live here."""

from .app import build_parser, main

__all__ = ["main", "build_parser"]
