"""Raw micro-expression datasets -> the official release layout (paper 3.1, 4.1, 4.2).

``htnet preprocess --dataset {casme2,samm,smic,casme3a} --root RAW_DIR --out OUT_DIR``
reads one licensed dataset in its own folder structure and annotation table, and writes
what the official HTNet release publishes, so that every later step runs on it unchanged:

* ``OUT_DIR/combined_3_class2_for_optical_flow.csv`` with the columns
  ``dataset,sub,filename_o,label,apex,imagename,sub_filename`` (label 0 negative,
  1 positive, 2 surprise; ``apex`` the apex frame number used; ``imagename``
  ``<sub>_<filename_o>.jpg``; ``sub_filename`` empty), written last;
* ``OUT_DIR/datasets/STSNet_whole_norm_u_v_os/<sub>_<filename_o> .png`` (with the release's
  space before ``.png``): the 28x28 (u, v, strain) flow map of
  :func:`htnetlib.flow.flow_map`, onset to apex, on the face crops;
* ``OUT_DIR/datasets/combined_datasets_whole/<sub>_<filename_o>.jpg``: the 224x224 apex face.

Per sample: onset and apex frames (the apex by D&C-RoIs, :func:`htnetlib.flow.spot_apex`,
where none is annotated: all of SMIC, and CASME II and SAMM rows whose apex cell is empty,
``/``, ``-`` or negative, searched from onset to offset); the MTCNN face box of the onset
cuts both frames (:func:`htnetlib.flow.crop_face`); Farneback flow (section 4.2) between
the 224x224 crops.  Every file is written to a temporary name and moved into place
(``os.replace``), so an interrupted run leaves no half-written output.

Raw layouts (``--root``), one reader per dataset.  Frame files are found by the number at
the end of their name (``img46.jpg``, ``006_05562.jpg``, ``image106474.bmp``, ``166.jpg``),
so zero padding and prefixes do not matter.  Annotation tables are CSV (xlsx too when
openpyxl is installed), found in ``--root`` or one folder below it; header rows above the
column names (as in the SAMM sheet) are skipped.

* ``casme2``: ``<root>/<frames>/sub01/EP02_01f/img46.jpg`` (``<frames>`` any folder, e.g.
  ``CASME2_RAW_selected``, or none) and ``CASME2-coding-*.csv`` with columns Subject,
  Filename, OnsetFrame, ApexFrame, OffsetFrame, Estimated Emotion.  Labels (MEGC 2019
  composite): negative = disgust, repression; positive = happiness; surprise = surprise;
  fear, sadness and others are dropped.  ``sub`` = ``sub01``, ``filename_o`` = Filename.
* ``samm``: ``<root>/<frames>/006/006_1_2/006_05562.jpg`` and
  ``SAMM_Micro_FACS_Codes*.csv`` with columns Subject, Filename, Onset Frame, Apex Frame,
  Offset Frame, Estimated Emotion.  Labels: negative = anger, contempt, disgust, fear,
  sadness; positive = happiness; surprise; others dropped.  ``sub`` = ``006``.
* ``smic`` (SMIC-HS): ``<root>/HS/s1/micro/negative/s1_ne_01/image106474.bmp`` (or the
  ``HS`` folder itself as root); the label is the emotion folder (negative, positive,
  surprise); onset and offset are the first and last frame of the sample folder; no apex
  is annotated, so it is spotted by D&C-RoIs over all of the sample's frames.  Names follow
  the release: ``sub`` = ``s01``, ``filename_o`` = ``s01_ne_01``.
* ``casme3a`` (CAS(ME)^3 part A): frames ``<root>/<frames>/spNO.1/b/color/166.jpg`` and an
  annotation table like ``cas(me)3_part_A*.csv`` with columns Subject, Filename, Onset,
  Apex, emotion, and optionally Offset, label_for_3, imagename_onset, imagename_apex
  (frame paths relative to the frames folder; by default ``<Subject>/<Filename>/color/<n>.jpg``).
  Labels: negative = disgust, fear, anger, sad; positive = happy; surprise; others dropped.
  One clip can hold several micro-expressions, so ``filename_o`` = ``<Filename>_<Onset>``
  (``b_166``), a name that does not depend on the row order.

Every sample is keyed by its name, never by its row position: a dropped or reordered row
cannot move a label onto another sample.  A bad row (missing frame, onset not before the
apex, non-numeric frame number, unknown emotion, duplicate sample) raises
:class:`~htnetlib.data.DataError` naming the sample; the table is checked in full before any
image is processed, and all its problems are reported together.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..errors import DataError
from .release import read_image
from .flow import (APEX_METHODS, FLOW_METHODS, crop_face, detect_landmarks, flow_map,
                          spot_apex)

__all__ = [
    "COLUMNS",
    "DATASETS",
    "FACE_DIR",
    "FLOW_DIR",
    "TABLE_NAME",
    "Sample",
    "preprocess",
    "read_samples",
]

DATASETS = ("casme2", "samm", "smic", "casme3a")
TABLE_NAME = "combined_3_class2_for_optical_flow.csv"
COLUMNS = ("dataset", "sub", "filename_o", "label", "apex", "imagename", "sub_filename")
FLOW_DIR = Path("datasets") / "STSNet_whole_norm_u_v_os"
FACE_DIR = Path("datasets") / "combined_datasets_whole"
FACE_SIZE, MAP_SIZE = 224, 28


_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
_MISSING = {"", "/", "-", "nan", "none", "n/a"}
_NUMBER_AT_END = re.compile(r"(\d+)$")

# Emotion -> label (0 negative, 1 positive, 2 surprise), and emotions dropped on purpose.
_EMOTIONS = {
    "casme2": ({"disgust": 0, "repression": 0, "happiness": 1, "surprise": 2},
               {"fear", "sadness", "others"}),
    "samm": ({"anger": 0, "contempt": 0, "disgust": 0, "fear": 0, "sadness": 0,
              "happiness": 1, "surprise": 2}, {"others"}),
    "smic": ({"negative": 0, "positive": 1, "surprise": 2}, set()),
    "casme3a": ({"disgust": 0, "fear": 0, "anger": 0, "sad": 0, "happy": 1, "surprise": 2},
                {"others"}),
}


@dataclass(frozen=True)
class Sample:
    """One micro-expression clip to preprocess.

    ``apex`` is the annotated apex frame file, or None to spot the apex among ``frames``
    (onset first) with D&C-RoIs; ``frame_numbers`` are the numbers of ``frames``.
    """

    dataset: str
    subject: str  # the table's ``sub``
    filename: str  # the table's ``filename_o``
    label: int
    onset: Path
    apex: Path | None = None
    apex_number: int | None = None
    frames: tuple = ()
    frame_numbers: tuple = ()

    @property
    def key(self) -> str:
        return f"{self.subject}_{self.filename}"

    @property
    def name(self) -> str:
        return f"{self.dataset} sample {self.subject}/{self.filename}"


class _Problems:
    """Collects per-sample problems of an annotation table, raised together."""

    def __init__(self, source: str):
        self.source, self.items = source, []

    def add(self, sample: str, message: str) -> None:
        self.items.append(f"sample {sample}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            head = f"{len(self.items)} bad sample(s) in {self.source}:\n  "
            raise DataError(head + "\n  ".join(self.items))


# --------------------------------------------------------------------------------------
# Tables and frames


def _find_table(root: Path, patterns: tuple, what: str) -> Path:
    """The annotation table in ``root`` or one folder below, CSV preferred over xlsx."""
    candidates = [p for p in root.iterdir() if p.is_file()]
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        candidates += [p for p in child.iterdir() if p.is_file()]
    for suffix in (".csv", ".xlsx", ".xls"):
        hits = sorted(
            p for p in candidates
            if p.suffix.lower() == suffix and any(fnmatch(p.stem.lower(), pat) for pat in patterns)
        )
        if hits:
            return hits[0]
    names = ", ".join(f"{pat}.csv" for pat in patterns)
    raise DataError(f"no {what} annotation table ({names}) in {root} or the folders below it")


def _read_rows(path: Path) -> list[list[str]]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [[cell.strip() for cell in row] for row in csv.reader(handle)]
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        raise DataError(
            f"{path}: reading .xlsx needs openpyxl, which is not installed; "
            "save the sheet as CSV next to it"
        ) from None
    sheet = pd.read_excel(path, header=None, dtype=str).fillna("")
    return [[str(cell).strip() for cell in row] for row in sheet.itertuples(index=False)]


def _read_table(path: Path, required: tuple, optional: tuple = ()) -> list[dict]:
    """Rows of an annotation table as dicts keyed by the canonical column names.

    Column names match case-insensitively; the header is the first of the top 30 rows that
    holds every required name.  Each dict also carries ``_line``, the row's line number.
    """
    rows = _read_rows(path)
    wanted = {name.lower(): name for name in required + optional}
    for index, row in enumerate(rows[:30]):  # noqa: B007 (index is used after the loop)
        lowered = [cell.lower() for cell in row]
        if all(name.lower() in lowered for name in required):
            header = [wanted.get(cell, None) for cell in lowered]
            break
    else:
        raise DataError(f"{path}: no header row with the columns {', '.join(required)}")
    records = []
    for line, row in enumerate(rows[index + 1 :], start=index + 2):
        if not any(row):
            continue
        record = {"_line": line}
        for column, cell in zip(header, row):
            if column is not None and column not in record:
                record[column] = cell
        records.append(record)
    return records


def _frame_files(folder: Path) -> dict[int, Path]:
    """Image files of a folder keyed by the number that ends their name."""
    frames: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = _NUMBER_AT_END.search(path.stem)
        if path.suffix.lower() in _IMAGE_SUFFIXES and match:
            number = int(match.group(1))
            if number in frames:
                raise DataError(
                    f"{folder}: frames {frames[number].name} and {path.name} share number {number}"
                )
            frames[number] = path
    return frames


def _frames_base(root: Path, subjects: list[str]) -> Path:
    """``root`` or the folder up to two levels below it that holds the subject folders."""
    candidates = [root]
    children = sorted(p for p in root.iterdir() if p.is_dir())
    candidates += children
    for child in children:
        candidates += sorted(p for p in child.iterdir() if p.is_dir())
    for base in candidates:
        if any((base / s).is_dir() for s in subjects):
            return base
    return root


def _frame_number(value: str, what: str, *, missing_ok: bool = False) -> int | None:
    """An integer frame number from a table cell; None for an empty cell when allowed."""
    text = value.strip()
    if text.lower() in _MISSING and missing_ok:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a frame number") from None
    if not number.is_integer():
        raise ValueError(f"{what} {value!r} is not a whole frame number")
    if number < 0:
        if missing_ok:
            return None
        raise ValueError(f"{what} {value!r} is negative")
    return int(number)


def _emotion_label(dataset: str, value: str) -> int | None:
    """Label of an emotion name, None for an emotion dropped on purpose; ValueError otherwise."""
    mapping, dropped = _EMOTIONS[dataset]
    emotion = value.strip().lower()
    if emotion == "other":
        emotion = "others"
    if emotion in mapping:
        return mapping[emotion]
    if emotion in dropped:
        return None
    known = sorted(mapping) + sorted(dropped)
    raise ValueError(f"unknown emotion {value!r} (expected one of {', '.join(known)})")


def _annotated_sample(
    dataset: str, subject: str, filename: str, label: int, folder: Path,
    onset: int, apex: int | None, offset: int | None,
) -> Sample:
    """A sample whose frames live in ``folder``; apex None -> spot among onset..offset."""
    if not folder.is_dir():
        raise ValueError(f"frame folder {folder} not found")
    files = _frame_files(folder)
    if onset not in files:
        raise ValueError(f"onset frame {onset} not found in {folder}")
    if apex is not None:
        if apex not in files:
            raise ValueError(f"apex frame {apex} not found in {folder}")
        return Sample(dataset, subject, filename, label, files[onset], files[apex], apex)
    if offset is None:
        raise ValueError("no apex and no offset frame annotated, so no range to spot the apex in")
    numbers = tuple(n for n in sorted(files) if onset <= n <= offset)
    if len(numbers) < 2:
        raise ValueError(f"no frames after the onset up to the offset {offset} in {folder}")
    return Sample(dataset, subject, filename, label, files[onset],
                  frames=tuple(files[n] for n in numbers), frame_numbers=numbers)


def _check_unique(samples: list[Sample], problems: _Problems) -> None:
    seen: dict[str, int] = {}
    for sample in samples:
        seen[sample.key] = seen.get(sample.key, 0) + 1
    for key, count in seen.items():
        if count > 1:
            problems.add(key, f"appears {count} times; sample names must be unique")


# --------------------------------------------------------------------------------------
# One reader per dataset: each returns validated Sample records.


def _read_coded_table(
    dataset: str, root: Path, table: Path, columns: tuple, subject_name, folder_of,
) -> tuple[list[Sample], int]:
    """Shared reader of CASME II and SAMM style tables (one row per clip folder)."""
    subject_col, file_col, onset_col, apex_col, offset_col, emotion_col = columns
    rows = _read_table(table, columns)
    dropped = 0
    problems = _Problems(str(table))
    subjects = []
    for row in rows:
        try:
            subjects.append(subject_name(row[subject_col]))
        except ValueError:
            pass
    base = _frames_base(root, subjects)
    samples = []
    for row in rows:
        name = f"{row.get(subject_col, '?')}/{row.get(file_col, '?')} (line {row['_line']})"
        try:
            subject = subject_name(row[subject_col])
            filename = row[file_col].strip()
            if not filename:
                raise ValueError("empty Filename")
            name = f"{subject}/{filename}"
            label = _emotion_label(dataset, row[emotion_col])
            if label is None:
                dropped += 1
                continue
            onset = _frame_number(row[onset_col], "onset frame")
            apex = _frame_number(row[apex_col], "apex frame", missing_ok=True)
            offset = _frame_number(row[offset_col], "offset frame", missing_ok=True)
            if apex is not None and apex <= onset:
                raise ValueError(f"onset frame {onset} is not before apex frame {apex}")
            if apex is None and offset is not None and offset <= onset:
                raise ValueError(f"onset frame {onset} is not before offset frame {offset}")
            folder = folder_of(base, subject, filename)
            samples.append(_annotated_sample(dataset, subject, filename, label, folder, onset, apex, offset))
        except ValueError as error:
            problems.add(name, str(error))
    _check_unique(samples, problems)
    problems.raise_if_any()
    return samples, dropped


def _casme2_subject(value: str) -> str:
    text = value.strip()
    if re.fullmatch(r"sub\d+", text, flags=re.IGNORECASE):
        return "sub" + text[3:].zfill(2)
    return f"sub{_frame_number(text, 'Subject'):02d}"


def read_casme2(root: Path) -> tuple[list[Sample], int]:
    """CASME II: ``sub01/EP02_01f/img46.jpg`` frames and ``CASME2-coding-*`` table."""
    table = _find_table(root, ("casme2*coding*", "*coding*"), "CASME II")
    columns = ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion")
    return _read_coded_table("casme2", root, table, columns, _casme2_subject,
                             lambda base, subject, filename: base / subject / filename)


def _samm_subject(value: str) -> str:
    return f"{_frame_number(value, 'Subject'):03d}"


def read_samm(root: Path) -> tuple[list[Sample], int]:
    """SAMM: ``006/006_1_2/006_05562.jpg`` frames and ``SAMM_Micro_FACS_Codes*`` table."""
    table = _find_table(root, ("samm_micro_facs_codes*", "samm*codes*"), "SAMM")
    columns = ("Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame", "Estimated Emotion")
    return _read_coded_table("samm", root, table, columns, _samm_subject,
                             lambda base, subject, filename: base / subject / filename)


def read_smic(root: Path) -> tuple[list[Sample], int]:
    """SMIC-HS: ``HS/s1/micro/<emotion>/s1_ne_01/image106474.bmp``; apex to be spotted."""
    base = root / "HS" if (root / "HS").is_dir() else root
    subject_dirs = sorted(
        (p for p in base.iterdir() if p.is_dir() and re.fullmatch(r"s\d+", p.name, re.IGNORECASE)),
        key=lambda p: int(p.name[1:]),
    )
    if not subject_dirs:
        raise DataError(f"no SMIC-HS subject folders (s1, s2, ...) in {base}")
    problems = _Problems(str(base))
    abbreviations = {"ne": 0, "po": 1, "sur": 2}
    samples = []
    for subject_dir in subject_dirs:
        subject = f"s{int(subject_dir.name[1:]):02d}"
        micro = subject_dir / "micro"
        if not micro.is_dir():
            problems.add(subject, f"folder {micro} not found")
            continue
        for emotion_dir in sorted(p for p in micro.iterdir() if p.is_dir()):
            for clip in sorted(p for p in emotion_dir.iterdir() if p.is_dir()):
                match = re.fullmatch(r"s\d+_(.+)", clip.name, re.IGNORECASE)
                filename = f"{subject}_{match.group(1)}" if match else f"{subject}_{clip.name}"
                try:
                    label = _emotion_label("smic", emotion_dir.name)
                    short = filename.split("_")[1].lower() if "_" in filename else ""
                    if short in abbreviations and abbreviations[short] != label:
                        raise ValueError(
                            f"clip name {clip.name!r} contradicts its folder {emotion_dir.name!r}"
                        )
                    files = _frame_files(clip)
                    if len(files) < 2:
                        raise ValueError(f"{clip} holds {len(files)} frame(s); at least 2 are needed")
                    numbers = tuple(sorted(files))
                    samples.append(Sample("smic", subject, filename, label, files[numbers[0]],
                                          frames=tuple(files[n] for n in numbers), frame_numbers=numbers))
                except (ValueError, DataError) as error:
                    problems.add(f"{subject}/{filename}", str(error))
    _check_unique(samples, problems)
    problems.raise_if_any()
    return samples, 0


def read_casme3a(root: Path) -> tuple[list[Sample], int]:
    """CAS(ME)^3 part A: ``spNO.1/b/color/166.jpg`` frames and the part A label table."""
    table = _find_table(root, ("cas(me)3*part*a*", "casme3*part*a*", "*part_a*"), "CAS(ME)^3 part A")
    required = ("Subject", "Filename", "Onset", "Apex", "emotion")
    optional = ("Offset", "label_for_3", "imagename_onset", "imagename_apex")
    rows = _read_table(table, required, optional)
    problems = _Problems(str(table))
    base = _frames_base(root, [row["Subject"].strip() for row in rows])
    samples, dropped = [], 0
    for row in rows:
        subject, clip = row["Subject"].strip(), row["Filename"].strip()
        name = f"{subject}/{clip}_{row['Onset'].strip()} (line {row['_line']})"
        try:
            label = _emotion_label("casme3a", row["emotion"])
            if label is None:
                dropped += 1
                continue
            onset = _frame_number(row["Onset"], "onset frame")
            name = f"{subject}/{clip}_{onset}"
            apex = _frame_number(row["Apex"], "apex frame")
            if apex <= onset:
                raise ValueError(f"onset frame {onset} is not before apex frame {apex}")
            given = row.get("label_for_3", "").strip()
            if given and given.lower() not in _MISSING and given != str(label):
                raise ValueError(
                    f"label_for_3 {given!r} contradicts emotion {row['emotion']!r} (label {label})"
                )
            paths = {}
            for what, number in (("onset", onset), ("apex", apex)):
                relative = row.get(f"imagename_{what}", "").strip() or f"{subject}/{clip}/color/{number}.jpg"
                path = base / relative
                found = _NUMBER_AT_END.search(path.stem)
                if found and int(found.group(1)) != number:
                    raise ValueError(f"imagename_{what} {relative!r} is not frame {number}")
                if not path.is_file():
                    raise ValueError(f"{what} frame {path} not found")
                paths[what] = path
            samples.append(Sample("casme3a", subject, f"{clip}_{onset}", label,
                                  paths["onset"], paths["apex"], apex))
        except ValueError as error:
            problems.add(name, str(error))
    _check_unique(samples, problems)
    problems.raise_if_any()
    return samples, dropped


_READERS = {"casme2": read_casme2, "samm": read_samm, "smic": read_smic, "casme3a": read_casme3a}


def read_samples(dataset: str, root) -> tuple[list[Sample], int]:
    """Validated sample records of a raw dataset, and the number of rows dropped on purpose.

    See the module docstring for the layouts.  Rows whose emotion lies outside the three
    classes (e.g. "others") are dropped and counted; any other bad row raises DataError.
    """
    if dataset not in _READERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root {root} is not a folder")
    return _READERS[dataset](root)


# --------------------------------------------------------------------------------------
# The shared pipeline


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and move it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _encode(ext: str, image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(ext, image)
    if not ok:
        raise DataError(f"cannot encode a {image.shape} image as {ext}")
    return buffer.tobytes()


def _process(sample: Sample, out: Path, method: str, detector, apex_method: str = "lbp") -> dict:
    """Onset/apex -> face crops -> flow map and apex face files; returns the table row."""
    try:
        onset = read_image(sample.onset, any_format=True)
        if sample.apex is None:
            frames = [onset] + [read_image(p, any_format=True) for p in sample.frames[1:]]
            landmarks = detect_landmarks(onset, detector)
            index = spot_apex(frames, landmarks, method=apex_method)
            apex, apex_number = frames[index], sample.frame_numbers[index]
        else:
            apex, apex_number = read_image(sample.apex, any_format=True), sample.apex_number
        if apex.shape != onset.shape:
            raise DataError(f"onset {onset.shape} and apex {apex.shape} frames differ in size")
        onset_face, apex_face = crop_face(onset, apex, FACE_SIZE, detector)
        flow_image = flow_map(onset_face, apex_face, MAP_SIZE, method)
    except (DataError, ValueError) as error:
        raise DataError(f"{sample.name}: {error}") from None
    # The release's PNGs hold (u, v, strain) as RGB, so OpenCV (BGR) writes the reversed order
    # and cv2.imread gives (strain, v, u), the array the official code trains on.
    _write_atomic(out / FLOW_DIR / f"{sample.key} .png", _encode(".png", flow_image[..., ::-1]))
    _write_atomic(out / FACE_DIR / f"{sample.key}.jpg", _encode(".jpg", apex_face))
    return {
        "dataset": sample.dataset, "sub": sample.subject, "filename_o": sample.filename,
        "label": sample.label, "apex": int(apex_number), "imagename": f"{sample.key}.jpg",
        "sub_filename": "",
    }


def _init_worker() -> None:
    """Worker processes share the CPU: one thread each for OpenCV and (MTCNN's) torch."""
    cv2.setNumThreads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # read by torch when a task first imports it


def _progress(total: int, dataset: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"preprocess {dataset}", unit="sample", disable=not enabled)


def preprocess(
    dataset: str,
    root,
    out,
    *,
    workers: int = 1,
    method: str = "farneback",
    apex_method: str = "lbp",
    progress: bool = True,
    detector=None,
) -> pd.DataFrame:
    """Preprocess one raw dataset into the release layout under ``out``; returns the table.

    An existing table in ``out`` keeps the rows of other datasets (so casme2, samm and smic
    run one after the other build the composite table); this dataset's rows are replaced.

    ``workers`` > 1 processes samples in that many processes (spawned; the results are
    the same as with one).  ``method`` is the flow method (:data:`FLOW_METHODS`);
    ``apex_method`` spots the apex where the dataset gives none (:data:`APEX_METHODS`: ``lbp``,
    the paper's D&C-RoIs, or ``flow``, optical-flow magnitude in the same regions, which stays
    accurate for larger motion; see :func:`htnetlib.flow.spot_apex`).
    ``detector`` replaces MTCNN (anything with facenet-pytorch's ``detect``); it must be
    picklable when ``workers`` > 1.  The returned table's ``attrs["dropped"]`` counts the
    samples whose emotion is outside the three classes.
    """
    if apex_method not in APEX_METHODS:
        raise ValueError(f"unknown apex spotter {apex_method!r}; choose one of {APEX_METHODS}")
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown optical flow method {method!r}; choose one of {FLOW_METHODS}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    samples, dropped = read_samples(dataset, root)
    if not samples:
        raise DataError(f"no {dataset} samples with a negative, positive or surprise label under {root}")
    out = Path(out)
    for folder in (out / FLOW_DIR, out / FACE_DIR):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".*.tmp"):  # left by a run that was killed mid-write
            stale.unlink()

    rows: dict[str, dict] = {}
    with _progress(len(samples), dataset, progress) as bar:
        if workers == 1:
            for sample in samples:
                rows[sample.key] = _process(sample, out, method, detector, apex_method)
                bar.update()
        else:
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
                futures = {pool.submit(_process, s, out, method, detector, apex_method): s.key for s in samples}
                try:
                    for future in as_completed(futures):
                        rows[futures[future]] = future.result()
                        bar.update()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise

    new = pd.DataFrame([rows[s.key] for s in samples], columns=list(COLUMNS))
    table = _merge_table(out / TABLE_NAME, dataset, new)
    with tempfile.NamedTemporaryFile("w", dir=out, prefix=f".{TABLE_NAME}.", suffix=".tmp",
                                     delete=False, newline="") as handle:
        table.to_csv(handle, index=False)
    os.replace(handle.name, out / TABLE_NAME)
    table.attrs["dropped"] = dropped
    return table


def _merge_table(path: Path, dataset: str, new: pd.DataFrame) -> pd.DataFrame:
    """The table to write: ``new`` in place of the rows of ``dataset`` in an existing table.

    Preprocessing casme2, samm and smic one after the other into one folder so builds the
    composite table; rows of the other datasets keep their order, a dataset seen for the
    first time comes last.
    """
    text = {c: str for c in ("dataset", "sub", "filename_o", "imagename", "sub_filename")}
    blocks = []
    if path.exists():
        old = pd.read_csv(path, dtype=text, keep_default_na=False)
        if list(old.columns) != list(COLUMNS):
            raise DataError(f"{path} exists with columns {list(old.columns)}, not {list(COLUMNS)}")
        for name in old["dataset"].drop_duplicates():
            blocks.append(new if name == dataset else old[old["dataset"] == name])
    if not any(block is new for block in blocks):
        blocks.append(new)
    table = pd.concat(blocks, ignore_index=True)
    table["label"] = pd.to_numeric(table["label"]).astype(int)
    table["apex"] = pd.to_numeric(table["apex"], errors="coerce").astype("Int64")
    return table






