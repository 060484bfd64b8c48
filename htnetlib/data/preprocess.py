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
  :func:`htnetlib.data.flow.flow_map`, onset to apex, on the face crops;
* ``OUT_DIR/datasets/combined_datasets_whole/<sub>_<filename_o>.jpg``: the 224x224 apex face.

Per sample: onset and apex frames (the apex by D&C-RoIs, :func:`htnetlib.data.flow.spot_apex`,
where none is annotated: all of SMIC, and CASME II and SAMM rows whose apex cell is empty,
``/``, ``-`` or negative, searched from onset to offset); the MTCNN face box of the onset
cuts both frames (:func:`htnetlib.data.flow.crop_face`); Farneback flow (section 4.2) between
the 224x224 crops.  Every file is written to a temporary name and moved into place
(``os.replace``), so an interrupted run leaves no half-written output.

Raw layouts (``--root``), one reader per dataset (:mod:`htnetlib.data.raw`).  Frame files are found by the number at
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
:class:`~htnetlib.errors.DataError` naming the sample; the table is checked in full before any
image is processed, and all its problems are reported together.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..errors import DataError, one_line
from ..io import file_mode
from .flow import APEX_METHODS, FLOW_METHODS, crop_face, detect_landmarks, flow_map, spot_apex
from .raw import DATASETS, Sample, read_samples
from .release import read_image

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

TABLE_NAME = "combined_3_class2_for_optical_flow.csv"
COLUMNS = ("dataset", "sub", "filename_o", "label", "apex", "imagename", "sub_filename")
FLOW_DIR = Path("datasets") / "STSNet_whole_norm_u_v_os"
FACE_DIR = Path("datasets") / "combined_datasets_whole"
FACE_SIZE, MAP_SIZE = 224, 28


# --------------------------------------------------------------------------------------
# The shared pipeline (the readers, :func:`read_samples`, live in htnetlib.data.raw)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and move it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())  # mkstemp's 0600 would hide the maps from colleagues
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
    the same as with one).  ``method`` is the flow method (:data:`FLOW_METHODS`: the default
    ``farneback`` is section 4.2's name and fast; ``tvl1`` is what the official release's maps
    were made with, about 35 times slower; see :func:`htnetlib.data.flow.optical_flow`);
    ``apex_method`` spots the apex where the dataset gives none (:data:`APEX_METHODS`: ``lbp``,
    the paper's D&C-RoIs, or ``flow``, optical-flow magnitude in the same regions, which stays
    accurate for larger motion; see :func:`htnetlib.data.flow.spot_apex`).
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
    old = _read_table(out / TABLE_NAME)  # before any map is written: a bad one changes nothing
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
    table = _merge_table(old, dataset, new)
    with tempfile.NamedTemporaryFile("w", dir=out, prefix=f".{TABLE_NAME}.", suffix=".tmp",
                                     delete=False, newline="") as handle:
        table.to_csv(handle, index=False)
    os.chmod(handle.name, file_mode())
    os.replace(handle.name, out / TABLE_NAME)
    table.attrs["dropped"] = dropped
    return table


def _read_table(path: Path) -> pd.DataFrame | None:
    """The existing table of an output folder (None if there is none), checked: one that is
    not a readable CSV with the release's columns is a DataError naming it."""
    if not path.exists():
        return None
    text = {c: str for c in ("dataset", "sub", "filename_o", "imagename", "sub_filename")}
    try:
        old = pd.read_csv(path, dtype=text, keep_default_na=False)
    except (OSError, ValueError) as exc:  # ValueError: bad UTF-8, a CSV that does not parse
        raise DataError(f"{path}: exists but is not a readable table ({one_line(exc)}); move "
                        "it away or choose another --out") from None
    if list(old.columns) != list(COLUMNS):
        raise DataError(f"{path} exists with columns {list(old.columns)}, not {list(COLUMNS)}")
    return old


def _merge_table(old: pd.DataFrame | None, dataset: str, new: pd.DataFrame) -> pd.DataFrame:
    """The table to write: ``new`` in place of the rows of ``dataset`` in the existing table
    ``old`` (:func:`_read_table`).

    Preprocessing casme2, samm and smic one after the other into one folder so builds the
    composite table; rows of the other datasets keep their order, a dataset seen for the
    first time comes last.
    """
    blocks = []
    if old is not None:
        for name in old["dataset"].drop_duplicates():
            blocks.append(new if name == dataset else old[old["dataset"] == name])
    if not any(block is new for block in blocks):
        blocks.append(new)
    table = pd.concat(blocks, ignore_index=True)
    table["label"] = pd.to_numeric(table["label"]).astype(int)
    table["apex"] = pd.to_numeric(table["apex"], errors="coerce").astype("Int64")
    return table






