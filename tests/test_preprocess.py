"""``htnet preprocess`` on small synthetic datasets laid out like CASME II, SAMM, SMIC-HS and
CAS(ME)^3 part A (the real datasets are licensed and absent here)."""

import argparse
import csv
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from htnetlib.data import preprocess as pp
from htnetlib.cli import preprocess as cli_preprocess
from htnetlib.data import synthetic
from htnetlib.data import DataError

N_FRAMES, APEX = 6, 3  # frames per synthetic clip; the apex is the 4th frame


@lru_cache(maxsize=None)
def _clip(label: int, seed: int) -> tuple:
    """BGR frames of a synthetic micro-expression, the face on a larger grey canvas."""
    seq = synthetic.make_sequence(label, n_frames=N_FRAMES, apex=APEX, seed=seed, noise=0.5, amplitude=2.0)
    frames = []
    for rgb in seq.frames:
        canvas = np.full((280, 320, 3), 120, np.uint8)
        canvas[30:254, 50:274] = rgb[..., ::-1]
        frames.append(canvas)
    return tuple(frames)


def _write_frames(folder: Path, numbers, label: int, seed: int, name=lambda n: f"img{n}.jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number, frame in zip(numbers, _clip(label, seed)):
        assert cv2.imwrite(str(folder / name(number)), frame)


def _write_csv(path: Path, rows, preamble=()) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        for line in preamble:
            writer.writerow(line)
        writer.writerows(rows)


class KnownFace:
    """Stands in for MTCNN: the synthetic face's box and landmarks on the 320x280 canvas."""

    offset = np.array([50.0, 30.0])

    def detect(self, image, landmarks=False):
        box = np.array([[48.7, 33.1, 173.4, 191.3]]) + np.tile(self.offset, 2)
        if landmarks:
            return box, np.array([0.99]), (synthetic.face_landmarks() + self.offset)[None]
        return box, np.array([0.99])


# --- dataset builders ----------------------------------------------------------------------

CASME2_HEADER = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]
# (subject, clip, onset, emotion, label or None when dropped, apex annotated?)
CASME2_CLIPS = [
    ("1", "EP02_01f", 46, "happiness", 1, True),
    ("01", "EP03_02", 10, "disgust", 0, True),
    ("2", "EP01_11f", 120, "surprise", 2, True),
    ("2", "EP05_02", 30, "others", None, True),
    ("3", "EP07_01", 5, "repression", 0, False),  # apex cell "/": spotted by D&C-RoIs
]


def _casme2_rows(clips=CASME2_CLIPS):
    rows = []
    for subject, clip, onset, emotion, _, annotated in clips:
        apex = str(onset + APEX) if annotated else "/"
        rows.append([subject, clip, str(onset), apex, str(onset + N_FRAMES - 1), "12", emotion])
    return rows


def make_casme2(root: Path, rows=None) -> Path:
    for seed, (subject, clip, onset, emotion, label, _) in enumerate(CASME2_CLIPS):
        folder = root / "CASME2_RAW_selected" / f"sub{int(subject):02d}" / clip
        _write_frames(folder, range(onset, onset + N_FRAMES), label if label is not None else 0, seed)
    _write_csv(root / "CASME2-coding-20190701.csv", [CASME2_HEADER] + (rows or _casme2_rows()))
    return root


SAMM_CLIPS = [
    ("6", "006_1_2", 5562, "Anger", 0),
    ("6", "006_1_3", 120, "Happiness", 1),
    ("7", "007_6_1", 900, "Surprise", 2),
    ("7", "007_7_1", 300, "Other", None),
]


def make_samm(root: Path) -> Path:
    rows = [["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
             "Duration", "Type", "Action Units", "Notes", "Estimated Emotion"]]
    for seed, (subject, clip, onset, emotion, label) in enumerate(SAMM_CLIPS):
        folder = root / "SAMM" / f"{int(subject):03d}" / clip
        _write_frames(folder, range(onset, onset + N_FRAMES), label or 0, 10 + seed,
                      name=lambda n, s=subject: f"{int(s):03d}_{n:05d}.jpg")
        rows.append([subject, clip, "1", str(onset), str(onset + APEX), str(onset + N_FRAMES - 1),
                     "6", "Micro - 1/2", "R12", "", emotion])
    preamble = [["SAMM Micro-Movement FACS Codes"], [], ["Micro-Movements"]]
    _write_csv(root / "SAMM_Micro_FACS_Codes_v2.csv", rows, preamble)
    return root


SMIC_CLIPS = [("s1", "negative", "s1_ne_01", 0), ("s1", "positive", "s1_po_02", 1), ("s11", "surprise", "s11_sur_01", 2)]


def make_smic(root: Path) -> Path:
    for seed, (subject, emotion, clip, label) in enumerate(SMIC_CLIPS):
        folder = root / "HS" / subject / "micro" / emotion / clip
        start = 106474 + 1000 * seed
        _write_frames(folder, range(start, start + N_FRAMES), label, 20 + seed, name=lambda n: f"image{n}.bmp")
    return root


CASME3_HEADER = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion",
                 "label_for_7", "label_for_3", "imagename_apex", "imagename_onset", "imagename_apex_offset"]
CASME3_CLIPS = [
    ("spNO.1", "b", 166, "disgust", 0),
    ("spNO.1", "j", 28, "happy", 1),
    ("spNO.1", "j", 102, "surprise", 2),  # a second micro-expression in the same clip
    ("spNO.2", "a", 10, "others", None),
]


def make_casme3a(root: Path) -> Path:
    rows = [CASME3_HEADER]
    for seed, (subject, clip, onset, emotion, label) in enumerate(CASME3_CLIPS):
        folder = root / "part_A" / subject / clip / "color"
        _write_frames(folder, range(onset, onset + N_FRAMES), label or 0, 30 + seed, name=lambda n: f"{n}.jpg")
        apex, offset = onset + APEX, onset + N_FRAMES - 1
        rows.append([subject, clip, onset, apex, offset, "4", "III", emotion, "0",
                     "" if label is None else label, f"{subject}/{clip}/color/{apex}.jpg",
                     f"{subject}/{clip}/color/{onset}.jpg", f"{subject}/{clip}/color/{offset}.jpg"])
    _write_csv(root / "cas(me)3_part_A_ME_label_JpgIndex_v2.csv", rows)
    return root


BUILDERS = {"casme2": make_casme2, "samm": make_samm, "smic": make_smic, "casme3a": make_casme3a}
EXPECTED = {  # key -> (label, apex frame number or None when spotted)
    "casme2": {"sub01_EP02_01f": (1, 49), "sub01_EP03_02": (0, 13), "sub02_EP01_11f": (2, 123),
               "sub03_EP07_01": (0, None)},
    "samm": {"006_006_1_2": (0, 5565), "006_006_1_3": (1, 123), "007_007_6_1": (2, 903)},
    "smic": {"s01_s01_ne_01": (0, None), "s01_s01_po_02": (1, None), "s11_s11_sur_01": (2, None)},
    "casme3a": {"spNO.1_b_166": (0, 169), "spNO.1_j_28": (1, 31), "spNO.1_j_102": (2, 105)},
}


def _check_release(out: Path, table: pd.DataFrame, dataset: str) -> None:
    written = pd.read_csv(out / pp.TABLE_NAME, dtype={"sub": str}, keep_default_na=False)
    assert list(written.columns) == list(pp.COLUMNS)
    assert (written["dataset"] == dataset).all() and (written["sub_filename"] == "").all()
    keys = written["sub"] + "_" + written["filename_o"]
    assert list(written["imagename"]) == [f"{k}.jpg" for k in keys]
    assert len(table) == len(written)
    expected = EXPECTED[dataset]
    assert sorted(keys) == sorted(expected)
    for key, label, apex in zip(keys, written["label"], written["apex"]):
        assert label == expected[key][0], key
        if expected[key][1] is not None:
            assert int(apex) == expected[key][1], key
        flow_map = cv2.imread(str(out / pp.FLOW_DIR / f"{key} .png"))
        assert flow_map is not None and flow_map.shape == (28, 28, 3) and flow_map.dtype == np.uint8
        assert flow_map[..., 0].max() == 255 and flow_map[..., 0].min() == 0
        # as in the release: the PNG's RGB is (u, v, strain), so OpenCV reads strain first,
        # and strain (a magnitude) is mostly low while u and v sit around mid-grey
        assert np.median(flow_map[..., 0]) < np.median(flow_map[..., 1:])
        face = cv2.imread(str(out / pp.FACE_DIR / f"{key}.jpg"))
        assert face is not None and face.shape == (224, 224, 3)
        assert np.abs(face.astype(int) - 120).mean() > 25  # the face, not the grey canvas
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


# --- the four readers and the pipeline (real MTCNN unless KnownFace is passed) --------------


@pytest.mark.parametrize("dataset", pp.DATASETS)
def test_preprocess_writes_the_release_layout(tmp_path, dataset):
    root = BUILDERS[dataset](tmp_path / "raw")
    out = tmp_path / "out"
    table = pp.preprocess(dataset, root, out, progress=False)
    _check_release(out, table, dataset)
    assert table.attrs["dropped"] == (0 if dataset == "smic" else 1)


def test_spotted_apex_is_near_the_true_apex(tmp_path):
    out = tmp_path / "out"
    table = pp.preprocess("smic", make_smic(tmp_path / "raw"), out, progress=False)
    starts = {f"s{int(s[1:]):02d}_{c.replace(s + '_', f's{int(s[1:]):02d}_')}": 106474 + 1000 * i
              for i, (s, _, c, _) in enumerate(SMIC_CLIPS)}
    for _, row in table.iterrows():
        true_apex = starts[f"{row['sub']}_{row['filename_o']}"] + APEX
        assert abs(int(row["apex"]) - true_apex) <= 2


def test_flow_spotter_through_the_command_line(tmp_path):
    """--apex-spotter flow reaches spot_apex and lands near the true apex of every SMIC clip."""
    parser = argparse.ArgumentParser()
    cli_preprocess.add_arguments(parser)
    root = make_smic(tmp_path / "raw")
    args = parser.parse_args(["--dataset", "smic", "--root", str(root), "--out",
                              str(tmp_path / "out"), "--apex-spotter", "flow"])
    assert args.apex_spotter == "flow"
    table = pp.preprocess("smic", root, tmp_path / "out", progress=False,
                          apex_method=args.apex_spotter)
    starts = {f"s{int(s[1:]):02d}_{c.replace(s + '_', f's{int(s[1:]):02d}_')}": 106474 + 1000 * i
              for i, (s, _, c, _) in enumerate(SMIC_CLIPS)}
    for _, row in table.iterrows():
        assert abs(int(row["apex"]) - (starts[f"{row['sub']}_{row['filename_o']}"] + APEX)) <= 1
    with pytest.raises(ValueError, match="unknown apex spotter"):
        pp.preprocess("smic", root, tmp_path / "bad", progress=False, apex_method="peak")


def test_labels_follow_sample_names_when_rows_are_shuffled(tmp_path):
    root = make_casme2(tmp_path / "raw")
    first = pp.preprocess("casme2", root, tmp_path / "a", progress=False, detector=KnownFace())
    rows = _casme2_rows()
    shuffled = [rows[i] for i in (3, 4, 2, 0, 1)]  # the dropped "others" row now comes first
    _write_csv(root / "CASME2-coding-20190701.csv", [CASME2_HEADER] + shuffled)
    second = pp.preprocess("casme2", root, tmp_path / "b", progress=False, detector=KnownFace())
    a = first.set_index(["sub", "filename_o"]).sort_index()
    b = second.set_index(["sub", "filename_o"]).sort_index()
    pd.testing.assert_frame_equal(a, b)
    assert list(second["filename_o"]) == ["EP07_01", "EP01_11f", "EP02_01f", "EP03_02"]
    for key in EXPECTED["casme2"]:
        png = f"{key} .png"
        assert (tmp_path / "a" / pp.FLOW_DIR / png).read_bytes() == (tmp_path / "b" / pp.FLOW_DIR / png).read_bytes()


def test_two_workers_give_the_same_result(tmp_path):
    root = make_smic(tmp_path / "raw")
    # the stand-in detector keeps the spawned workers from loading torch and MTCNN
    one = pp.preprocess("smic", root, tmp_path / "one", workers=1, progress=False, detector=KnownFace())
    two = pp.preprocess("smic", root, tmp_path / "two", workers=2, progress=False, detector=KnownFace())
    pd.testing.assert_frame_equal(one, two)
    for folder in (pp.FLOW_DIR, pp.FACE_DIR):
        names = sorted(p.name for p in (tmp_path / "one" / folder).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "two" / folder).iterdir())
        for name in names:
            a = cv2.imread(str(tmp_path / "one" / folder / name)).astype(int)
            b = cv2.imread(str(tmp_path / "two" / folder / name)).astype(int)
            assert np.array_equal(a, b), name
    assert (tmp_path / "one" / pp.TABLE_NAME).read_text() == (tmp_path / "two" / pp.TABLE_NAME).read_text()


def test_command_line_arguments_and_summary(tmp_path, capsys):
    root = make_casme3a(tmp_path / "raw")
    parser = argparse.ArgumentParser()
    cli_preprocess.add_arguments(parser)
    args = parser.parse_args(["--dataset", "casme3a", "--root", str(root), "--out", str(tmp_path / "out"),
                              "--method", "dis"])
    assert args.workers == 1 and args.method == "dis"
    assert cli_preprocess.run(args) == 0
    summary = capsys.readouterr().out.strip()
    assert summary.count("\n") == 0 and "3 samples" in summary
    assert "1 outside the three classes dropped" in summary
    assert "casme2" in parser.format_help() and "CASME2-coding" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "casme4", "--root", "x", "--out", "y"])


def test_datasets_run_into_one_folder_build_the_composite_table(tmp_path):
    out = tmp_path / "out"
    pp.preprocess("samm", make_samm(tmp_path / "samm"), out, progress=False, detector=KnownFace())
    pp.preprocess("smic", make_smic(tmp_path / "smic"), out, progress=False, detector=KnownFace())
    table = pp.preprocess("samm", tmp_path / "samm", out, progress=False, detector=KnownFace())
    written = pd.read_csv(out / pp.TABLE_NAME, dtype={"sub": str})
    assert list(written["dataset"]) == ["samm"] * 3 + ["smic"] * 3  # samm replaced, not doubled
    assert list(table["filename_o"]) == list(written["filename_o"])
    assert list(written["sub"][:3]) == ["006", "006", "007"]
    assert len(list((out / pp.FLOW_DIR).iterdir())) == 6
    from htnetlib.data import load_composite  # the release loader reads the output as-is

    loaded = load_composite(out)
    assert loaded.flows.shape == (6, 28, 28, 3) and sorted(set(loaded.table["dataset"])) == ["samm", "smic"]


# --- errors name the sample ------------------------------------------------------------------


class NoFace:
    def detect(self, image, landmarks=False):
        return (None, None, None) if landmarks else (None, None)


def _casme2_with(tmp_path, change):
    rows = _casme2_rows()
    change(rows)
    return make_casme2(tmp_path / "raw", rows)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda rows: rows[0].__setitem__(2, "45"), r"sub01/EP02_01f: onset frame 45 not found"),
        (lambda rows: rows[0].__setitem__(3, "44"), r"sub01/EP02_01f: onset frame 46 is not before apex frame 44"),
        (lambda rows: rows[1].__setitem__(3, "abc"), r"sub01/EP03_02: apex frame 'abc' is not a frame number"),
        (lambda rows: rows[2].__setitem__(6, "confusion"), r"sub02/EP01_11f: unknown emotion 'confusion'"),
        (lambda rows: rows.append(list(rows[0])), r"sub01_EP02_01f: appears 2 times"),
        (lambda rows: rows[1].__setitem__(1, "EP99_99"), r"sub01/EP99_99: frame folder .* not found"),
    ],
)
def test_bad_annotation_rows_raise_data_error_naming_the_sample(tmp_path, change, message):
    root = _casme2_with(tmp_path, change)
    with pytest.raises(DataError, match=message):
        pp.preprocess("casme2", root, tmp_path / "out", progress=False, detector=NoFace())
    assert not (tmp_path / "out" / pp.TABLE_NAME).exists()


def test_every_bad_row_is_reported_at_once(tmp_path):
    def two_bad(rows):
        rows[0][2] = "x"
        rows[2][6] = "boredom"

    with pytest.raises(DataError) as caught:
        pp.read_samples("casme2", _casme2_with(tmp_path, two_bad))
    text = str(caught.value)
    assert "2 bad sample(s)" in text and "sub01/EP02_01f" in text and "sub02/EP01_11f" in text


def test_missing_frame_and_contradicting_labels_in_other_datasets(tmp_path):
    root = make_casme3a(tmp_path / "c3")
    (root / "part_A" / "spNO.1" / "j" / "color" / "105.jpg").unlink()
    with pytest.raises(DataError, match=r"spNO.1/j_102: apex frame .*105.jpg not found"):
        pp.read_samples("casme3a", root)
    table = root / "cas(me)3_part_A_ME_label_JpgIndex_v2.csv"
    text = table.read_text().replace("happy,0,1,", "happy,0,2,")
    assert "happy,0,2," in text
    table.write_text(text)
    with pytest.raises(DataError, match=r"spNO.1/j_28: label_for_3 '2' contradicts emotion 'happy'"):
        pp.read_samples("casme3a", root)
    smic = make_smic(tmp_path / "smic")
    (smic / "HS" / "s1" / "micro" / "negative" / "s1_ne_01").rename(smic / "HS" / "s1" / "micro" / "negative" / "s1_po_09")
    with pytest.raises(DataError, match=r"s01/s01_po_09: clip name 's1_po_09' contradicts its folder 'negative'"):
        pp.read_samples("smic", smic)


def test_no_face_raises_data_error_naming_the_sample(tmp_path):
    root = make_samm(tmp_path / "raw")
    with pytest.raises(DataError, match=r"samm sample 006/006_1_2: no face found in the onset frame"):
        pp.preprocess("samm", root, tmp_path / "out", progress=False, detector=NoFace())


def test_missing_table_root_and_bad_options(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no CASME II annotation table"):
        pp.preprocess("casme2", tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="no SMIC-HS subject folders"):
        pp.read_samples("smic", tmp_path / "empty")
    with pytest.raises(DataError, match="is not a folder"):
        pp.read_samples("samm", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown dataset"):
        pp.read_samples("casme4", tmp_path)
    with pytest.raises(ValueError, match="unknown optical flow method"):
        pp.preprocess("samm", tmp_path, tmp_path / "out", method="lucas-kanade")


def test_xlsx_table_needs_openpyxl(tmp_path):
    pytest.importorskip("pandas")
    try:
        import openpyxl  # noqa: F401

        pytest.skip("openpyxl is installed: xlsx tables are read")
    except ImportError:
        pass
    root = tmp_path / "raw"
    root.mkdir()
    (root / "SAMM_Micro_FACS_Codes_v2.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match="openpyxl"):
        pp.read_samples("samm", root)


def test_truncated_frame_raises_data_error_naming_it(tmp_path):
    root = make_samm(tmp_path / "raw")
    frame = root / "SAMM" / "006" / "006_1_3" / "006_00123.jpg"  # the apex of 006_1_3
    frame.write_bytes(frame.read_bytes()[:-200])
    assert cv2.imread(str(frame)) is not None  # OpenCV alone would decode half a frame
    with pytest.raises(DataError, match=r"006/006_1_3: .*006_00123.jpg: JPEG is truncated"):
        pp.preprocess("samm", root, tmp_path / "out", progress=False, detector=KnownFace())
    assert not (tmp_path / "out" / pp.TABLE_NAME).exists()


@pytest.mark.parametrize("workers", ["0", "-2", "two"])
def test_workers_below_one_is_a_usage_error(tmp_path, capsys, workers):
    from htnetlib.cli import app as cli

    argv = ["preprocess", "--dataset", "samm", "--root", str(tmp_path), "--out",
            str(tmp_path / "out"), "--workers", workers]
    try:  # argparse's SystemExit(2), whether main lets it through or returns its code
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert "argument --workers" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
