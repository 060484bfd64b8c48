"""``htnet fit`` and ``htnet predict``: their options, checks and printed answers.

The work is :func:`htnetlib.predict.fitted_model` and :class:`htnetlib.predict.Model`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import PROFILES, apply_overrides, check_seed
from ..errors import ConfigError
from .common import check_device, set_threads

FLOW_METHODS = ("farneback", "dis")  # htnetlib.data.flow.FLOW_METHODS (checked by a test)
APEX_METHODS = ("lbp", "flow")  # htnetlib.data.flow.APEX_METHODS


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: fastest for HTNet and MTCNN on shared "
                             "CPU cores, as htnet train; 0 keeps torch's default)")


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    """``htnet fit``: --profile, --seed, --out, --data, --device, --threads, --set, --refit."""
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu",
                        help="the configuration and schedule to fit (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed, 0 to 2**31 - 1 (default 0)")
    parser.add_argument("--out", type=Path, help="model folder (default: .cache/models/"
                        "<profile>-s<seed>-<data fingerprint> in the repository, git-ignored)")
    parser.add_argument("--data", help="release folder (default: $HTNET_DATA, else ./data)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the first "
                        "available)")
    _add_threads(parser)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config field, e.g. --set regions=whole")
    parser.add_argument("--refit", action="store_true",
                        help="fit again even if --out holds this model")


def run_fit(args: argparse.Namespace) -> int:
    """``htnet fit``: check the arguments, load the release, fit (or reuse), print the folder."""
    from ..data import load_composite
    from ..predict import check_out_dir, fitted_model

    seed = check_seed(args.seed)
    config = apply_overrides(PROFILES[args.profile], args.set or [])
    device = check_device(args.device)
    set_threads(args.threads)
    if args.out is not None:
        check_out_dir(args.out)
    data = load_composite(args.data)
    model, fitted = fitted_model(data, args.profile, seed, model_dir=args.out, config=config,
                                 device=device, refit=args.refit)
    t = model.meta["training"]
    what = (f"fitted in {t['seconds']} s on {t['device']}" if fitted
            else "already fitted, reused")
    print(f"{model.path}\n{model.config.model} (profile {args.profile}, seed {seed}, regions "
          f"{model.config.regions}) on all {model.meta['n_samples']} samples, {what}; final "
          f"epoch {t['epochs']}: training loss {t['final_train_loss']:.4f}, training accuracy "
          f"{t['final_train_acc']:.3f} (not an accuracy estimate: see htnet train)")
    return 0


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """``htnet predict``: --model and one of --onset/--apex, --flow (+ --apex), --sequence."""
    parser.add_argument("--model", required=True, type=Path, help="a folder made by htnet fit")
    parser.add_argument("--onset", type=Path, help="onset frame (with --apex)")
    parser.add_argument("--apex", type=Path,
                        help="apex frame (with --onset); with --flow: the apex face the map was "
                             "computed from, for the landmarks of the four regions")
    parser.add_argument("--flow", type=Path, help="a 28x28 release-style flow map PNG "
                        "(channels (u, v, strain) as RGB)")
    parser.add_argument("--sequence", type=Path, help="a folder of frames, the first the onset; "
                        "the apex is spotted (D&C-RoIs)")
    parser.add_argument("--flow-method", choices=FLOW_METHODS, default="farneback",
                        help="optical flow from frames (default farneback, section 4.2)")
    parser.add_argument("--apex-method", choices=APEX_METHODS, default="lbp",
                        help="apex spotting for --sequence (default lbp: D&C-RoIs, eq. 1)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _add_threads(parser)


def _predict_input(args) -> str:
    """Which input the arguments give: pair, flow or sequence; ConfigError otherwise."""
    given = [k for k, v in (("--onset", args.onset), ("--flow", args.flow),
                            ("--sequence", args.sequence)) if v is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one of --onset A --apex B, --flow MAP.png [--apex FACE] "
                          f"or --sequence FOLDER (got {', '.join(given) or 'none'})")
    if args.onset is not None and args.apex is None:
        raise ConfigError("--onset needs --apex (the apex frame)")
    if args.sequence is not None and args.apex is not None:
        raise ConfigError("--sequence finds the apex itself; leave out --apex")
    return {"--onset": "pair", "--flow": "flow", "--sequence": "sequence"}[given[0]]


def run_predict(args: argparse.Namespace) -> int:
    """``htnet predict``: the class and the three probabilities (``--json``: as JSON)."""
    import numpy as np

    from ..predict import Model, sequence_files

    kind = _predict_input(args)
    set_threads(args.threads)
    model = Model.load(args.model)
    out = {"model": str(args.model), "input": kind}
    if kind == "pair":
        probs, maps = model.predict(args.onset, args.apex, return_maps=True,
                                    flow_method=args.flow_method)
        out["files"] = {"onset": str(args.onset), "apex": str(args.apex)}
    elif kind == "flow":
        if args.apex is None and model.config.regions != "whole":
            raise ConfigError(f"--flow needs --apex FACE for this model (regions="
                              f"{model.config.regions}: the four regions are placed by landmarks "
                              "of the apex face, which a flow map does not hold)")
        probs, maps = model.predict_map(args.flow, args.apex, return_maps=True)
        out["files"] = {"flow": str(args.flow), "apex": str(args.apex) if args.apex else None}
    else:
        files = sequence_files(args.sequence)
        probs, maps = model.predict_sequence(files, return_maps=True,
                                             apex_method=args.apex_method,
                                             flow_method=args.flow_method)
        apex = maps["apex_index"]
        out["files"] = {"sequence": str(args.sequence)}
        out["apex_frame"] = {"index": apex, "file": str(files[apex]), "frames": len(files)}
    label = int(np.argmax(probs))
    out.update({"class": model.classes[label], "label": label,
                "probabilities": {c: round(float(p), 6) for c, p in zip(model.classes, probs)},
                "landmarks_found": maps["landmarks_found"]})
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if kind == "sequence":
        a = out["apex_frame"]
        print(f"apex: {Path(a['file']).name}, frame {a['index'] + 1} of {a['frames']}")
    if maps["landmarks_found"] is False:
        print(f"note: MTCNN found no face for the landmarks ({model.config.regions} mode); "
              "the fixed fallback landmarks were used, as in training")
    print(f"prediction: {out['class']}")
    for c, p in out["probabilities"].items():
        print(f"  {c:9s} {p:.3f}")
    return 0

