"""``htnet``: the command line of htnetlib.

    htnet data check [--data DIR]           verify a release folder (counts, SHA-256)
    htnet data fetch [--dest DIR]           download and verify the official release
    htnet train --profile {smoke,cpu,paper} [--seed N] [--out DIR] [--data DIR]
                [--protocol loso|nested|lodo]   a LOSO run; its nested inner fits; or LODO
    htnet evaluate RUN_DIR                  Table 2 row of a run, both protocols, paper beside
    htnet preprocess --dataset D --root RAW --out DIR   flow maps from raw frames
    htnet grid --profile P [--launcher local|slurm] [--dry-run]   missing runs as scheduler jobs
    htnet fit --profile {cpu,paper,smoke} [--seed N] [--out DIR]  one model on every sample
    htnet predict --model DIR (--onset A --apex B | --flow MAP --apex B | --sequence DIR) [--json]

An error a user can cause prints one line, ``htnet: error: <message>``, on stderr, naming the
file or value and what is wrong, and exits with a status that says what kind of error it was:

    0    success
    1    a check found problems (``htnet data check``)
    2    usage: a bad argument or configuration value (``--set``, ``--seed``, ``--device``,
         ``--out`` naming a file, ...); nothing has been trained or written
    3    data: a missing, unreadable or corrupt input file, release or run folder
    4    runtime: training failed (e.g. a NaN loss), the device is out of memory or fails,
         the output folder is not writable
    70   internal error: a bug in htnetlib; its traceback is printed, please report it
    130  interrupted (Ctrl-C); an interrupted ``htnet train`` resumes where it stopped

``--set KEY=VALUE`` is read by the type of the config field (true/false, whole numbers, numbers,
lists such as 2,2,8) and the whole configuration is checked before any run folder exists.
``htnet --debug ...`` or ``HTNET_DEBUG=1`` shows the traceback of an error instead of one line.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
import zipfile
from pathlib import Path

from . import data as data_mod
from .config import ConfigError, TrainingError, whole_number

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_DATA, EXIT_RUNTIME = 0, 1, 2, 3, 4
EXIT_BUG, EXIT_INTERRUPTED = 70, 130
# Words in a RuntimeError of torch that mean the device failed, not the code.
_DEVICE_FAILURES = ("out of memory", "cuda error", "cudnn_status", "cublas_status", "mps backend")


class CliError(Exception):
    """A bad argument found by a subcommand's own checks, with the exit status it means."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- argument checks


def _check_device(text: str | None) -> str | None:
    """``text`` if it names a device torch can use here (cpu, cuda, cuda:N, mps), else CliError."""
    if text is None:
        return None
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise CliError(f"--device {text!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CliError(f"--device {text}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise CliError(f"--device {text}: this machine has {count} CUDA device(s)")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if not (mps and mps.is_available()):
            raise CliError(f"--device {text}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise CliError(f"--device {text!r}: htnet trains on cpu, cuda or mps")
    return text


def _check_out(text: str) -> Path:
    """The runs folder ``text`` if it is, or can be made, a writable folder; else CliError."""
    path = Path(text)
    existing = path.absolute()
    while not existing.exists():  # the nearest folder that exists (a file stops it too)
        existing = existing.parent
    if not existing.is_dir():
        where = "it" if existing == path.absolute() else str(existing)
        raise CliError(f"--out {text}: {where} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CliError(f"--out {text}: {existing} is not writable", EXIT_RUNTIME)
    return path


def _ablation_config(text: str, profile: str, model: str):
    from .ablation import ABLATIONS

    key, sep, value = text.partition("=")
    if model != "htnet":
        raise CliError(f"--ablation {text}: applies to HTNet only (section 4.4), not "
                       f"--model {model}")
    if not sep or key not in ABLATIONS:
        raise CliError(f"--ablation expects NAME=VALUE with NAME one of {sorted(ABLATIONS)}, "
                       f"got {text!r}")
    ab = ABLATIONS[key]
    try:
        v = int(value)
    except ValueError:
        v = None
    if v not in ab.values:
        raise CliError(f"--ablation {key}: {value!r} is not a grid point of {ab.item}; "
                       f"choose one of {list(ab.values)} (the paper's grid; the profile "
                       "scales it)")
    return ab.config(v, profile)


# --------------------------------------------------------------------------- subcommands


def _data_check(args) -> int:
    root = Path(args.data) if args.data else data_mod.default_root()
    problems = data_mod.check_release(root)
    if problems:
        print(f"{root}: {len(problems)} problem(s)")
        for p in problems[:50]:
            print("  " + p)
        return EXIT_PROBLEMS
    d = data_mod.load_composite(root)
    t = d.table
    print(f"{root}: OK, {len(t)} samples, {t.subject.nunique()} subjects, every file matches "
          "the manifest")
    for ds in ("smic", "casme2", "samm"):
        c = [int(((t.dataset == ds) & (t.label == k)).sum()) for k in (0, 1, 2)]
        print(f"  {data_mod.DATASET_NAMES[ds]:8s} negative/positive/surprise {c[0]}/{c[1]}/{c[2]}")
    return EXIT_OK


def _data_fetch(args) -> int:
    dest = data_mod.fetch(args.dest, url=args.url)
    print(f"release written to {dest}; point HTNET_DATA at it")
    return EXIT_OK


def _train(args) -> int:
    """Check every argument, then load the release and train; no run folder before that."""
    from . import train
    from .config import apply_overrides, check_seed

    seed = check_seed(args.seed)
    if args.ablation:
        config = _ablation_config(args.ablation, args.profile, args.model)
    else:
        config = train.profile_config(args.profile, args.model)
    config = apply_overrides(config, args.set or [])
    device = _check_device(args.device)
    if args.protocol != "loso" and (args.trainer == "grouped" or device not in (None, "cpu")):
        raise CliError(f"--protocol {args.protocol}: its extra fits train on the CPU, fold "
                       "after fold in --workers processes; leave --device and --trainer out")
    out = args.out or ("results/tables/lodo" if args.protocol == "lodo" else "results/runs")
    runs_dir = _check_out(out)
    composite = data_mod.load_composite(args.data)
    from . import protocols

    if args.protocol == "lodo":
        path = protocols.run_lodo(composite, config, seed=seed, store_dir=runs_dir,
                                  profile=args.profile, workers=args.workers,
                                  retrain=args.retrain)
        print(path)
        return _print_lodo(path)
    if args.protocol == "nested":
        run_dir = protocols.run_nested(composite, config, seed=seed, runs_dir=runs_dir,
                                       profile=args.profile, workers=args.workers,
                                       retrain=args.retrain)
    else:
        run_dir = train.run_loso(composite, config, seed=seed, runs_dir=runs_dir,
                                 profile=args.profile, device=device, retrain=args.retrain,
                                 workers=args.workers, threads=args.threads or None,
                                 trainer=args.trainer)
    print(run_dir)
    code = _print_evaluation(run_dir)
    if args.protocol == "nested":
        _print_nested(run_dir)
    return code


def _print_nested(run_dir) -> None:
    """The nested rule's composite UF1 and UAR (notebook 12), beside the run's Table 2 row."""
    from . import metrics, protocols

    run = _load_run(run_dir)
    p = run.predictions
    for metric in ("uf1", "accuracy"):
        pred = protocols.nested_predictions(run, metric)
        print(f"nested epoch (chosen by inner {metric.upper() if metric == 'uf1' else metric}): "
              f"composite UF1 {metrics.uf1(p['label'], pred):.4f}, "
              f"UAR {metrics.uar(p['label'], pred):.4f}")


def _print_lodo(path) -> int:
    from . import protocols
    from .data import DATASET_NAMES

    result = protocols.load_lodo(path)
    meta = result["meta"]
    print(f"leave one dataset out {meta['lodo_id']}: profile {meta.get('profile')}, seed "
          f"{meta['seed']}, final epoch, device {meta['device']}")
    for d, s in result["metrics"]["honest"].items():
        print(f"  tested on {DATASET_NAMES[d]} ({s['n']} samples): UF1 {s['uf1']:.4f}, "
              f"UAR {s['uar']:.4f}")
    return EXIT_OK


def _load_run(run_dir):
    """:func:`htnetlib.train.load_run`, with a corrupt file of the run as a DataError."""
    from .train import load_run

    try:
        return load_run(run_dir)
    except (data_mod.DataError, FileNotFoundError):
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise data_mod.DataError(f"{run_dir}: not a readable run ({_describe(exc)})") from exc


def _print_evaluation(run_dir) -> int:
    from .report import markdown, table2_rows

    run = _load_run(run_dir)
    print(f"run {run.meta['run_id']}: profile {run.meta.get('profile')}, seed {run.meta['seed']}, "
          f"{run.meta.get('n_folds')} folds, device {run.meta['device']}")
    print(markdown(table2_rows(run)))
    return EXIT_OK


def _evaluate(args) -> int:
    return _print_evaluation(args.run_dir)


def _preprocess(args) -> int:
    from . import preprocess

    return preprocess.run(args)


# --------------------------------------------------------------------------- parser and main


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error as one line, ``htnet: error: ...``, and exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"htnet: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="htnet", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also HTNET_DEBUG=1)")
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
    p.add_argument("--seed", type=int, default=0, help="run seed, 0 to 2**31 - 1 (default 0)")
    p.add_argument("--out", help="runs folder (default results/runs; results/tables/lodo for "
                                 "--protocol lodo)")
    p.add_argument("--data", help="release folder (default: $HTNET_DATA, else ./data)")
    p.add_argument("--protocol", choices=("loso", "nested", "lodo"), default="loso",
                   help="loso: the run (default); nested: the run and its inner fits for the "
                        "nested rule (notebook 12, about 4 x a run); lodo: leave one dataset "
                        "out (notebook 13)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the first available)")
    p.add_argument("--workers", type=whole_number(1), default=1,
                   help="fold processes (CPU), at least 1")
    p.add_argument("--threads", type=whole_number(0), default=1,
                   help="torch threads per fold process (default 1; 0 keeps torch's default)")
    p.add_argument("--trainer", choices=("auto", "loop", "grouped"), default="auto",
                   help="loop: fold after fold in --workers processes; grouped: many folds as "
                        "one batched computation (default on a GPU)")
    p.add_argument("--retrain", action="store_true", help="train again even if the run exists")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field, read by its type, e.g. --set epochs=50 "
                        "--set regions=corrected --set permute_labels=true "
                        "--set block_repeats=2,2,8")
    p.add_argument("--ablation", metavar="NAME=VALUE",
                   help="a section 4.4 grid point in the paper's units, scaled by the profile as "
                        "notebooks 06-09 do: block_size=5..10, dim=64..512, heads=1..8, "
                        "layers=2..12 (e.g. --ablation layers=2); --set applies on top")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="print a run's Table 2 row for both protocols")
    p.add_argument("run_dir")
    p.set_defaults(func=_evaluate)

    from . import preprocess

    p = sub.add_parser("preprocess", help="flow maps in the release layout from raw frames",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    preprocess.add_arguments(p)
    p.set_defaults(func=_preprocess)

    from . import grid

    p = sub.add_parser("grid", help="every run a profile's notebooks need, as scheduler jobs "
                                    "(submitit: Slurm or local processes)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    grid.add_arguments(p)
    p.set_defaults(func=grid.run)

    from . import predict

    p = sub.add_parser("fit", help="fit one model on every sample of the release "
                                   "(for htnet predict)")
    predict.add_fit_arguments(p)
    p.set_defaults(func=predict.run_fit)
    p = sub.add_parser("predict", help="classify a micro-expression: two frames, a flow map or "
                                       "a folder of frames")
    predict.add_predict_arguments(p)
    p.set_defaults(func=predict.run_predict)
    return parser


def exit_code(exc: BaseException) -> int | None:
    """The exit status an error means (see the module docstring); None for an unexpected one."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, (data_mod.DataError, FileNotFoundError)):
        return EXIT_DATA
    if isinstance(exc, (TrainingError, MemoryError, OSError)):
        return EXIT_RUNTIME
    if isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in _DEVICE_FAILURES):
        return EXIT_RUNTIME
    return None


def _describe(exc: BaseException) -> str:
    """An error's message; an OSError as ``<file>: <reason>``; torch's as its first line."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, MemoryError):
        return f"out of memory ({exc})" if str(exc) else "out of memory"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, RuntimeError) and not isinstance(exc, TrainingError):
        text = text.strip().splitlines()[0]
    return text


def _error(message: str) -> None:
    print(f"htnet: error: {message}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"htnet: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one ``htnet`` command and return its exit status (table in the module docstring)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error argparse has printed (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = args.debug or os.environ.get("HTNET_DEBUG", "") not in ("", "0")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        _error("interrupted" + (" (run it again to resume)" if args.command == "train" else ""))
        return EXIT_INTERRUPTED
    except Exception as exc:
        code = exit_code(exc)
        if debug:
            raise
        if code is None:
            traceback.print_exc()
            _error(f"unexpected {type(exc).__name__}: {_describe(exc)} (traceback above; "
                   "please report it)")
            return EXIT_BUG
        _error(_describe(exc))
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
