"""``htnet preprocess``: raw micro-expression datasets -> the official release layout.

The pipeline is :func:`htnetlib.data.preprocess.preprocess`; this module holds its options and
the one-line summary it prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import whole_number
from .predict import APEX_METHODS, FLOW_METHODS

DATASETS = ("casme2", "samm", "smic", "casme3a")  # htnetlib.data.preprocess.DATASETS
TABLE_NAME = "combined_3_class2_for_optical_flow.csv"

LAYOUT_HELP = """\
raw layouts (--root):
  casme2   <root>/[<frames>/]sub01/EP02_01f/img46.jpg + CASME2-coding-*.csv
           (Subject, Filename, OnsetFrame, ApexFrame, OffsetFrame, Estimated Emotion)
  samm     <root>/[<frames>/]006/006_1_2/006_05562.jpg + SAMM_Micro_FACS_Codes*.csv
           (Subject, Filename, Onset Frame, Apex Frame, Offset Frame, Estimated Emotion)
  smic     <root>/[HS/]s1/micro/negative/s1_ne_01/image106474.bmp (apex by D&C-RoIs)
  casme3a  <root>/[<frames>/]spNO.1/b/color/166.jpg + cas(me)3_part_A*.csv
           (Subject, Filename, Onset, Apex, emotion[, imagename_onset, imagename_apex])
tables may be .xlsx when openpyxl is installed; empty, '/' or negative apex cells
(casme2, samm) are spotted between onset and offset."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --dataset, --root, --out, --workers and --method to ``parser``."""
    if parser.epilog is None:
        parser.epilog = LAYOUT_HELP
        if parser.formatter_class is argparse.HelpFormatter:
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--dataset", required=True, choices=DATASETS,
                        help="which raw dataset --root holds")
    parser.add_argument("--root", required=True, type=Path,
                        help="the dataset's raw folder with its annotation table (layouts below)")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder: combined_3_class2_for_optical_flow.csv and datasets/...")
    parser.add_argument("--workers", type=whole_number(1), default=1,
                        help="processes working on samples in parallel (default 1)")
    parser.add_argument("--method", choices=FLOW_METHODS, default="farneback",
                        help="optical flow (default farneback: section 4.2's name, about 0.02 s a "
                             "face; tvl1: the method the official release's maps were made "
                             "with, the closest to what the models learn from, about 0.4 s a "
                             "face; dis: fast)")
    parser.add_argument("--apex-spotter", choices=APEX_METHODS, default="lbp",
                        help="where no apex is annotated (SMIC): lbp (the paper's D&C-RoIs, "
                             "default) or flow (flow magnitude in the same regions; steadier "
                             "for motion above about 1 px)")


def run(args: argparse.Namespace) -> int:
    """``htnet preprocess``: preprocess, print a one-line summary, return 0."""
    from ..data.preprocess import preprocess

    table = preprocess(args.dataset, args.root, args.out, workers=args.workers, method=args.method,
                       apex_method=args.apex_spotter)
    mine = table[table["dataset"] == args.dataset]
    counts = mine["label"].value_counts()
    print(
        f"{args.dataset}: {len(mine)} samples (negative {counts.get(0, 0)}, positive "
        f"{counts.get(1, 0)}, surprise {counts.get(2, 0)}; {table.attrs.get('dropped', 0)} "
        f"outside the three classes dropped) written to {args.out / TABLE_NAME}"
    )
    return 0

