"""What every command shares: argument types and the one check of a device, threads and an
output folder. torch is imported only inside the checks that need it, so ``htnet --help`` stays
fast."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EXIT_RUNTIME, UsageError

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


def check_out(text: str) -> Path:
    """The runs folder ``text`` if it is, or can be made, a writable folder; else UsageError."""
    path = Path(text)
    existing = path.absolute()
    while not existing.exists():  # the nearest folder that exists (a file stops it too)
        existing = existing.parent
    if not existing.is_dir():
        where = "it" if existing == path.absolute() else str(existing)
        raise UsageError(f"--out {text}: {where} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {text}: {existing} is not writable", EXIT_RUNTIME)
    return path



def set_threads(threads: int) -> None:
    """torch's intra-op threads (0 keeps torch's default)."""
    if threads < 0:
        raise UsageError(f"--threads {threads}: must be 0 (torch's default) or more")
    if threads:
        import torch

        torch.set_num_threads(threads)
