"""The raw micro-expression datasets' readers: one per dataset, each turning a licensed
dataset's own folders and annotation table into :class:`Sample` records, keyed by name and
checked in full before any image is processed (the layouts are described in
:mod:`htnetlib.data.preprocess`, whose pipeline reads them).

Every problem of a table (missing frame, onset not before the apex, non-numeric frame number,
unknown emotion, duplicate sample) is collected and raised as one
:class:`~htnetlib.errors.DataError` naming the samples.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd

from ..errors import DataError

__all__ = ["DATASETS", "Sample", "read_casme2", "read_samm", "read_smic", "read_casme3a",
           "read_samples"]

DATASETS = ("casme2", "samm", "smic", "casme3a")

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
