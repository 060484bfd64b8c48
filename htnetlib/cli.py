"""``htnet``: the command line of htnetlib.

    htnet data check [--data DIR]           verify a release folder (counts, SHA-256)
    htnet data fetch [--dest DIR]           download and verify the official release
    htnet train --profile {smoke,cpu,paper} [--seed N] [--out DIR] [--data DIR]
    htnet evaluate RUN_DIR                  Table 2 row of a run, both protocols, paper beside
    htnet preprocess --dataset D --root RAW --out DIR   flow maps from raw frames
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import data as data_mod


def _data_check(args) -> int:
    root = Path(args.data) if args.data else data_mod.default_root()
    problems = data_mod.check_release(root)
    if problems:
        print(f"{root}: {len(problems)} problem(s)")
        for p in problems[:50]:
            print("  " + p)
        return 1
    d = data_mod.load_composite(root)
    t = d.table
    print(f"{root}: OK, {len(t)} samples, {t.subject.nunique()} subjects, every file matches "
          "the manifest")
    for ds in ("smic", "casme2", "samm"):
        c = [int(((t.dataset == ds) & (t.label == k)).sum()) for k in (0, 1, 2)]
        print(f"  {data_mod.DATASET_NAMES[ds]:8s} negative/positive/surprise {c[0]}/{c[1]}/{c[2]}")
    return 0


def _data_fetch(args) -> int:
    dest = data_mod.fetch(args.dest, url=args.url)
    print(f"release written to {dest}; point HTNET_DATA at it")
    return 0


def _parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--set expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _ablation_config(text: str, profile: str, model: str):
    from .ablation import ABLATIONS

    key, sep, value = text.partition("=")
    if model != "htnet":
        raise SystemExit("--ablation applies to HTNet only (section 4.4)")
    if not sep or key not in ABLATIONS:
        raise SystemExit(f"--ablation expects NAME=VALUE with NAME one of {sorted(ABLATIONS)}, "
                         f"got {text!r}")
    ab = ABLATIONS[key]
    try:
        v = int(value)
    except ValueError:
        v = None
    if v not in ab.values:
        raise SystemExit(f"--ablation {key}: {value!r} is not a grid point of {ab.item}; "
                         f"choose one of {list(ab.values)} (the paper's grid; the profile "
                         "scales it)")
    return ab.config(v, profile)


def _train(args) -> int:
    import dataclasses

    from . import train

    config = train.profile_config(args.profile, args.model)
    if args.ablation:
        config = _ablation_config(args.ablation, args.profile, args.model)
    overrides = dict(_parse_override(s) for s in args.set or [])
    fields = {f.name for f in dataclasses.fields(train.Config)}
    unknown = set(overrides) - fields
    if unknown:
        raise SystemExit(f"unknown config key(s) {sorted(unknown)}; known: {sorted(fields)}")
    if "block_repeats" in overrides:
        overrides["block_repeats"] = tuple(overrides["block_repeats"])
    config = dataclasses.replace(config, **overrides)
    composite = data_mod.load_composite(args.data)
    run_dir = train.run_loso(composite, config, seed=args.seed, runs_dir=args.out,
                             profile=args.profile, device=args.device, retrain=args.retrain,
                             workers=args.workers, threads=args.threads or None,
                             trainer=args.trainer)
    print(run_dir)
    return _print_evaluation(run_dir)


def _print_evaluation(run_dir) -> int:
    from .report import markdown, table2_rows
    from .train import load_run

    run = load_run(run_dir)
    print(f"run {run.meta['run_id']}: profile {run.meta.get('profile')}, seed {run.meta['seed']}, "
          f"{run.meta.get('n_folds')} folds, device {run.meta['device']}")
    print(markdown(table2_rows(run)))
    return 0


def _evaluate(args) -> int:
    return _print_evaluation(args.run_dir)


def _preprocess(args) -> int:
    from . import preprocess

    return preprocess.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="htnet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p_data = sub.add_parser("data", help="the official release: check or fetch")
    data_sub = p_data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("check", help="verify samples, subjects, class counts and SHA-256")
    p.add_argument("--data", help="release folder (default: $HTNET_DATA, else ./data)")
    p.set_defaults(func=_data_check)
    p = data_sub.add_parser("fetch", help="download the official release from GitHub")
    p.add_argument("--dest", help="target folder (default: $HTNET_DATA, else ./data)")
    p.add_argument("--url", default=data_mod.OFFICIAL_URL, help="repository archive (zip)")
    p.set_defaults(func=_data_fetch)

    from .train import PROFILES

    p = sub.add_parser("train", help="LOSO training of one profile and seed")
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    p.add_argument("--model", choices=("htnet", "ststnet", "logreg"), default="htnet",
                   help="HTNet, or a Table 2 baseline trained on the same folds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/runs", help="runs folder (default results/runs)")
    p.add_argument("--data", help="release folder (default: $HTNET_DATA, else ./data)")
    p.add_argument("--device", help="cuda, mps or cpu (default: the first available)")
    p.add_argument("--workers", type=int, default=1, help="fold processes (CPU)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per fold process (default 1; 0 keeps torch's default)")
    p.add_argument("--trainer", choices=("auto", "loop", "grouped"), default="auto",
                   help="loop: fold after fold in --workers processes; grouped: many folds as "
                        "one batched computation (default on a GPU)")
    p.add_argument("--retrain", action="store_true", help="train again even if the run exists")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field, e.g. --set epochs=50 --set regions=corrected")
    p.add_argument("--ablation", metavar="NAME=VALUE",
                   help="a section 4.4 grid point in the paper's units, scaled by the profile as "
                        "notebooks 06-09 do: block_size=5..10, dim=64..512, heads=1..8, "
                        "layers=2..12 (e.g. --ablation layers=2)")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="print a run's Table 2 row for both protocols")
    p.add_argument("run_dir")
    p.set_defaults(func=_evaluate)

    from . import preprocess

    p = sub.add_parser("preprocess", help="flow maps in the release layout from raw frames",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    preprocess.add_arguments(p)
    p.set_defaults(func=_preprocess)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except data_mod.DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
