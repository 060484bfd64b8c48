"""``htnet fit``, ``htnet calibrate`` and ``htnet predict``: their options, checks and output.

The work is :func:`htnetlib.predict.fitted_model`, :func:`htnetlib.predict.calibrate`,
:class:`htnetlib.predict.Model` and :func:`htnetlib.study.card.write_card`; the answer's keys
are documented in :mod:`htnetlib.predict`. ``htnet calibrate`` fits the temperature of a model
folder on stored LOSO runs of its configuration (temperature scaling, Guo et al. 2017;
:mod:`htnetlib.evaluation.calibration`), writes calibration.json and the card again, and prints
the temperature and the ECE before and after.
A batch (``--pairs FILE.csv`` or ``--sequences DIR``) answers item after item, with a progress
bar on stderr: one JSON line per item (``--json``), one CSV row (``--csv OUT``) or a text table;
an item that fails is reported in its row (``error``) and the others still run; the exit
status is then 3.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

from ..config import PROFILES, apply_overrides, check_seed
from ..errors import EXIT_DATA, EXIT_REFUSED, EXIT_RUNTIME, ConfigError, UsageError
from .common import check_device, check_writable, set_threads

FLOW_METHODS = ("tvl1", "farneback", "dis")  # htnetlib.data.flow.FLOW_METHODS (checked by a test)
APEX_METHODS = ("lbp", "flow")  # htnetlib.data.flow.APEX_METHODS
DEFAULT_FLOW = "tvl1"  # htnetlib.predict.DEFAULT_FLOW: the release's method
PROFILE_ORDER = ("smoke", "cpu", "paper")  # htnetlib.cli.app.PROFILE_ORDER
BATCH_COLUMNS = ("item", "label", "negative", "positive", "surprise", "motion_px", "no_motion",
                 "flow_method", "seconds", "error")

FIT_EXAMPLE = """\
example:
  htnet fit --profile cpu --data data            # about 10 s on two CPU cores
  htnet fit --profile smoke --out /tmp/m --set regions=whole
The folder holds model.safetensors, model.json and MODEL_CARD.md (data, configuration, the
stored honest LOSO score of that configuration, intended use and limits)."""

# every key of an answer, as make_answer orders them, and what it holds
ANSWER_KEYS = {
    "label": "class name, or null: no motion found (in a batch also: the item failed)",
    "probabilities": "{class: p}: softmax(logits / T) with the folder's calibration.json "
                     "(htnet calibrate), else the network's softmax, not calibrated; "
                     "listed but meaningless where label is null",
    "calibrated": "whether a calibration.json temperature was applied",
    "temperature": "that temperature T, or null",
    "probabilities_uncalibrated": "the network's softmax; the label is its argmax",
    "no_motion": "motion_px below the threshold (and no --force)",
    "forced": "whether --force was given",
    "motion_threshold_px": "the flow method's no-motion threshold (null for --flow)",
    "motion_px": "mean flow magnitude in px at the 224x224 face, eye and mouth regions "
                 "(null for --flow: a map holds no size)",
    "flow_method": "tvl1, farneback or dis (null for --flow)",
    "seconds": "wall time of this prediction, from reading the files to the softmax",
    "model": "{path, profile, seed, data_fingerprint, sha256 (of model.safetensors)}",
    "input": "pair, flow or sequence",
    "files": "the files read",
    "apex_frame": "sequences only: the spotted apex {index, file, frames, skipped}; skipped: "
                  "the frames that show no face (too little contrast, noise, or no face found "
                  "by MTCNN), never taken as the apex",
    "landmarks_found": "whether MTCNN found a face for the landmarks on the apex face (null "
                       "for a regions=whole model)",
    "regions_from": "where the four regions come from: 'landmarks' (MTCNN's, on this apex "
                    "face), 'fixed fallback' (no face found: the official code's fixed "
                    "landmarks of an average 28x28 face, as in training, so the crops need "
                    "not lie on this face's eyes and mouth) or 'whole map' (regions=whole)",
    "error": "batches only: null, or the item's one-line error (the others still run)",
    "item": "batches only: the item's name (the CSV row's onset -> apex, or the subfolder)",
}


def keys_help(width: int = 94) -> str:
    """Every key of :data:`ANSWER_KEYS` with what it holds, wrapped for ``--help``."""
    import textwrap

    lines = []
    for key, what in ANSWER_KEYS.items():
        lines += textwrap.wrap(what, width, initial_indent=f"  {key:27s}",
                               subsequent_indent=" " * 29)
    return "\n".join(lines)


PREDICT_EXAMPLE = """\
examples:
  htnet predict --model M --onset onset.png --apex apex.png
  htnet predict --model M --sequence frames/ --json
  htnet predict --model M --flow map.png --apex apex_face.png
  htnet predict --model M --pairs pairs.csv --csv answers.csv   # columns onset, apex
  htnet predict --model M --sequences clips/ --json              # one line per subfolder
Below the flow method's motion threshold (motion_px: mean flow in px at the 224x224 face, eye
and mouth regions) the answer is "no motion" (label null) unless --force. The probabilities
are the network's softmax, not calibrated, unless the model folder holds calibration.json
(htnet calibrate): then softmax(logits / T). Where MTCNN finds no face on the apex face, the
four regions come from fixed fallback landmarks (regions_from), as in training.
JSON keys (--json; one object per item):
""" + keys_help()

FALLBACK_NOTE = ("note: regions from fixed fallback landmarks: MTCNN found no face on the apex "
                 "face, so the four regions (eyes, mouth corners) were cropped where the "
                 "official code puts them on an average 28x28 face, as in training, not at this "
                 "face's own eyes and mouth (regions_from: fixed fallback)")


CALIBRATE_EXAMPLE = """\
example:
  htnet calibrate --model M --runs results/runs/htnet-cpu-s0-<hash> results/runs/htnet-cpu-s1-<hash>
The runs must have the model's configuration and data and store probabilities (trained since
epochs.npz keeps prob). Writes M/calibration.json (temperature, runs, ECE and NLL before and
after) and rewrites M/MODEL_CARD.md; htnet predict then answers calibrated probabilities."""


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: fastest for HTNet and MTCNN on shared CPU "
                             "cores, as htnet train; 0 keeps torch's default)")


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    """``htnet fit``: --profile, --seed, --out, --data, --device, --threads, --set, --refit,
    --allow-slow."""
    parser.epilog = FIT_EXAMPLE
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--profile", choices=PROFILE_ORDER, default="cpu",
                        help="the configuration and schedule to fit (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed, 0 to 2**31 - 1 (default 0)")
    parser.add_argument("--out", type=Path, help="model folder (default: .cache/models/"
                        "<profile>-s<seed>-<data fingerprint> in the repository, git-ignored)")
    parser.add_argument("--data", help="release folder (default: $HTNET_DATA, else ./data)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the first "
                        "available)")
    _add_threads(parser)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config field, e.g. --set regions=whole (default: none)")
    parser.add_argument("--refit", action="store_true",
                        help="fit again even if --out holds this model (default: reuse it)")
    parser.add_argument("--allow-slow", action="store_true",
                        help="fit the paper profile on a CPU anyway (default: refuse, with the "
                             "estimated hours)")


def slow_fit_refusal(config, device) -> str | None:
    """The one-line refusal of a paper-profile fit on a CPU (the plan's estimate of one LOSO
    fold, about one fit on every sample), or None where the fit is allowed."""
    from ..study.plan import estimate
    from ..training.fold import pick_device

    if pick_device(device).type != "cpu":
        return None
    seconds, what = estimate(config, "cpu", workers=1, n_folds=1)
    hours = "an unknown number of" if seconds is None else f"about {seconds / 3600:.1f}"
    return (f"refused: fitting the paper profile here takes {hours} hours on this CPU "
            f"({what}); it is cheap on a GPU (minutes: htnet fit --profile paper --device cuda"
            ", or bench/gpu.sh on one GPU); --allow-slow fits here anyway")


def run_fit(args: argparse.Namespace) -> int:
    """``htnet fit``: check the arguments, load the release, fit (or reuse) with a progress
    bar over epochs on stderr, write the model card, print the folder."""
    from ..study.card import write_card
    from ..data import load_composite
    from ..predict import check_out_dir, fitted_model

    seed = check_seed(args.seed)
    config = apply_overrides(PROFILES[args.profile], args.set or [])
    device = check_device(args.device)
    set_threads(args.threads)
    if args.out is not None:
        check_out_dir(args.out)
        check_writable(args.out)
    if args.profile == "paper" and not getattr(args, "allow_slow", False):
        refusal = slow_fit_refusal(config, device)
        if refusal:
            raise UsageError(refusal, EXIT_REFUSED)
    data = load_composite(args.data)
    model, fitted = fitted_model(data, args.profile, seed, model_dir=args.out, config=config,
                                 device=device, refit=args.refit, progress=True)
    card = write_card(model)
    t = model.meta["training"]
    what = (f"fitted in {t['seconds']} s on {t['device']}" if fitted
            else "already fitted, reused")
    print(f"{model.path}\n{model.config.model} (profile {args.profile}, seed {seed}, regions "
          f"{model.config.regions}) on all {model.meta['n_samples']} samples, {what}; final "
          f"epoch {t['epochs']}: training loss {t['final_train_loss']:.4f}, training accuracy "
          f"{t['final_train_acc']:.3f} (not an accuracy estimate: see {card.name})")
    return 0


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    """``htnet calibrate``: --model and --runs."""
    parser.epilog = CALIBRATE_EXAMPLE
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", required=True, type=Path, help="a folder made by htnet fit")
    parser.add_argument("--runs", required=True, nargs="+", type=Path, metavar="RUN_DIR",
                        help="stored LOSO run folders of the model's configuration and data")


def run_calibrate(args: argparse.Namespace) -> int:
    """``htnet calibrate``: load the model and the runs, fit and write calibration.json,
    write the card again, print the temperature and the ECE before and after."""
    import zipfile

    from ..errors import DataError
    from ..predict import Model, calibrate
    from ..study.card import write_card
    from ..training.store import load_run

    Model.load(args.model)  # a bad model folder is named before any run is read
    check_writable(args.model, "--model")  # calibration.json and the card are written there
    runs = []
    for run_dir in args.runs:
        try:
            runs.append(load_run(run_dir))
        except (DataError, FileNotFoundError):
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            why = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(f"{run_dir}: not a readable run ({why})") from None
    record = calibrate(args.model, runs)
    card = write_card(Model.load(args.model))
    print(f"{Path(args.model) / 'calibration.json'}\ntemperature {record['temperature']:.4f} "
          f"fitted on {record['samples']} held-out final-epoch probabilities of "
          f"{len(record['runs'])} run(s)")
    print(f"ECE (10 bins) {record['ece_before']:.4f} -> {record['ece_after']:.4f}; "
          f"NLL {record['nll_before']:.4f} -> {record['nll_after']:.4f}; card: {card}")
    return 0


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """``htnet predict``: --model and one of --onset/--apex, --flow (+ --apex), --sequence,
    --pairs, --sequences."""
    parser.epilog = PREDICT_EXAMPLE
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", required=True, type=Path, help="a folder made by htnet fit")
    parser.add_argument("--onset", type=Path, help="onset frame (with --apex)")
    parser.add_argument("--apex", type=Path,
                        help="apex frame (with --onset); with --flow: the apex face the map was "
                             "computed from, for the landmarks of the four regions")
    parser.add_argument("--flow", type=Path, help="a 28x28 release-style flow map PNG "
                        "(channels (u, v, strain) as RGB)")
    parser.add_argument("--sequence", type=Path, help="a folder of frames, the first the onset; "
                        "the apex is spotted (D&C-RoIs)")
    parser.add_argument("--pairs", type=Path, help="a CSV with columns onset, apex (paths "
                        "relative to the CSV's folder, or absolute): one answer per row")
    parser.add_argument("--sequences", type=Path,
                        help="a folder whose every subfolder is a frame sequence: one answer each")
    parser.add_argument("--flow-method", choices=FLOW_METHODS, default=DEFAULT_FLOW,
                        help="optical flow from frames (default tvl1, the release's; farneback "
                             "is section 4.2's name)")
    parser.add_argument("--apex-method", choices=APEX_METHODS, default="lbp",
                        help="apex spotting for sequences (default lbp: D&C-RoIs, eq. 1)")
    parser.add_argument("--force", action="store_true",
                        help="give a class even where no motion is found (default: label null "
                             "below the motion threshold)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help="print JSON (a batch: one line per item; default: text)")
    out.add_argument("--csv", type=Path, metavar="OUT",
                     help="a batch: write one CSV row per item to OUT (default: a text table)")
    _add_threads(parser)


def _predict_input(args) -> str:
    """Which input the arguments give: pair, flow, sequence, pairs or sequences."""
    flags = (("--onset", "onset", "pair"), ("--flow", "flow", "flow"),
             ("--sequence", "sequence", "sequence"), ("--pairs", "pairs", "pairs"),
             ("--sequences", "sequences", "sequences"))
    given = [(flag, kind) for flag, attr, kind in flags if getattr(args, attr, None) is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one of --onset A --apex B, --flow MAP.png [--apex FACE], "
                          "--sequence FOLDER, --pairs FILE.csv or --sequences DIR (got "
                          f"{', '.join(f for f, _ in given) or 'none'})")
    kind = given[0][1]
    if kind == "pair" and args.apex is None:
        raise ConfigError("--onset needs --apex (the apex frame)")
    if kind in ("sequence", "pairs", "sequences") and args.apex is not None:
        raise ConfigError(f"{given[0][0]} gives the apex frames itself; leave out --apex")
    if getattr(args, "csv", None) is not None and kind not in ("pairs", "sequences"):
        raise ConfigError("--csv OUT writes a batch: use it with --pairs or --sequences")
    return kind


def answer_one(model, kind: str, args, onset=None, apex=None, sequence=None) -> dict:
    """The answer (keys in :mod:`htnetlib.predict`) to one pair, map or sequence."""
    from ..predict import make_answer, sequence_files

    start = time.perf_counter()
    method, where = args.flow_method, {"input": kind}
    force = getattr(args, "force", False)
    if kind == "pair":
        probs, maps = model.predict(onset, apex, return_maps=True, flow_method=method)
        where["files"] = {"onset": str(onset), "apex": str(apex)}
    elif kind == "flow":
        if apex is None and model.config.regions != "whole":
            raise ConfigError(f"--flow needs --apex FACE for this model (regions="
                              f"{model.config.regions}: the four regions are placed by landmarks "
                              "of the apex face, which a flow map does not hold)")
        probs, maps = model.predict_map(args.flow, apex, return_maps=True)
        method = None
        where["files"] = {"flow": str(args.flow), "apex": str(apex) if apex else None}
    else:
        files = sequence_files(sequence)
        probs, maps = model.predict_sequence(files, return_maps=True,
                                             apex_method=args.apex_method, flow_method=method)
        i = maps["apex_index"]
        where["files"] = {"sequence": str(sequence)}
        where["apex_frame"] = {"index": i, "file": str(files[i]), "frames": len(files),
                               "skipped": [str(files[k]) for k in maps["skipped_frames"]]}
    return make_answer(model, probs, maps, flow_method=method, force=force,
                       seconds=time.perf_counter() - start, **where)


def run_predict(args: argparse.Namespace) -> int:
    """``htnet predict``: the answer to one input (text, or ``--json``), or to a batch."""
    from ..predict import Model

    kind = _predict_input(args)
    if getattr(args, "csv", None) is not None:
        check_csv_out(args.csv)
    set_threads(args.threads)
    model = Model.load(args.model)
    if kind in ("pairs", "sequences"):
        return run_batch(model, kind, args)
    out = answer_one(model, kind, args, onset=args.onset, apex=args.apex,
                     sequence=args.sequence)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print_answer(out)
    return 0


def check_csv_out(path: Path) -> None:
    """UsageError, before any work, unless ``--csv OUT`` can be written: OUT a directory (exit
    2), or its folder missing or read-only (exit 4)."""
    if path.is_dir():
        raise UsageError(f"--csv {path}: is a directory; name a file to write the answers to")
    if not path.parent.is_dir():
        raise UsageError(f"--csv {path}: no folder {path.parent} to write it in")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"--csv {path}: is not writable", EXIT_RUNTIME)
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"--csv {path}: the folder {path.parent} is not writable", EXIT_RUNTIME)


def print_answer(out: dict) -> None:
    """The text form of one answer: the class (or no motion), the probabilities, the model."""
    if "apex_frame" in out:
        a = out["apex_frame"]
        print(f"apex: {Path(a['file']).name}, frame {a['index'] + 1} of {a['frames']}")
    if out["regions_from"] == "fixed fallback":
        print(FALLBACK_NOTE)
    if out["no_motion"]:
        print(f"prediction: no motion found ({out['motion_px']:.3f} px moved in the eye and "
              f"mouth regions, below {out['motion_threshold_px']} px for {out['flow_method']}; "
              "--force classifies anyway)")
        print(f"probabilities (not meaningful without motion; {calibration_words(out)}):")
    else:
        moved = ("" if out["motion_px"] is None else
                 f" ({out['motion_px']:.3f} px moved, {out['flow_method']} flow)")
        print(f"prediction: {out['label']}{moved}")
        print(f"probabilities ({calibration_words(out)}):")
    for c, p in out["probabilities"].items():
        print(f"  {c:9s} {p:.3f}")
    m = out["model"]
    print(f"model: {m['path']} (profile {m['profile']}, seed {m['seed']}, data "
          f"{m['data_fingerprint']}, weights sha256 {str(m['sha256'])[:12]})")
    # the time goes to stderr: the answer on stdout is the same on every run
    print(f"time: {out['seconds']:.2f} s", file=sys.stderr)


def calibration_words(out: dict) -> str:
    """How an answer's probabilities were made, in words."""
    if out.get("calibrated"):
        return f"calibrated: softmax(logits / T), temperature T = {out['temperature']:.3f}"
    return "the network's softmax, not calibrated"


def batch_items(kind: str, source: Path) -> list[tuple[str, dict]]:
    """(name, arguments of :func:`answer_one`) per item of a --pairs CSV or --sequences
    folder; DataError for a file or folder that cannot be read at all."""
    from ..errors import DataError

    if kind == "sequences":
        if not source.is_dir():
            raise DataError(f"{source}: no such folder of sequences")
        folders = sorted(p for p in source.iterdir() if p.is_dir())
        if not folders:
            raise DataError(f"{source}: holds no subfolder (one per sequence)")
        return [(p.name, {"sequence": p}) for p in folders]
    if source.is_dir():
        raise DataError(f"{source}: is a directory, not a CSV file of pairs")
    try:  # utf-8-sig: a CSV saved by Excel ("CSV UTF-8") starts with a byte-order mark
        with open(source, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            fields = set(rows[0]) if rows else set()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{source}: not readable as CSV ({exc})") from None
    if not {"onset", "apex"} <= fields:
        raise DataError(f"{source}: needs columns onset and apex (has "
                        f"{', '.join(sorted(f for f in fields if f)) or 'no rows'})")
    base = source.resolve().parent  # base / an absolute path is that path
    items = []
    for number, r in enumerate(rows, 2):  # row 1 is the header
        cells = {k: (r.get(k) or "").strip() for k in ("onset", "apex")}
        empty = [k for k, v in cells.items() if not v]
        name = f"{cells['onset']} -> {cells['apex']}"
        if empty:
            items.append((name, {**cells, "error": f"{source}: row {number}: no "
                                 f"{' and no '.join(empty)} file named (an empty cell or a "
                                 "short row)"}))
        else:
            items.append((name, {k: base / v for k, v in cells.items()}))
    return items


def run_batch(model, kind: str, args) -> int:
    """Answer every item of a batch; a failed item's row holds its error; exit 3 if any."""
    from tqdm.auto import tqdm

    from ..errors import DataError

    items = batch_items(kind, args.pairs if kind == "pairs" else args.sequences)
    item_kind = "pair" if kind == "pairs" else "sequence"
    answers, t = [], (model.calibration or {}).get("temperature")
    for name, inputs in tqdm(items, desc="predict", unit=item_kind, file=sys.stderr):
        try:
            if "error" in inputs:  # a bad row of the CSV, named by its number
                raise DataError(inputs["error"])
            out = answer_one(model, item_kind, args, **inputs)
            out["error"] = None
        except (DataError, OSError) as exc:  # a bad item; a bug or a bad setting stops the batch
            out = {"label": None, "probabilities": None, "calibrated": t is not None,
                   "temperature": t, "probabilities_uncalibrated": None, "no_motion": None,
                   "forced": bool(args.force), "motion_px": None, "motion_threshold_px": None,
                   "flow_method": args.flow_method, "seconds": None, "model": model.identity,
                   "input": item_kind,
                   "files": {k: str(v) for k, v in inputs.items() if k != "error"},
                   "landmarks_found": None, "regions_from": None, "error": " ".join(str(exc).split())}
        out["item"] = name
        answers.append(out)
        if args.json:
            print(json.dumps(out), flush=True)
    if args.csv is not None:
        from ..io import write_text

        write_text(args.csv, batch_csv(answers))
    elif not args.json:
        print(batch_csv(answers, sep="\t"), end="")
        words = "not calibrated" if t is None else f"calibrated (temperature {t:.3f})"
        print(f"model: {model.path}; probabilities {words}; label empty: no motion "
              "(or an error)")
    failed = sum(a["error"] is not None for a in answers)
    if failed:
        print(f"htnet: {failed} of {len(answers)} item(s) failed (see their error)",
              file=sys.stderr)
    return EXIT_DATA if failed else 0


def batch_csv(answers: list[dict], sep: str = ",") -> str:
    """One row per answer (:data:`BATCH_COLUMNS`), with a header row."""
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=sep, lineterminator="\n")
    writer.writerow(BATCH_COLUMNS)
    for a in answers:
        probs = a["probabilities"] or {}
        row = {**a, **probs}
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in BATCH_COLUMNS])
    return buffer.getvalue()
