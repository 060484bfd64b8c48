"""Files and provenance: atomic writes, checked reads, and what every stored result records.

Every file the package writes goes through :func:`atomic_write` (a temporary file in the same
folder, moved into place in one step), so an interrupted write never leaves half a file. The
readers raise :class:`htnetlib.errors.RunError` naming the file and what is wrong.
:func:`provenance` is the one block of facts (commit, changed files, device, library versions)
that runs, inner stores, leave-one-dataset-out results, timings and fitted models record.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import RunError, one_line

ROOT = Path(__file__).resolve().parent.parent  # the repository (or the installed package's parent)


def file_mode() -> int:
    """The mode a new file gets from the user's umask (0644 under the usual 022).

    :func:`tempfile.mkstemp` makes its files 0600 whatever the umask, which would leave runs
    and models on a shared disk unreadable to colleagues; every atomic write gives its file
    this mode instead, as a plain ``open`` would."""
    try:  # Linux says it without changing it (os.umask would, for a moment, in every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def target_error(exc: OSError, path: Path) -> OSError:
    """``exc`` (a full disk, a read-only folder, ...) as an OSError naming ``path``, the file
    the user asked for, rather than a temporary file or no file at all: ``htnet`` prints it
    as ``<path>: No space left on device`` (exit status 4)."""
    out = OSError(exc.errno, exc.strerror or str(exc) or type(exc).__name__, str(path))
    out.__cause__ = exc
    return out


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one step; the file gets
    the user's umask (:func:`file_mode`). An OSError on the way (a full disk, a read-only
    folder) leaves no temporary file behind and names ``path`` (:func:`target_error`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise target_error(exc, path) from exc
    try:
        write(Path(tmp))
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise target_error(exc, path) from exc
        raise


def write_folder(folder: Path, fill) -> None:
    """Call ``fill(tmp)`` on a new temporary sibling of ``folder`` (``.<name>.<random>``) and
    put it in place of ``folder`` by renaming: a folder already there is renamed aside first
    and removed after, so ``folder`` is at every moment the old whole folder or the new one.
    On any error the temporary folder is removed and ``folder`` left as it was; an OSError
    names the file under ``folder`` it was writing, not the temporary one (a full disk:
    ``<folder>/model.safetensors: No space left on device``)."""
    folder = Path(folder).absolute()
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as exc:
        raise target_error(exc, folder) from exc
    try:
        fill(tmp)
        mode = file_mode()
        os.chmod(tmp, mode | (mode & 0o444) >> 2)  # a folder as mkdir makes it (0755)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(exc, OSError):
            raise
        where = Path(exc.filename) if exc.filename else folder
        if where.is_relative_to(tmp):
            where = folder / where.relative_to(tmp)
        raise target_error(exc, where) from exc


def write_json(path: Path, obj) -> None:
    """``obj`` as indented, key-sorted JSON, written atomically."""
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def write_text(path: Path, text: str) -> None:
    """``text`` written atomically."""
    atomic_write(path, lambda p: p.write_text(text))


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; :class:`RunError` if the file is missing or damaged."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise RunError(f"{path}: not readable as JSON ({one_line(exc)})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: holds a JSON {type(obj).__name__}, expected an object")
    return obj


def read_npz(path: Path, keys: tuple[str, ...] | None = None) -> dict:
    """The arrays ``keys`` (every array if None) of an ``.npz`` file, read into memory.

    :class:`RunError` if the file is missing, damaged or lacks one of them.
    """
    path = Path(path)
    try:
        with np.load(path) as npz:
            missing = [k for k in keys or () if k not in npz.files]
            if missing:
                raise RunError(f"{path}: lacks {', '.join(missing)}")
            return {k: npz[k] for k in (keys or npz.files)}
    except RunError:
        raise
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise RunError(f"{path}: not a readable .npz file ({one_line(exc)})") from None


# --------------------------------------------------------------------------- provenance


def _git(*args: str) -> str | None:
    """The output of ``git ARGS`` run in the package's folder; None outside a git checkout."""
    return git(*args)


def git(*args: str, repo: Path | str | None = None) -> str | None:
    """The output of ``git ARGS`` run in ``repo`` (the package's folder if None); None where
    git fails or is missing (outside a checkout, an unknown commit, a failed test such as
    ``merge-base --is-ancestor`` answering no)."""
    try:
        return subprocess.run(["git", *args], cwd=Path(repo) if repo is not None else
                              Path(__file__).resolve().parent, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def git_dirty_files() -> list[str]:
    """Files that make the working tree differ from the commit ([] if none): tracked files
    that changed, as ``git status`` names them, and untracked files under the package's
    folder (``htnetlib/``; git-ignored ones such as ``__pycache__`` excepted), which the
    package may import although no commit holds them."""
    out = _git("status", "--porcelain", "--untracked-files=no") or ""
    changed = [line[3:] for line in out.splitlines() if line.strip()]
    untracked = _git("ls-files", "--others", "--exclude-standard", "--full-name") or ""
    return changed + sorted(line for line in untracked.splitlines() if line.strip())


# Files under the package's folder that no source hash covers: Python's byte-code caches and
# an in-place install's metadata, which change without the source changing.
SOURCE_HASH_SKIPS = ("__pycache__", ".egg-info")


def source_hash(package: Path | str | None = None) -> str:
    """The first 16 hex digits of the SHA-256 over every file under the package's folder
    (``htnetlib/``, or ``package``): each file's path relative to it and its bytes, in sorted
    order. Tracked, changed and untracked files alike (``*.py`` and package data), byte-code
    caches excepted (:data:`SOURCE_HASH_SKIPS`, ``*.pyc``); without git too."""
    base = Path(package) if package is not None else Path(__file__).resolve().parent
    h = hashlib.sha256()
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix not in (".pyc", ".pyo")
                   and not any(part.endswith(SOURCE_HASH_SKIPS)
                               for part in p.relative_to(base).parts))
    for path in files:
        h.update(path.relative_to(base).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def git_commit() -> str:
    """The project's commit, with ``+dirty`` if the working tree differs; ``unknown`` outside git."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return "unknown"
    return head.strip() + ("+dirty" if git_dirty_files() else "")


def resolve_commit(ref: str, repo: Path | str | None = None) -> str | None:
    """The full hash of the commit ``ref`` names (a hash, a branch, ``HEAD``; a ``+dirty``
    suffix dropped) in ``repo``; None where git cannot find it (outside a checkout, a commit
    this clone lacks, ``unknown``)."""
    ref = str(ref).removesuffix("+dirty")
    out = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", repo=repo)
    return out.strip() if out else None


def commit_time(ref: str, repo: Path | str | None = None) -> datetime.datetime | None:
    """When the commit ``ref`` was made (its committer time, timezone-aware), or None where
    git cannot find it."""
    full = resolve_commit(ref, repo)
    out = git("show", "-s", "--format=%cI", full, repo=repo) if full else None
    return datetime.datetime.fromisoformat(out.strip()) if out else None


def is_shallow(repo: Path | str | None = None) -> bool:
    """Whether ``repo`` is a shallow clone (its history cut off), so that git can confirm that
    one commit descends from another but not deny it."""
    return (git("rev-parse", "--is-shallow-repository", repo=repo) or "").strip() == "true"


def is_ancestor(older: str, newer: str, repo: Path | str | None = None) -> bool | None:
    """Whether the commit ``older`` is ``newer`` or in its history (``git merge-base
    --is-ancestor``); None where git cannot say: either commit missing from ``repo``, or a
    shallow clone answering no (the history that would connect them may be cut off)."""
    a, b = resolve_commit(older, repo), resolve_commit(newer, repo)
    if a is None or b is None:
        return None
    if git("merge-base", "--is-ancestor", a, b, repo=repo) is not None:
        return True
    return None if is_shallow(repo) else False


def now_iso() -> str:
    """The current time in UTC as ISO 8601 to the second (``2026-12-07T04:30:00+00:00``)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    """Versions of Python and the libraries that change what a run computes."""
    import cv2
    import sklearn
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__, "opencv": cv2.__version__}


def device_name(device) -> str:
    """A device in words: ``cuda (NVIDIA H200)`` or ``cpu (x86_64, 2 cores)``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({platform.processor() or platform.machine()}, "\
           f"{os.cpu_count()} cores)"


def provenance(device=None, *, dirty: bool = True) -> dict:
    """What every stored result records about how it was made: ``git_commit``, ``versions``,
    ``device`` (where given) and, for a changed working tree, ``git_dirty_files``."""
    out = {"git_commit": git_commit(), "versions": versions()}
    if device is not None:
        out["device"] = device_name(device)
    changed = git_dirty_files() if dirty else []
    if changed:
        out["git_dirty_files"] = changed
    return out
