"""The errors a user can cause, and the one table of exit statuses they map to.

Every module raises one of these with a message that names the file or value and what is wrong;
``htnet`` (:mod:`htnetlib.cli`) prints that message as one line and exits with
:func:`exit_code` of the error:

    0    success
    1    a check found problems (``htnet data check``), or a user's own network
         (``--model package.module:factory``) failed: :class:`UserModelError`
    2    usage: a bad argument or configuration value; nothing has been trained or written
    3    data: a missing, unreadable or corrupt input file, release, run or model folder,
         a frame that shows no face
    4    runtime: training failed (e.g. a NaN loss), the device or the CPU allocator is out
         of memory (:func:`out_of_memory`) or the device fails, the output folder is not
         writable (only when something must be written to it), or an OS error while writing
         (a full disk; :func:`htnetlib.io.target_error` names the file)
    5    refused: the missing runs would exceed the time budget on this device
    70   internal error: a bug in htnetlib; its traceback is printed, please report it
    130  interrupted (Ctrl-C); an interrupted training resumes where it stopped
    141  the reader of the output left (``htnet grid --dry-run | head -1``): no message

``--debug`` (or ``HTNET_DEBUG=1``) adds the traceback and keeps these statuses.
"""

from __future__ import annotations

import re

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_DATA, EXIT_RUNTIME, EXIT_REFUSED = 0, 1, 2, 3, 4, 5
EXIT_BUG, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 70, 130, 141
# Words in an allocator's RuntimeError (torch's CPU and CUDA allocators, MPS) that mean the
# memory ran out, not that the code is wrong.
OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "cannot allocate memory",
                 "not enough memory")
# Words in a RuntimeError of torch that mean the device failed, not the code.
DEVICE_FAILURES = OUT_OF_MEMORY + ("cuda error", "cudnn_status", "cublas_status", "mps backend")


class DataError(ValueError):
    """A problem with the data release or an input file; the message names the file."""


class ConfigError(ValueError):
    """A configuration value of the wrong type or out of range; the message names the key."""


class TrainingError(RuntimeError):
    """Training went wrong (for example a NaN loss); the message names the fold and epoch."""


class RunError(DataError):
    """A run folder that is missing, unfinished or damaged; the message names the file."""


class UserModelError(Exception):
    """A user's own network (``--model package.module:factory``) failed while training: the
    message names the factory and the fold, ``details`` holds the traceback of the user's
    code (a string, so that it survives the trip from a worker process)."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message, details)
        self.details = details

    def __str__(self) -> str:
        return self.args[0]


class UsageError(Exception):
    """A bad command-line argument found by a command's own checks, with its exit status."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def exit_code(exc: BaseException) -> int | None:
    """The exit status ``exc`` means (table above); None for an unexpected error (a bug)."""
    if isinstance(exc, UsageError):
        return exc.code
    if isinstance(exc, UserModelError):
        return EXIT_PROBLEMS
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, (DataError, FileNotFoundError)):
        return EXIT_DATA
    if isinstance(exc, (TrainingError, MemoryError, OSError)):
        return EXIT_RUNTIME
    if isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in DEVICE_FAILURES):
        return EXIT_RUNTIME
    return None


def out_of_memory(exc: BaseException) -> str | None:
    """``out of memory`` and the size asked for where the message gives one (``out of memory
    (tried to allocate 547.6 GiB)``) if ``exc`` is a MemoryError or an allocator's
    RuntimeError; None for any other error."""
    text = str(exc)
    if not isinstance(exc, MemoryError) and not (
            isinstance(exc, RuntimeError) and any(w in text.lower() for w in OUT_OF_MEMORY)):
        return None
    size = re.search(r"allocate (\d+) bytes", text)  # torch's CPU allocator
    if size:
        n, unit = float(size.group(1)), "bytes"
        for bigger in ("KiB", "MiB", "GiB", "TiB", "PiB"):
            if n < 1024:
                break
            n, unit = n / 1024, bigger
        what = f"{n:.0f} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
    else:  # CUDA's "Tried to allocate 2.00 GiB", numpy's "Unable to allocate 5.0 GiB for ..."
        size = re.search(r"allocate (\d+(?:\.\d+)? ?[KMGTP]i?B)", text, re.IGNORECASE)
        what = size.group(1) if size else None
    lower = text.lower()
    device = "CUDA " if "cuda" in lower else "MPS " if "mps" in lower else ""
    return f"{device}out of memory" + (f" (tried to allocate {what})" if what else "")


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and message."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class StoreWarning(UserWarning):
    """Something the run store or a trainer did on its own that the user should know about: a
    damaged fold file set aside and trained again, a wait on another process's lock, a group of
    folds halved after running out of memory. ``htnet`` shows each as one line."""
