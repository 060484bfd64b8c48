"""What every command shares: argument types and the one check of a device, threads and an
output folder. torch is imported only inside the checks that need it, so ``htnet --help`` stays
fast."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import EXIT_RUNTIME, EXIT_USAGE, UsageError
from ..config import MODELS

def whole_number(minimum: int):
    """An argparse type: a whole number of at least ``minimum`` (``--workers``, ``--threads``,
    grid job sizes); anything else is a one-line usage error."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {minimum}")
        return value

    return parse


BUILT_IN_MODELS = MODELS


def model_name(text: str) -> str:
    """An argparse type for ``--model``: htnet, ststnet, logreg, or a user's factory
    ``package.module:callable`` (its format only; the import is checked before training)."""
    import argparse

    from ..config import is_user_model

    if text in BUILT_IN_MODELS or is_user_model(text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(BUILT_IN_MODELS)}, "
                                     "nor a factory package.module:callable")


def check_device(text: str | None) -> str | None:
    """``text`` if it names a device torch can use here (cpu, cuda, cuda:N, mps), else UsageError."""
    if text is None:
        return None
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {text!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {text}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {text}: this machine has {count} CUDA device(s)")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if not (mps and mps.is_available()):
            raise UsageError(f"--device {text}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise UsageError(f"--device {text!r}: htnet trains on cpu, cuda or mps")
    return text


def check_out(text: str, flag: str = "--out", writable: bool = True) -> Path:
    """The folder ``text`` (given as ``flag``) if it is, or can be made, a folder; else
    UsageError. With ``writable`` it must also be writable (:func:`check_writable`)."""
    path = Path(text)
    existing = path.absolute()
    while not existing.exists():  # the nearest folder that exists (a file stops it too)
        existing = existing.parent
    if not existing.is_dir():
        where = "it" if existing == path.absolute() else str(existing)
        raise UsageError(f"{flag} {text}: {where} is a file, not a folder")
    if writable:
        check_writable(path, flag)
    return path


def check_writable(path: Path, flag: str = "--out") -> None:
    """UsageError with exit status 4 (runtime) unless ``path``, or the nearest folder above it
    that exists, is writable. Called only once something must be written: a finished run is
    read from a read-only folder without it."""
    existing = Path(path).absolute()
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {existing} is not writable", EXIT_RUNTIME)


def set_threads(threads: int) -> None:
    """torch's intra-op threads (0 keeps torch's default)."""
    if threads < 0:
        raise UsageError(f"--threads {threads}: must be 0 (torch's default) or more")
    if threads:
        import torch

        torch.set_num_threads(threads)


class OneLineParser(argparse.ArgumentParser):
    """argparse with a usage error as one line, ``<name>: error: ...``, and exit status 2.

    ``name`` is what the line starts with (default: the first word of ``prog``, so ``htnet``
    for every ``htnet`` subcommand)."""

    def __init__(self, *args, name: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = name or self.prog.split()[0]

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.name}: error: {message} (see {self.prog} --help)\n")
