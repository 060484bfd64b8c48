"""The official preprocessed release of the composite benchmark (paper section 4.1, Table 1).

Layout of a release folder (the official HTNet repository's, and what ``htnet preprocess``
writes)::

    combined_3_class2_for_optical_flow.csv          dataset, sub, filename_o, label, ...
    datasets/STSNet_whole_norm_u_v_os/<sub>_<filename_o> .png   28x28x3 flow map (note the space)
    datasets/combined_datasets_whole/<imagename>                224x224 apex face (JPEG)

Flow maps are kept as ``cv2.imread`` returns them, which is the array the official code trains
on: the PNGs hold (u, v, strain) as RGB, so the channels in memory are (strain, v, u).
``load_composite`` validates everything it reads and raises :class:`DataError` with the
file or value at fault, and records in ``Composite.manifest_status`` whether the files match
the SHA-256 manifest shipped in this package (:data:`MANIFEST`, the reference for every
check); ``check_release`` compares a folder against the published counts and that manifest,
and checks the folder's own ``SHA256SUMS`` for consistency with both; ``fetch`` downloads
the release from GitHub.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..errors import DataError
from ..io import ROOT


class ReleaseWarning(UserWarning):
    """The folder has the official release's files, but some differ from the manifest."""


CSV_NAME = "combined_3_class2_for_optical_flow.csv"
FLOW_DIR = "datasets/STSNet_whole_norm_u_v_os"
APEX_DIR = "datasets/combined_datasets_whole"
CSV_COLUMNS = ("dataset", "sub", "filename_o", "label", "imagename")
DATASETS = ("smic", "casme2", "samm", "casme3a")
LABELS = {0: "negative", 1: "positive", 2: "surprise"}
DATASET_NAMES = {"full": "Full", "smic": "SMIC", "casme2": "CASME II", "samm": "SAMM",
                 "casme3a": "CAS(ME)^3 A"}
# Table 1 of the paper: negative / positive / surprise per dataset of the composite.
EXPECTED_COUNTS = {"smic": (70, 51, 43), "casme2": (88, 32, 25), "samm": (92, 26, 15)}
EXPECTED_SAMPLES = 442
EXPECTED_SUBJECTS = 68

OFFICIAL_REPO = "wangzhifengharrison/HTNet"
OFFICIAL_COMMIT = "91cf4bda0a2db50d638d46c04c5d7cf3b602d446"
OFFICIAL_URL = f"https://github.com/{OFFICIAL_REPO}/archive/{OFFICIAL_COMMIT}.zip"
MANIFEST = Path(__file__).with_name("release_manifest.sha256")
FOLDER_SUMS = "SHA256SUMS"  # a release folder's own checksum list (checked, never trusted)
FLOW_SIZE = 28  # the release's flow maps are FLOW_SIZE x FLOW_SIZE x 3 uint8


@dataclass
class Composite:
    """A loaded release: one table row and one flow map per sample, in the CSV's order.

    ``manifest_status`` says how the files read compare with the package manifest:
    "matches the manifest", "differs from the manifest in N file(s): <first>", or, for data
    that is not the official release, "no manifest entry (not the official release)" or
    "not the official release: N of M files have no manifest entry, e.g. <first>";
    "not checked" where the object was built by hand rather than by :func:`load_composite`.
    """

    root: Path
    table: pd.DataFrame
    flows: np.ndarray = field(repr=False)  # (N, H, W, 3) uint8
    manifest_status: str = "not checked"

    def __len__(self) -> int:
        return len(self.table)


REPOSITORY_DATA = ROOT / "data"


def resolve_root(root: Path | str | None = None) -> Path:
    """The release folder: ``root`` if given, else ``$HTNET_DATA``, else the repository's
    ``data/`` (where ``htnet data fetch`` puts it). The one rule for the CLI, the notebooks
    (whichever folder they run in) and the library."""
    if root:
        return Path(root)
    if os.environ.get("HTNET_DATA"):
        return Path(os.environ["HTNET_DATA"])
    return REPOSITORY_DATA


def default_root() -> Path:
    """:func:`resolve_root` without an argument: ``$HTNET_DATA``, else the repository's
    ``data/``."""
    return resolve_root()


def complete_image(path: Path, *, other_formats: bool = False) -> bytes:
    """The bytes of a PNG or JPEG file, checked to be present and not truncated.

    With ``other_formats``, files of other formats (BMP, TIFF frames) pass unchecked.
    """
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not an image file")
    if not path.is_file():
        raise DataError(f"{path}: file is missing")
    data = path.read_bytes()
    if not data:
        raise DataError(f"{path}: file is empty")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-12:]:
            raise DataError(f"{path}: PNG is truncated (no IEND chunk at the end)")
    elif data[:2] == b"\xff\xd8":
        if b"\xff\xd9" not in data[-4:]:
            raise DataError(f"{path}: JPEG is truncated (no end-of-image marker)")
    elif not other_formats:
        raise DataError(f"{path}: not a PNG or JPEG file")
    return data


def read_image(path: Path | str, shape: tuple[int, ...] | None = None, *,
               any_format: bool = False) -> np.ndarray:
    """Read an image as ``cv2.imread`` does (BGR uint8), validating it and its shape.

    The one image reader: the release's apex faces, raw frames (``htnet preprocess``) and the
    frames given to ``htnet predict``. PNG and JPEG files are checked for truncation
    (:func:`complete_image`); with ``any_format`` other formats OpenCV reads (SMIC's BMP frames,
    TIFF) are decoded unchecked, else refused.
    """
    path = Path(path)
    checked = path.suffix.lower() in (".png", ".jpg", ".jpeg")  # a named PNG or JPEG must be one
    raw = complete_image(path, other_formats=any_format and not checked)
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise DataError(f"{path}: OpenCV cannot decode this image")
    img = eight_bit(img, path)
    if shape is not None and img.shape != tuple(shape):
        raise DataError(f"{path}: image shape {img.shape}, expected {tuple(shape)}")
    return img


def eight_bit(img: np.ndarray, path: Path) -> np.ndarray:
    """A decoded image as uint8. A 16-bit image is scaled by its real range, the fewest bits
    (8, 10, 12, 14 or 16) that hold its largest value, so a 16-bit PNG holding 0..255 keeps
    its values (OpenCV's own conversion would divide them by 256, to black); one of a single
    value, or a floating-point image, is refused as holding no picture of a face."""
    if img.dtype == np.uint8:
        return img
    if img.dtype != np.uint16:
        raise DataError(f"{path}: a {img.dtype} image; expected 8 or 16 bits per channel")
    low, high = int(img.min()), int(img.max())
    if low == high:
        raise DataError(f"{path}: a 16-bit image of the single value {high}, no picture")
    bits = next(b for b in (8, 10, 12, 14, 16) if high < 2 ** b)
    return np.round(img.astype(np.float32) * (255 / (2 ** bits - 1))).astype(np.uint8)


def read_flow(path: Path | str, size: int = FLOW_SIZE) -> np.ndarray:
    """Read a flow map, refusing anything but a ``size`` x ``size`` x 3 uint8 image.

    The file is decoded as stored (not converted by OpenCV), so a grey, 16-bit or
    four-channel PNG is reported rather than silently turned into a 3-channel uint8 map.
    """
    path = Path(path)
    img = cv2.imdecode(np.frombuffer(complete_image(path), np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{path}: OpenCV cannot decode this image")
    if img.shape != (size, size, 3) or img.dtype != np.uint8:
        found = "x".join(str(n) for n in img.shape)
        raise DataError(f"{path}: flow map is {found} {img.dtype}, expected "
                        f"{size}x{size}x3 uint8")
    return img


def read_table(root: Path | str) -> pd.DataFrame:
    """The validated sample table of a release folder (no images read)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist; set HTNET_DATA or pass --data")
    csv = root / CSV_NAME
    if not csv.is_file():
        raise DataError(f"{csv}: annotation CSV is missing")
    try:
        raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises several types for unreadable files
        raise DataError(f"{csv}: cannot be read as CSV ({exc})") from exc
    missing = [c for c in CSV_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"{csv}: missing column(s) {', '.join(missing)}")
    if raw.empty:
        raise DataError(f"{csv}: no samples (the CSV has a header but no rows)")
    rows = []
    for i, r in raw.iterrows():
        where = f"{csv} row {i + 2}"
        if r["dataset"] not in DATASETS:
            raise DataError(f"{where}: unknown dataset {r['dataset']!r} (expected one of {DATASETS})")
        if r["label"].strip() not in {"0", "1", "2"}:
            raise DataError(f"{where}: unknown label {r['label']!r} (expected 0, 1 or 2)")
        if not r["sub"] or not r["filename_o"] or not r["imagename"]:
            raise DataError(f"{where}: empty sub, filename_o or imagename")
        rows.append({
            "dataset": r["dataset"], "subject": r["sub"], "sample": r["filename_o"],
            "label": int(r["label"]),
            "flow_path": f"{FLOW_DIR}/{r['sub']}_{r['filename_o']} .png",
            "apex_path": f"{APEX_DIR}/{r['imagename']}",
        })
    table = pd.DataFrame(rows, columns=["dataset", "subject", "sample", "label",
                                        "flow_path", "apex_path"])
    dup = table.duplicated(["dataset", "subject", "sample"], keep=False)
    if dup.any():
        first = table[dup].iloc[0]
        raise DataError(f"{csv}: duplicate sample {first['dataset']}/{first['subject']}/"
                        f"{first['sample']} ({int(dup.sum())} rows)")
    shared = table.groupby("subject")["dataset"].nunique()
    if (shared > 1).any():
        raise DataError(f"{csv}: subject {shared[shared > 1].index[0]!r} appears in two datasets")
    return table


def load_composite(root: Path | str | None = None, *, check_apex: bool = True,
                   flow_size: int = FLOW_SIZE) -> Composite:
    """Load a release folder: the sample table and every flow map, validated.

    ``root`` defaults to ``$HTNET_DATA``, else ``./data``. Every flow map must be
    ``flow_size`` x ``flow_size`` x 3 uint8 (the release's 28 unless the caller says
    otherwise). Apex images are checked to exist and be complete (they are decoded only
    where landmarks are needed). The files read are compared with the package manifest
    (see :func:`manifest_status`); where the folder holds the official release's files but
    some differ, one :class:`ReleaseWarning` names how many and the first.
    """
    root = Path(root) if root is not None else default_root()
    table = read_table(root)
    flows = [read_flow(root / p, flow_size) for p in table["flow_path"]]
    if check_apex:
        for p in table["apex_path"]:
            complete_image(root / p)
    files = [CSV_NAME, *table["flow_path"], *table["apex_path"]]
    status = manifest_status(root, files)
    if status.startswith("differs"):
        warnings.warn(f"{root}: {status}", ReleaseWarning, stacklevel=2)
    return Composite(root=root, table=table, flows=np.stack(flows),
                     manifest_status=status)


# --------------------------------------------------------------------------- checks


def sha256(path: Path) -> str:
    """The hex SHA-256 digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_HEX = set("0123456789abcdef")


def _parse_sums(text: str) -> tuple[dict[str, str], list[int]]:
    """``({relative path: sha256}, [numbers of lines that do not parse])`` of a
    ``sha256sum``-style text (``<digest>  <path>`` or ``<digest> *<path>``)."""
    out, bad = {}, []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, name = line[:64].lower(), line[66:]
        parts = Path(name).parts
        if (len(line) < 67 or line[64:66] not in ("  ", " *") or not set(digest) <= _HEX
                or name.startswith("/") or ".." in parts):
            bad.append(n)  # also any path outside the folder
            continue
        out[name[2:] if name.startswith("./") else name] = digest
    return out, bad


def read_manifest(path: Path = MANIFEST) -> dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum``-style file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the checksum list ({exc})") from exc
    out, bad = _parse_sums(text)
    if bad:
        raise DataError(f"{path} line {bad[0]}: not '<sha256>  <path>'")
    return out


def manifest_status(root: Path, files: list[str], manifest: Path = MANIFEST) -> str:
    """How the ``files`` (paths relative to ``root``) compare with the package manifest.

    Data whose files are not all listed is not the official release and is only named so;
    otherwise every file is hashed (about 0.03 s for the 885 files of the release).
    """
    wanted = read_manifest(manifest)
    unlisted = [f for f in files if f not in wanted]
    if all(f in unlisted or f == CSV_NAME for f in files):  # the CSV's name is always listed
        return "no manifest entry (not the official release)"
    if unlisted:
        return (f"not the official release: {len(unlisted)} of {len(files)} files have no "
                f"manifest entry, e.g. {unlisted[0]}")
    differ = [f for f in files if sha256(root / f) != wanted[f]]
    if differ:
        return f"differs from the manifest in {len(differ)} file(s): {differ[0]}"
    return "matches the manifest"


def _check_folder_sums(root: Path, manifest: dict[str, str], digest_of) -> list[str]:
    """Problems of the folder's own ``SHA256SUMS``, checked against its files and against
    the package manifest (the reference); one line per kind of problem."""
    path = root / FOLDER_SUMS
    if not path.is_file():
        return []
    where = f"{path} (the folder's own list; the package manifest is the reference)"
    try:
        listed, bad = _parse_sums(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{where}: cannot be read as text ({exc})"]

    def report(items: list, what: str) -> list[str]:
        return [f"{where}: {len(items)} {what} (first: {items[0]})"] if items else []

    missing = [n for n in listed if not (root / n).is_file()]
    wrong = [n for n in listed if n not in missing and digest_of(n) != listed[n]]
    return (report([f"line {n}" for n in bad], "line(s) are not '<sha256>  <path>'")
            + report(missing, "listed file(s) are missing")
            + report(wrong, "listed file(s) have another SHA-256 than listed")
            + report([n for n in listed if n in manifest and listed[n] != manifest[n]],
                     "digest(s) disagree with the package manifest")
            + report([n for n in listed if n not in manifest],
                     "listed file(s) are not in the package manifest")
            + report([n for n in manifest if n not in listed],
                     "file(s) of the package manifest are not listed"))


def check_release(root: Path | str | None = None, manifest: Path = MANIFEST) -> list[str]:
    """Compare a release folder with the published counts and checksums; return the problems.

    The reference is ``manifest`` (the package's :data:`MANIFEST`): every file it lists
    must be present with its digest. A ``SHA256SUMS`` in the folder is not trusted but
    checked for consistency: its lines must parse, its entries must match the files, and
    it must agree with the package manifest.
    """
    root = Path(root) if root is not None else default_root()
    problems: list[str] = []
    try:
        with warnings.catch_warnings():  # differing files are reported below, one by one
            warnings.simplefilter("ignore", ReleaseWarning)
            data = load_composite(root)
    except DataError as exc:
        return [str(exc)]
    t = data.table
    if len(t) != EXPECTED_SAMPLES:
        problems.append(f"{len(t)} samples, expected {EXPECTED_SAMPLES}")
    if t["subject"].nunique() != EXPECTED_SUBJECTS:
        problems.append(f"{t['subject'].nunique()} subjects, expected {EXPECTED_SUBJECTS}")
    for ds, expected in EXPECTED_COUNTS.items():
        got = tuple(int((t[t.dataset == ds].label == k).sum()) for k in (0, 1, 2))
        if got != expected:
            problems.append(f"{ds}: negative/positive/surprise {got}, expected {expected}")
    digests: dict[str, str] = {}

    def digest_of(name: str) -> str:
        if name not in digests:
            digests[name] = sha256(root / name)
        return digests[name]

    reference = read_manifest(manifest)
    for name, digest in reference.items():
        path = root / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif digest_of(name) != digest:
            problems.append(f"{path}: SHA-256 differs from the manifest")
    return problems + _check_folder_sums(root, reference, digest_of)


# --------------------------------------------------------------------------- fetch


def _safe_member(info: zipfile.ZipInfo) -> str:
    """The member's path inside the archive's top folder, refusing unsafe entries."""
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DataError(f"archive member {name!r} is a symbolic link; refusing to extract")
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        raise DataError(f"archive member {name!r} has an absolute or parent path")
    return "/".join(parts[1:])  # drop the "<repo>-<commit>/" folder


def extract_release(archive: Path | str | io.BytesIO, dest: Path | str,
                    manifest: Path = MANIFEST, *, source: str | None = None) -> list[str]:
    """Extract only the release files listed in ``manifest`` from a repository zip archive.

    Files are written through a temporary folder and moved into place once all are verified.
    Errors are one-line :class:`DataError` messages starting with ``source`` (default: the
    archive's path), e.g. for a file that is not a zip, a truncated zip, or a zip without
    the release.
    """
    dest = Path(dest)
    source = source or (str(archive) if isinstance(archive, (str, Path)) else "archive")
    wanted = read_manifest(manifest)
    try:
        return _extract(archive, dest, wanted, source)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise DataError(f"{source}: not a complete zip archive ({exc})") from exc


def _extract(archive, dest: Path, wanted: dict[str, str], source: str) -> list[str]:
    """The body of :func:`extract_release`; zip errors are left to it."""
    with zipfile.ZipFile(archive) as zf:
        members = {}
        for info in zf.infolist():
            try:
                rel = _safe_member(info)
            except DataError as exc:
                raise DataError(f"{source}: {exc}") from None
            if rel in wanted and not info.is_dir():
                members[rel] = info
        missing = sorted(set(wanted) - set(members))
        if missing:
            raise DataError(f"{source}: archive lacks {len(missing)} of the {len(wanted)} "
                            f"release file(s), e.g. {missing[0]!r}")
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
        try:
            for rel, info in members.items():
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
                if sha256(target) != wanted[rel]:
                    raise DataError(f"{source}: archive member {rel!r}: SHA-256 differs from "
                                    "the manifest")
            for rel in members:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp / rel, dest / rel)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(members)


def _download(url: str, target: Path, timeout: float) -> None:
    """Copy ``url`` to ``target``; any network or URL error is one DataError naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(target, "wb") as out:
            shutil.copyfileobj(resp, out)
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: HTTP error {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DataError(f"{url}: cannot download ({exc.reason})") from exc
    except ValueError as exc:  # e.g. "unknown url type" for a URL without a scheme
        raise DataError(f"{url}: not a valid URL ({exc})") from exc
    except (OSError, http.client.HTTPException) as exc:  # timeouts, dropped connections
        raise DataError(f"{url}: download failed ({exc!r})") from exc


def fetch(dest: Path | str | None = None, url: str = OFFICIAL_URL,
          manifest: Path = MANIFEST, timeout: float = 60) -> Path:
    """Download the official repository archive and extract the verified release into ``dest``.

    ``timeout`` is in seconds per network operation; a failed download or an archive that is
    not the release raises a one-line :class:`DataError` naming ``url``.
    """
    dest = Path(dest) if dest is not None else default_root()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "release.zip"
        _download(url, archive, timeout)
        extract_release(archive, dest, manifest, source=url)
    return dest


# --------------------------------------------------------------------------- synthetic release


def write_synthetic_release(root: Path | str, *, subjects: dict | None = None,
                            samples_per_subject: int = 4, seed: int = 0) -> Path:
    """Write a small release-layout folder with made-up, learnable samples (for tests).

    ``subjects`` maps dataset to the number of subjects (default 2 each of smic, casme2, samm).
    Flow maps are noise plus a class-specific bright patch (negative: brows, positive: mouth
    corners, surprise: whole upper face); apex images are the astronaut face from scikit-image
    (public domain) at 224x224, shifted a little per sample.
    """
    from skimage import data as skdata

    root = Path(root)
    rng = np.random.default_rng(seed)
    subjects = subjects or {"smic": 2, "casme2": 2, "samm": 2}
    (root / FLOW_DIR).mkdir(parents=True, exist_ok=True)
    (root / APEX_DIR).mkdir(parents=True, exist_ok=True)
    face = cv2.resize(cv2.cvtColor(skdata.astronaut()[20:220, 150:330], cv2.COLOR_RGB2BGR),
                      (224, 224), interpolation=cv2.INTER_AREA)
    patches = {0: (slice(6, 12), slice(4, 24)), 1: (slice(18, 24), slice(4, 24)),
               2: (slice(2, 14), slice(2, 26))}
    rows = []
    for ds, n_sub in subjects.items():
        for s in range(n_sub):
            sub = f"{ds[:2]}{s + 1:02d}"
            for j in range(samples_per_subject):
                label = int((j + s) % 3)
                name = f"{sub}_ep{j + 1:02d}"
                flow = rng.normal(120, 20, (28, 28, 3))
                flow[patches[label]] += 90
                cv2.imwrite(str(root / FLOW_DIR / f"{sub}_{name} .png"),
                            np.clip(flow, 0, 255).astype(np.uint8))
                shift = np.float32([[1, 0, rng.integers(-4, 5)], [0, 1, rng.integers(-4, 5)]])
                apex = cv2.warpAffine(face, shift, (224, 224), borderMode=cv2.BORDER_REFLECT)
                cv2.imwrite(str(root / APEX_DIR / f"{sub}_{name}.jpg"), apex)
                rows.append({"dataset": ds, "sub": sub, "filename_o": name, "label": label,
                             "apex": "", "imagename": f"{sub}_{name}.jpg", "sub_filename": ""})
    pd.DataFrame(rows).to_csv(root / CSV_NAME, index=False)
    return root


def table1(data: Composite) -> pd.DataFrame:
    """Table 1 of the paper computed from a loaded release: per dataset the subjects and the
    samples of each class, and the composite's total."""
    t = data.table
    rows = []
    for ds in [d for d in DATASETS if d in set(t["dataset"])] + ["full"]:
        part = t if ds == "full" else t[t["dataset"] == ds]
        row = {"dataset": DATASET_NAMES[ds] if ds != "full" else "Composite",
               "subjects": int(part["subject"].nunique())}
        for k, name in LABELS.items():
            row[name] = int((part["label"] == k).sum())
        row["samples"] = len(part)
        rows.append(row)
    return pd.DataFrame(rows)
