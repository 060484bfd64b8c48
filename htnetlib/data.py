"""The official preprocessed release of the composite benchmark (paper section 4.1, Table 1).

Layout of a release folder (the official HTNet repository's, and what ``htnet preprocess``
writes)::

    combined_3_class2_for_optical_flow.csv          dataset, sub, filename_o, label, ...
    datasets/STSNet_whole_norm_u_v_os/<sub>_<filename_o> .png   28x28x3 flow map (note the space)
    datasets/combined_datasets_whole/<imagename>                224x224 apex face (JPEG)

Flow maps are kept as ``cv2.imread`` returns them, which is the array the official code trains
on: the PNGs hold (u, v, strain) as RGB, so the channels in memory are (strain, v, u). ``load_composite`` validates everything it reads and raises :class:`DataError` with the
file or value at fault; ``check_release`` compares a folder against the published counts and the
SHA-256 manifest shipped in this package; ``fetch`` downloads the release from GitHub.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd


class DataError(ValueError):
    """Bad input data; the message names the file or value and what is wrong."""


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


@dataclass
class Composite:
    """A loaded release: one table row and one flow map per sample, in the CSV's order."""

    root: Path
    table: pd.DataFrame
    flows: np.ndarray = field(repr=False)  # (N, H, W, 3) uint8

    def __len__(self) -> int:
        return len(self.table)


def default_root() -> Path:
    """``$HTNET_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("HTNET_DATA") or "data")


def _complete_image(path: Path) -> bytes:
    """The bytes of a PNG or JPEG file, checked to be present and not truncated."""
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
    else:
        raise DataError(f"{path}: not a PNG or JPEG file")
    return data


def read_image(path: Path | str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read an image as ``cv2.imread`` does (BGR uint8), validating it and its shape."""
    path = Path(path)
    img = cv2.imdecode(np.frombuffer(_complete_image(path), np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: OpenCV cannot decode this image")
    if shape is not None and img.shape != tuple(shape):
        raise DataError(f"{path}: image shape {img.shape}, expected {tuple(shape)}")
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


def load_composite(root: Path | str | None = None, *, check_apex: bool = True) -> Composite:
    """Load a release folder: the sample table and every flow map, validated.

    ``root`` defaults to ``$HTNET_DATA``, else ``./data``. Apex images are checked to exist
    and be complete (they are decoded only where landmarks are needed).
    """
    root = Path(root) if root is not None else default_root()
    table = read_table(root)
    flows = [read_image(root / p) for p in table["flow_path"]]
    shapes = {f.shape for f in flows}
    if len(shapes) > 1:
        bad = next(p for p, f in zip(table["flow_path"], flows) if f.shape != flows[0].shape)
        raise DataError(f"{root / bad}: flow map shape differs from the first ({flows[0].shape})")
    if check_apex:
        for p in table["apex_path"]:
            _complete_image(root / p)
    return Composite(root=root, table=table, flows=np.stack(flows) if flows else
                     np.zeros((0, 28, 28, 3), np.uint8))


# --------------------------------------------------------------------------- checks


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(path: Path = MANIFEST) -> dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum``-style file."""
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise DataError(f"{path} line {n}: not '<sha256>  <path>'")
        out[name[2:] if name.startswith("./") else name] = digest
    return out


def check_release(root: Path | str | None = None, manifest: Path = MANIFEST) -> list[str]:
    """Compare a release folder with the published counts and checksums; return the problems."""
    root = Path(root) if root is not None else default_root()
    problems: list[str] = []
    try:
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
    for name, digest in read_manifest(manifest).items():
        path = root / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256(path) != digest:
            problems.append(f"{path}: SHA-256 differs from the manifest")
    return problems


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
                    manifest: Path = MANIFEST) -> list[str]:
    """Extract only the release files listed in ``manifest`` from a repository zip archive.

    Files are written through a temporary folder and moved into place once all are verified.
    """
    dest = Path(dest)
    wanted = read_manifest(manifest)
    with zipfile.ZipFile(archive) as zf:
        members = {}
        for info in zf.infolist():
            rel = _safe_member(info)
            if rel in wanted and not info.is_dir():
                members[rel] = info
        missing = sorted(set(wanted) - set(members))
        if missing:
            raise DataError(f"archive lacks {len(missing)} release file(s), e.g. {missing[0]!r}")
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
        try:
            for rel, info in members.items():
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
                if sha256(target) != wanted[rel]:
                    raise DataError(f"archive member {rel!r}: SHA-256 differs from the manifest")
            for rel in members:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp / rel, dest / rel)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(members)


def fetch(dest: Path | str | None = None, url: str = OFFICIAL_URL,
          manifest: Path = MANIFEST) -> Path:
    """Download the official repository archive and extract the verified release into ``dest``."""
    dest = Path(dest) if dest is not None else default_root()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "release.zip"
        with urllib.request.urlopen(url) as resp, open(archive, "wb") as out:
            shutil.copyfileobj(resp, out)
        extract_release(archive, dest, manifest)
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
