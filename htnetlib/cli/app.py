"""``htnet``: the command line of htnetlib.

    htnet data check [--data DIR]           verify a release folder (counts, SHA-256)
    htnet data fetch [--dest DIR]           download and verify the official release
    htnet train --profile {smoke,cpu,paper} [--seed N] [--out DIR] [--data DIR]
                [--protocol loso|nested|lodo]   a LOSO run; its nested inner fits; or LODO
                [--model htnet|ststnet|logreg|rcn|twostream|package.module:factory]   also your own
    htnet evaluate RUN_DIR                  Table 2 row of a run, both protocols, paper beside
    htnet preprocess --dataset D --root RAW --out DIR   flow maps from raw frames
    htnet grid --profile P [--launcher local|slurm] [--dry-run]   missing runs as scheduler jobs
    htnet fit --profile {smoke,cpu,paper} [--seed N] [--out DIR]  one model on every sample
    htnet predict --model DIR (--onset A --apex B | --flow MAP --apex B | --sequence DIR
                  | --pairs FILE.csv | --sequences DIR) [--json | --csv OUT] [--force]
    htnet calibrate --model DIR --runs RUN_DIR [RUN_DIR ...]   a temperature for predict

An error a user can cause prints one line, ``htnet: error: <message>``, on stderr, naming the
file or value and what is wrong, and exits with a status that says what kind of error it was:

    0    success
    1    a check found problems (``htnet data check``), or a user's own network failed in
         training (its traceback, then a line naming the factory and the fold)
    2    usage: a bad argument or configuration value (``--set``, ``--seed``, ``--device``,
         ``--out`` naming a file, ...); nothing has been trained or written
    3    data: a missing, unreadable or corrupt input file, release or run folder, a frame
         that shows no face
    4    runtime: training failed (e.g. a NaN loss), the device or the CPU allocator is out
         of memory (the line says how much was asked for), the device fails, the output
         folder is not writable and something must be written (a stored run is read as it is),
         or writing failed (a full disk: the line names the file)
    5    refused: too slow here (``htnet fit --profile paper`` on a CPU without --allow-slow)
    70   internal error: a bug in htnetlib; its traceback is printed, please report it
    130  interrupted (Ctrl-C); an interrupted ``htnet train`` resumes where it stopped
    141  the reader of the output left (``| head``): nothing more is printed

With ``--json`` an error is also one JSON object on stdout, ``{"error": ..., "file": ...}``.

``--set KEY=VALUE`` is read by the type of the config field (true/false, whole numbers, numbers,
lists such as 2,2,8) and the whole configuration is checked before any run folder exists.
``htnet --debug ...`` or ``HTNET_DEBUG=1`` shows the traceback of an error before its line; the
exit status stays the error's own.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
import zipfile
from pathlib import Path

from .. import __version__
from ..errors import (EXIT_BROKEN_PIPE, EXIT_BUG, EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEMS,
                      EXIT_USAGE, DataError, TrainingError, UsageError, UserModelError,
                      exit_code, out_of_memory)
from .common import (OneLineParser, check_device, check_out, check_writable, model_name,
                     whole_number)

PROFILE_ORDER = ("smoke", "cpu", "paper")  # every command lists the profiles in this order

# An example per subcommand, shown below its options (``htnet <command> --help``).
EXAMPLES = {
    "data": "htnet data check --data data\n  htnet data fetch --dest data",
    "data check": "htnet data check --data data",
    "data fetch": "htnet data fetch --dest data && export HTNET_DATA=$PWD/data",
    "train": "htnet train --profile cpu --seed 0 --workers 2\n"
             "  htnet train --profile cpu --ablation layers=2\n"
             "  htnet train --profile smoke --protocol nested",
    "evaluate": "htnet evaluate results/runs/htnet-cpu-s0-<hash>",
    "preprocess": "htnet preprocess --dataset casme2 --root raw/CASME2 --out release "
                  "--workers 2",
    "grid": "htnet grid --profile paper --dry-run\n"
            "  htnet grid --profile paper --launcher slurm --partition gpu --gpus-per-job 1",
}


def help_text(doc: str) -> str:
    """A docstring as help text: RST double backticks and roles removed."""
    import re

    doc = re.sub(r":(?:func|class|mod|data|meth):`~?([^`]+)`", r"\1", doc)
    return doc.replace("``", "")


def _example(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """``parser`` with the example of ``name`` as its epilog (before any epilog it has)."""
    text = f"example:\n  {EXAMPLES[name]}"
    parser.epilog = text + ("\n\n" + parser.epilog if parser.epilog else "")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser

# --------------------------------------------------------------------------- argument checks


def _ablation_config(text: str, profile: str, model: str):
    from ..study.experiments import ABLATIONS

    key, sep, value = text.partition("=")
    if model != "htnet":
        raise UsageError(f"--ablation {text}: applies to HTNet only (section 4.4), not "
                       f"--model {model}")
    if not sep or key not in ABLATIONS:
        raise UsageError(f"--ablation expects NAME=VALUE with NAME one of {sorted(ABLATIONS)}, "
                       f"got {text!r}")
    ab = ABLATIONS[key]
    try:
        v = int(value)
    except ValueError:
        v = None
    if v not in ab.values:
        raise UsageError(f"--ablation {key}: {value!r} is not a grid point of {ab.item}; "
                       f"choose one of {list(ab.values)} (the paper's grid; the profile "
                       "scales it)")
    return ab.config(v, profile)


# --------------------------------------------------------------------------- subcommands


def _data_check(args) -> int:
    from .. import data as data_mod

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
    from .. import data as data_mod

    if args.dest:
        check_out(args.dest, "--dest")
    dest = data_mod.fetch(args.dest, url=args.url or data_mod.OFFICIAL_URL)
    print(f"release written to {dest}; point HTNET_DATA at it")
    return EXIT_OK


def _train(args) -> int:
    """Check every argument, then load the release and train; no run folder before that."""
    from .. import data as data_mod
    from ..config import apply_overrides, check_seed, is_user_model, profile_config
    from ..training import lodo, loso, nested

    seed = check_seed(args.seed)
    if args.ablation:
        config = _ablation_config(args.ablation, args.profile, args.model)
    else:
        config = profile_config(args.profile, args.model)
    config = apply_overrides(config, args.set or [])
    if is_user_model(config.model):  # import and try the factory before any run folder exists
        from ..model.build import check_user_model

        check_user_model(config)
    device = check_device(args.device)
    if args.trainer == "grouped" and config.model != "htnet":
        raise UsageError(f"--trainer grouped batches HTNet folds only, not --model "
                         f"{config.model}; use --trainer loop or auto")
    if args.protocol == "lodo" and args.trainer != "auto":
        raise UsageError("--protocol lodo: its fits train as the device allows (grouped on a "
                         "GPU, fold after fold on a CPU); leave --trainer out")
    out = args.out or ("results/tables/lodo" if args.protocol == "lodo" else "results/runs")
    runs_dir = check_out(out, writable=False)
    composite = data_mod.load_composite(args.data)
    if not (args.protocol == "loso" and _stored(config, seed, composite, runs_dir, args)):
        check_writable(runs_dir)  # only training writes: a stored run is read as it is

    if args.protocol == "lodo":
        path = lodo.run_lodo(composite, config, seed=seed, store_dir=runs_dir,
                             profile=args.profile, workers=args.workers, retrain=args.retrain,
                             device=device)
        print(path)
        return _print_lodo(path)
    if args.protocol == "nested":
        run_dir = nested.run_nested(composite, config, seed=seed, runs_dir=runs_dir,
                                    profile=args.profile, workers=args.workers,
                                    retrain=args.retrain, trainer=args.trainer, device=device)
    else:
        run_dir = loso.run_loso(composite, config, seed=seed, runs_dir=runs_dir,
                                profile=args.profile, device=device, retrain=args.retrain,
                                workers=args.workers, threads=args.threads or None,
                                trainer=args.trainer)
    print(run_dir)
    code = _print_evaluation(run_dir)
    if args.protocol == "nested":
        _print_nested(run_dir)
    return code


def _stored(config, seed: int, composite, runs_dir: Path, args) -> bool:
    """Whether the LOSO run this ``htnet train`` asks for is stored, finished, in ``runs_dir``
    (the id :func:`htnetlib.training.loso.run_loso` computes)."""
    from ..training.store import data_fingerprint, reusable, run_id

    rid = run_id(config, seed, data_fingerprint(composite), args.profile)
    return reusable(runs_dir / rid, retrain=args.retrain)


def _print_nested(run_dir) -> None:
    """The nested rule's composite UF1 and UAR (notebook 12), beside the run's Table 2 row."""
    from ..evaluation import metrics
    from ..training.nested import nested_predictions

    run = _load_run(run_dir)
    p = run.predictions
    for metric in ("uf1", "accuracy"):
        pred = nested_predictions(run, metric)
        print(f"nested epoch (chosen by inner {metric.upper() if metric == 'uf1' else metric}): "
              f"composite UF1 {metrics.uf1(p['label'], pred):.4f}, "
              f"UAR {metrics.uar(p['label'], pred):.4f}")


def _print_lodo(path) -> int:
    from ..data import DATASET_NAMES
    from ..training.lodo import load_lodo

    result = load_lodo(path)
    meta = result["meta"]
    print(f"leave one dataset out {meta['lodo_id']}: profile {meta.get('profile')}, seed "
          f"{meta['seed']}, final epoch, device {meta['device']}")
    for d, s in result["metrics"]["honest"].items():
        print(f"  tested on {DATASET_NAMES[d]} ({s['n']} samples): UF1 {s['uf1']:.4f}, "
              f"UAR {s['uar']:.4f}")
    return EXIT_OK


def _load_run(run_dir):
    """:func:`htnetlib.training.store.load_run`, with a corrupt file of the run as a DataError."""
    from ..training.store import load_run

    try:
        return load_run(run_dir)
    except (DataError, FileNotFoundError):
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{run_dir}: not a readable run ({_describe(exc)})") from exc


def _print_evaluation(run_dir) -> int:
    from ..study.tables import markdown, table2_rows

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


def _grid(args) -> int:
    from . import grid

    return grid.run(args)


def _fit(args) -> int:
    from . import predict

    return predict.run_fit(args)


def _predict(args) -> int:
    from . import predict

    return predict.run_predict(args)


# --------------------------------------------------------------------------- parser and main


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="htnet", description=help_text(__doc__),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"htnet {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also HTNET_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p_data = _example(sub.add_parser("data", help="the official release: check or fetch"), "data")
    data_sub = p_data.add_subparsers(dest="data_command", required=True)
    p = _example(data_sub.add_parser("check", help="verify samples, subjects, class counts and "
                                                   "SHA-256"), "data check")
    p.add_argument("--data", help="release folder (default: $HTNET_DATA, else ./data)")
    p.set_defaults(func=_data_check)
    p = _example(data_sub.add_parser("fetch", help="download the official release from GitHub"),
                 "data fetch")
    p.add_argument("--dest", help="target folder (default: $HTNET_DATA, else ./data)")
    p.add_argument("--url", help="repository archive (zip; default: the official repository at the pinned commit)")
    p.set_defaults(func=_data_fetch)

    p = _example(sub.add_parser("train", help="LOSO training of one profile and seed"), "train")
    p.add_argument("--profile", choices=PROFILE_ORDER, default="cpu",
                   help="model size and schedule (default cpu)")
    p.add_argument("--model", type=model_name, default="htnet",
                   metavar="{htnet,ststnet,logreg,rcn,twostream,package.module:factory}",
                   help="HTNet (default), a Table 2 baseline trained on the same folds, "
                        "notebook 16's RCN-style or two-stream (flow + apex face) network, or "
                        "your own network: a callable returning an nn.Module from (N, 3, S, S) inputs "
                        "to (N, 3) logits, called with the Config if it takes one argument; "
                        "it trains with the profile's HTNet schedule")
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
                   help="fold processes (CPU), at least 1 (default 1)")
    p.add_argument("--threads", type=whole_number(0), default=1,
                   help="torch threads per fold process (default 1; 0 keeps torch's default)")
    p.add_argument("--trainer", choices=("auto", "loop", "grouped"), default="auto",
                   help="loop: fold after fold in --workers processes; grouped: many folds as "
                        "one batched computation; auto (default): grouped on a CUDA GPU; on a "
                        "CPU, both are timed on the folds left to train and the faster is "
                        "used (the choice is cached per configuration and machine); loop on other "
                        "devices and where grouped does not apply (models other than htnet, "
                        "notebook 12's training choices)")
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

    p = _example(sub.add_parser("evaluate", help="print a run's Table 2 row for both protocols"),
                 "evaluate")
    p.add_argument("run_dir", help="a run folder made by htnet train")
    p.set_defaults(func=_evaluate)

    from . import preprocess

    p = sub.add_parser("preprocess", help="flow maps in the release layout from raw frames",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    preprocess.add_arguments(p)
    _example(p, "preprocess")
    p.set_defaults(func=_preprocess)

    from . import grid

    p = sub.add_parser("grid", help="every run a profile's notebooks need, as scheduler jobs "
                                    "(submitit: Slurm or local processes)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    grid.add_arguments(p)
    _example(p, "grid")
    p.set_defaults(func=_grid)

    from . import predict

    p = sub.add_parser("fit", help="fit one model on every sample of the release "
                                   "(for htnet predict)")
    predict.add_fit_arguments(p)
    p.set_defaults(func=_fit)
    p = sub.add_parser("predict", help="classify a micro-expression: two frames, a flow map or "
                                       "a folder of frames")
    predict.add_predict_arguments(p)
    p.set_defaults(func=_predict)
    p = sub.add_parser("calibrate", help="fit a model's temperature on stored LOSO runs")
    predict.add_calibrate_arguments(p)
    p.set_defaults(func=lambda args: predict.run_calibrate(args))
    return parser


def _describe(exc: BaseException) -> str:
    """An error's message; an OSError as ``<file>: <reason>``; torch's as its first line."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if out_of_memory(exc):  # MemoryError, or an allocator's RuntimeError: what and how much
        return out_of_memory(exc)
    text = str(exc) or type(exc).__name__
    if isinstance(exc, RuntimeError) and not isinstance(exc, TrainingError):
        text = text.strip().splitlines()[0]
    return text


class _Stderr:
    """sys.stderr, remembering whether the last text written to it ended its line, so that an
    error after a progress bar's partial line starts a line of its own (and no blank line is
    added after a finished one)."""

    def __init__(self, stream):
        self.stream = stream
        self.line_ended = True

    def write(self, text: str):
        if text:
            self.line_ended = text.endswith(("\n", "\r"))
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _close_bars() -> None:
    """Close every tqdm progress bar still open (one an error passed through), so its line is
    finished before the error is printed. tqdm is not imported if nothing imported it."""
    std = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(std, "tqdm", None), "_instances", ()) or ()):
        try:
            bar.close()
        except Exception:  # a bar half torn down by the error: nothing left to finish
            pass


def _error(message: str) -> None:
    _close_bars()
    if isinstance(sys.stderr, _Stderr) and not sys.stderr.line_ended:
        sys.stderr.write("\n")
    print(f"htnet: error: {message}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"htnet: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one ``htnet`` command and return its exit status (table in the module docstring)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error argparse has printed (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except BrokenPipeError:  # --help into a closed pipe
        return _broken_pipe()
    debug = args.debug or os.environ.get("HTNET_DEBUG", "") not in ("", "0")
    stderr = sys.stderr
    sys.stderr = _Stderr(stderr)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
        return code
    except BrokenPipeError:  # the reader of stdout has gone (| head): stop quietly
        return _broken_pipe()
    except KeyboardInterrupt:
        if debug:
            _traceback()
        _error("interrupted" + (" (run it again to resume)" if args.command == "train" else ""))
        return EXIT_INTERRUPTED
    except Exception as exc:
        code = exit_code(exc)
        if isinstance(exc, UserModelError):  # the user's code: its traceback, not ours
            _close_bars()
            sys.stderr.write(("" if sys.stderr.line_ended else "\n") + exc.details)
        elif code is None or debug:  # --debug: the traceback, and still the error's own status
            _traceback()
        if code is None:
            _error(f"unexpected {type(exc).__name__}: {_describe(exc)} (traceback above; "
                   "please report it)")
            return EXIT_BUG
        _error(_describe(exc))
        if getattr(args, "json", False):  # a script reading stdout gets JSON too
            _json_error(exc)
        return code
    finally:
        sys.stderr = stderr


def _broken_pipe() -> int:
    """Exit status 141 (128 + SIGPIPE, as a Unix tool the pipe's reader left) without a word;
    stdout is pointed at /dev/null so that Python's own flush at exit stays silent too."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is no file (a test's capture)
        pass
    return EXIT_BROKEN_PIPE


def _json_error(exc: BaseException) -> None:
    """``{"error": ..., "file": ...}`` on stdout, one line: the error of a ``--json`` command
    (``file``: the file it names, or null)."""
    import json

    text = _describe(exc)
    name = getattr(exc, "filename", None)
    if name is None:
        head = text.split(": ", 1)[0]
        looks_like_a_path = not any(c.isspace() or c in "='" for c in head) and (
            os.sep in head or bool(Path(head).suffix))
        name = head if ": " in text and looks_like_a_path else None
    print(json.dumps({"error": text, "file": None if name is None else str(name)}), flush=True)


def _traceback() -> None:
    """The traceback of the error being handled, on a line of its own."""
    _close_bars()
    if isinstance(sys.stderr, _Stderr) and not sys.stderr.line_ended:
        sys.stderr.write("\n")
    traceback.print_exc()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
