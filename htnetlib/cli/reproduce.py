"""Execute every numbered notebook with papermill: ``python -m htnetlib.reproduce``.

Before anything executes, the runs the chosen profile's notebooks need are listed, stored or
missing, with the estimated cost of each missing run on this device (:mod:`htnetlib.study.plan`).
When the missing runs would take longer than ``--budget-hours`` here (the ``paper`` profile on a
CPU: days), nothing is trained and no notebook is touched: the plan says what is missing, what
it would cost, and where to make it cheaply. ``--stored-only`` instead renders the notebooks
from the runs that exist (the ``cpu`` profile drives them; every stored ``paper`` run is shown
beside, and the rest is marked *not run*); ``--allow-slow`` trains anyway.

Each notebook runs in ``notebooks/`` with kernel ``python3``. The ``cpu`` profile's executions
are the committed notebooks: each is written to a temporary file and moved into place only when
it succeeded, so an interrupted run leaves them as they were. Other profiles write their
executed copies to ``results/notebooks/<profile>/`` and never overwrite the ``cpu`` ones.

Exit status: 0 done (or the plan printed), 2 a bad argument, 3 the release is missing or bad,
4 a notebook failed, 5 refused: the missing runs exceed the budget on this device; with
``--check`` (:mod:`htnetlib.cli.check`), 1 a produced file differs from the committed one.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from ..errors import EXIT_DATA, EXIT_PROBLEMS, EXIT_REFUSED, EXIT_RUNTIME, EXIT_USAGE
from .common import OneLineParser, whole_number
from ..io import ROOT, target_error
from ..study.readme import generated_pages, update_pages, update_readme
from .check import ARITHMETIC

NOTEBOOKS = ROOT / "notebooks"
COMMITTED_PROFILE = "cpu"  # the profile whose executions are the committed notebooks
# The kernel's own log shows errors only: its warning that it talks to papermill over local
# TCP without encryption (the kernel and this process on one machine) is not the user's news.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


def notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def execute(nb: Path, output: Path, parameters: dict, cwd: Path | None = None) -> None:
    """Run one notebook with papermill; the executed copy replaces ``output`` only when the
    whole notebook succeeded (papermill writes as it goes, so it writes to a temporary file).

    Only parameters that differ from the notebook's defaults are injected (an
    ``injected-parameters`` cell appears only then), a stale injected cell of an earlier run is
    dropped first, and the result is :func:`tidy`, so executing an unchanged notebook again
    leaves its file unchanged.
    """
    import nbformat
    import papermill as pm

    nb, output = Path(nb), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    changed = changed_parameters(nb, parameters)
    source = nbformat.read(str(nb), as_version=4)
    source.metadata.pop("papermill", None)  # an earlier run's parameters
    source.cells = [c for c in source.cells
                    if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    temps = []
    try:  # an OSError (a full disk) names the notebook written, never a temporary file
        for folder, name in ((nb.parent, nb.stem), (output.parent, output.stem)):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".ipynb", dir=folder)
            os.close(fd)
            temps.append(tmp)
        nbformat.write(source, temps[0])
        pm.execute_notebook(temps[0], temps[1], parameters=changed, kernel_name="python3",
                            cwd=str(cwd or nb.parent), progress_bar=False,
                            extra_arguments=KERNEL_ARGUMENTS)
        executed = nbformat.read(temps[1], as_version=4)
        tidy(executed)
        Path(temps[1]).write_text(notebook_text(executed), encoding="utf-8")
        os.replace(temps[1], output)
    except OSError as exc:
        raise target_error(exc, nb if temps and exc.filename == temps[0] else output) from exc
    finally:
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)


def notebook_text(nb) -> str:
    """The one form a notebook file is written in: nbformat's JSON (sorted keys, one-space
    indent), consecutive outputs of one stream joined (how the kernel flushed them varies with
    the machine's load) and a final newline, so that executing an unchanged notebook leaves its file
    byte for byte as it was (tests/test_portable.py checks every committed notebook)."""
    import nbformat

    for cell in nb.get("cells", []):  # one stream output where the kernel flushed twice
        merged = []
        for out in cell.get("outputs", []):
            if (merged and out.get("output_type") == "stream"
                    and merged[-1].get("output_type") == "stream"
                    and merged[-1].get("name") == out.get("name")):
                merged[-1]["text"] = "".join(merged[-1]["text"]) + "".join(out["text"])
            else:
                merged.append(out)
        if "outputs" in cell:
            cell["outputs"] = merged
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def changed_parameters(nb: Path, parameters: dict) -> dict:
    """The entries of ``parameters`` whose value differs from the notebook's own default."""
    import ast

    import papermill as pm

    declared = pm.inspect_notebook(str(nb))
    out = {}
    for key, value in parameters.items():
        try:
            same = key in declared and ast.literal_eval(declared[key]["default"]) == value
        except (ValueError, SyntaxError):
            same = False
        if not same:
            out[key] = value
    return out


def tidy(nb) -> None:
    """Drop what changes from one execution to the next but says nothing about the result:
    timestamps and durations, the machine's paths, stderr streams (progress bars, warnings);
    give an injected-parameters cell a fixed id."""
    meta = nb.metadata.get("papermill", {})
    params = meta.get("parameters") or {}
    nb.metadata.pop("papermill", None)
    if params:
        nb.metadata["papermill"] = {"parameters": params}
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]


def output_path(nb: Path, profile: str, results: Path = ROOT / "results") -> Path:
    """Where ``profile``'s execution of ``nb`` goes: in place for the committed profile,
    ``results/notebooks/<profile>/`` for the others."""
    if profile == COMMITTED_PROFILE:
        return nb
    return Path(results) / "notebooks" / profile / nb.name


def parameters_for(nb: Path, wanted: dict) -> dict:
    """The entries of ``wanted`` that ``nb`` declares in its parameters cell (papermill's own
    reading of the cell), so a notebook is never handed a parameter it does not take."""
    import papermill as pm

    declared = pm.inspect_notebook(str(nb))
    return {k: v for k, v in wanted.items() if k in declared}


def refusal(plan, budget_hours: float) -> str:
    """The message that stops a run too expensive for this device, and how to make it."""
    total = plan.missing_seconds
    cost = "an unknown time (no timing for some runs)" if total is None else \
        f"about {total / 3600:.1f} h"
    gpu = "bash bench/gpu.sh run --profile paper" if plan.profile == "paper" else \
        f"bash bench/gpu.sh run --profile {plan.profile}"
    inner = (f" and {len(plan.missing_nested)} nested rule(s) without inner fits"
             if plan.missing_nested else "")
    if plan.missing_lodo:
        inner += f" and {len(plan.missing_lodo)} leave-one-dataset-out result(s)"
    return (f"refused: the {len(plan.missing)} missing {plan.profile}-profile run(s){inner} "
            f"would take "
            f"{cost} on this {plan.device_type} (budget {budget_hours:g} h). Nothing was trained "
            f"and no notebook was changed. Make them where they are cheap: on a GPU with "
            f"`{gpu}` (add --ablation NAME=VALUE for a grid point), or as cluster jobs with "
            f"`htnet grid --profile {plan.profile}`; copy the runs into results/runs/ and run "
            f"this again. Or: --stored-only renders the notebooks from the runs that exist; "
            f"--allow-slow trains here anyway.")


def positive_hours(text: str) -> float:
    """An argparse type: a finite number of hours above 0 (``nan``, ``inf``, 0 and negative
    budgets would switch the refusal off or on by accident)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hours") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: the budget must be a finite number of "
                                         "hours above 0")
    return value


def main(argv: list[str] | None = None) -> int:
    from ..config import PROFILES

    ap = OneLineParser(prog="python -m htnetlib.reproduce", name="reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=sorted(PROFILES),
                    help="training profile: cpu, paper or smoke")
    ap.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 04 05")
    ap.add_argument("--retrain", action="store_true", help="train again even if runs exist")
    ap.add_argument("--plan", action="store_true", help="print the plan and stop")
    ap.add_argument("--budget-hours", type=positive_hours, default=2.0,
                    help="most training time to spend here on missing runs (default 2)")
    ap.add_argument("--allow-slow", action="store_true",
                    help="train the missing runs even beyond the budget")
    ap.add_argument("--stored-only", action="store_true",
                    help="train nothing: render the notebooks from the stored runs")
    ap.add_argument("--workers", type=whole_number(1), default=2, help="fold processes on a CPU")
    ap.add_argument("--check", action="store_true",
                    help="execute into a temporary folder and compare every produced notebook, "
                         "figure, table and finding byte for byte with the committed one; "
                         "writes nothing in the repository (exit 1 where any differs)")
    ap.add_argument("--arithmetic", choices=sorted(ARITHMETIC), default="native",
                    help="run the kernels with the arithmetic paths of another CPU "
                         "(htnetlib.cli.check.ARITHMETIC), to see what it would produce")
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error argparse has printed (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    known = [nb.name for nb in notebooks()]
    unknown = [o for o in args.only or [] if not any(n.startswith(o) for n in known)]
    if unknown:
        print(f"reproduce: error: --only {' '.join(unknown)}: no notebook starts with "
              f"{'this' if len(unknown) == 1 else 'these'}; the notebooks are "
              f"{', '.join(n[:2] for n in known)}", file=sys.stderr)
        return EXIT_USAGE

    from ..data import DataError, default_root, load_composite
    from ..study.plan import make_plan
    from ..training.fold import pick_device

    root = default_root()
    if not root.is_dir():  # reproduce reads the release from HTNET_DATA only: say so
        print(f"reproduce: error: data root {root} does not exist; set HTNET_DATA to the "
              "release folder (htnet data fetch --dest DIR makes one)", file=sys.stderr)
        return EXIT_DATA
    try:
        data = load_composite()
    except DataError as exc:
        print(f"reproduce: error: {exc}", file=sys.stderr)
        return EXIT_DATA
    device = pick_device().type
    plan = make_plan(data, args.profile, device_type=device, workers=args.workers,
                     retrain=args.retrain)
    print(plan.summary(), flush=True)
    if args.plan:
        return 0
    profile = args.profile
    if args.stored_only:
        profile = COMMITTED_PROFILE if args.profile == "paper" else args.profile
        os.environ["HTNET_TRAIN_PROFILES"] = "none"  # the kernels inherit it
        print(f"stored runs only: the {profile} profile drives the notebooks, nothing is trained")
    elif plan.missing_jobs and not args.allow_slow:
        total = plan.missing_seconds
        if total is None or total > args.budget_hours * 3600:
            print(refusal(plan, args.budget_hours), file=sys.stderr)
            return EXIT_REFUSED
    selected = [nb for nb in notebooks()
                if not args.only or any(nb.name.startswith(o) for o in args.only)]
    os.environ.update(ARITHMETIC[args.arithmetic])  # read by each kernel as it starts
    if args.check:
        return check(selected, profile, args.retrain, args.arithmetic)
    print(f"executing {len(selected)} notebook(s) with the {profile} profile into "
          f"{output_path(selected[0], profile).parent.relative_to(ROOT)}/" if selected else
          "no notebook selected", flush=True)
    clock = Progress(len(selected))
    for nb in selected:
        if not run_one(nb, output_path(nb, profile), profile, args.retrain):
            return EXIT_RUNTIME
        print(clock.line(nb), flush=True)
    print(f"{len(selected)} notebook(s) executed in {duration(clock.total)}")
    if profile == COMMITTED_PROFILE:
        for page in update_pages(profile=profile):
            print(f"{page.relative_to(ROOT)}: generated blocks updated")
    return 0


def duration(seconds: float) -> str:
    """A duration in words: ``12 s``, ``3 min 05 s``, ``2 h 04 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """The progress of ``n`` notebooks: :meth:`line` after each, ``[3/15] 03_model  12 s``
    with the time so far once there is more than one notebook."""

    def __init__(self, n: int):
        self.n, self.done, self.start = n, 0, time.perf_counter()
        self.last = self.start

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start

    def line(self, nb: Path) -> str:
        now = time.perf_counter()
        took, self.last = now - self.last, now
        self.done += 1
        so_far = f" ({duration(now - self.start)} so far)" if self.done > 1 else ""
        return f"[{self.done}/{self.n}] {nb.stem}  {duration(took)}{so_far}"


def run_one(nb: Path, out: Path, profile: str, retrain: bool) -> bool:
    """Execute one notebook into ``out``; False, with the failing cell's last line printed, if
    it failed (the file at ``out`` is then unchanged)."""
    try:
        execute(nb, out, parameters_for(nb, {"profile": profile, "retrain": retrain}))
    except Exception as exc:  # papermill reports the failing cell; keep it to one line
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, OSError):  # a full disk: the file it was writing
            last = f"{exc.filename or out}: {exc.strerror or last}"
        print(f"reproduce: error: {nb.name} failed ({last}); the committed notebook is "
              "unchanged", file=sys.stderr)
        return False
    return True


def check(selected: list[Path], profile: str, retrain: bool, arithmetic: str) -> int:
    """``--check``: execute ``selected`` into a temporary folder (outputs through
    ``$HTNET_RESULTS_DIR``, stored runs read from the repository, no cached landmarks), fill copies of the README and the docs pages
    from the committed results overlaid with the produced ones, and compare every produced
    file with the committed one (:func:`htnetlib.cli.check.compare`)."""
    import shutil

    from ..study.figures import RESULTS_ENV
    from .check import compare

    with tempfile.TemporaryDirectory(prefix="htnet-check-") as tmp:
        produced, merged = Path(tmp, "produced"), Path(tmp, "merged")
        os.environ[RESULTS_ENV] = str(produced / "results")
        os.environ["HTNET_CACHE"] = str(Path(tmp, "cache"))  # landmarks computed afresh
        print(f"executing {len(selected)} notebook(s) with the {profile} profile, arithmetic "
              f"{arithmetic}, into a temporary folder", flush=True)
        clock = Progress(len(selected))
        for nb in selected:
            out = produced / output_path(nb, profile).relative_to(ROOT)
            if not run_one(nb, out, profile, retrain):
                return EXIT_RUNTIME
            print(clock.line(nb), flush=True)
        if profile == COMMITTED_PROFILE:
            shutil.copytree(ROOT / "results", merged)
            if (produced / "results").is_dir():
                shutil.copytree(produced / "results", merged, dirs_exist_ok=True)
            for page in generated_pages(ROOT):  # the README and the docs pages
                copy = produced / page.relative_to(ROOT)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(page, copy)
                update_readme(copy, merged, profile)
        differences = compare(produced, ROOT)
    for line in differences:
        print(f"differs: {line}")
    print(f"{len(selected)} notebook(s) executed with arithmetic {arithmetic}: "
          + (f"{len(differences)} difference(s) from the committed files" if differences
             else "every produced file is identical to the committed one"))
    return EXIT_PROBLEMS if differences else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
