"""Execute every numbered notebook with papermill: ``python -m htnetlib.reproduce``.

Before anything executes, the runs the chosen profile's notebooks need are listed, stored or
missing, with the estimated cost of each missing run on this device (:mod:`htnetlib.plan`).
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
4 a notebook failed, 5 refused: the missing runs exceed the budget on this device.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
COMMITTED_PROFILE = "cpu"  # the profile whose executions are the committed notebooks
START, END = "<!-- results:start -->", "<!-- results:end -->"
ABL_START, ABL_END = "<!-- ablations:start -->", "<!-- ablations:end -->"
# notebook and results/tables name of each section 4.4 ablation (htnetlib.ablation.ABLATIONS)
ABLATION_TABLES = {"block_size": ("06_table4_block_size", "table4_block_size"),
                   "dim": ("07_fig5_dim", "fig5_dim"), "heads": ("08_fig6_heads", "fig6_heads"),
                   "layers": ("09_table5_layers", "table5_layers")}
EXIT_REFUSED = 5


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
    for folder, name in ((nb.parent, nb.stem), (output.parent, output.stem)):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".ipynb", dir=folder)
        os.close(fd)
        temps.append(tmp)
    try:
        nbformat.write(source, temps[0])
        pm.execute_notebook(temps[0], temps[1], parameters=changed, kernel_name="python3",
                            cwd=str(cwd or nb.parent), progress_bar=False)
        executed = nbformat.read(temps[1], as_version=4)
        tidy(executed)
        nbformat.write(executed, temps[1])
        os.replace(temps[1], output)
    finally:
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)


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


def _fill(text: str, start: str, end: str, body: str) -> str | None:
    """``text`` with the lines between ``start`` and ``end`` replaced by ``body``."""
    if start not in text or end not in text:
        return None
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}{end}{tail}"


def table2_block(results: Path, profile: str) -> str | None:
    """Our measured Table 2 rows and the paper's HTNet and STSTNet rows."""
    import pandas as pd

    from .report import markdown

    table = results / "tables" / f"table2_{profile}.csv"
    if not table.is_file():
        return None
    df = pd.read_csv(table, keep_default_na=False)
    keep = (df["source"] == "measured") | df["approach"].isin(["HTNet", "STSTNet"])
    cols = ["approach", "source", "protocol", "profile", "seeds", "Full UF1", "Full UAR", "Full UF1 95% CI",
            "SMIC UF1", "SMIC UAR", "CASME II UF1", "CASME II UAR", "SAMM UF1", "SAMM UAR"]
    shown = df.loc[keep, cols].copy()
    shown["approach"] = [a + (" (paper)" if s != "measured" else "")
                         for a, s in zip(shown["approach"], shown["source"])]
    return (f"<!-- generated by `make reproduce` from results/tables/{table.name}; "
            f"profile {profile} -->\n{markdown(shown)}")


def ablation_block(results: Path, profile: str) -> str | None:
    """Composite UF1 of every ablation grid point: ours under both protocols, the paper's."""
    import pandas as pd

    from .ablation import ABLATIONS
    from .report import markdown

    rows = []
    for key, (nb, name) in ABLATION_TABLES.items():
        table = results / "tables" / f"{name}_{profile}.csv"
        if not table.is_file():
            continue
        ab = ABLATIONS[key]
        df = pd.read_csv(table, keep_default_na=False, dtype={ab.setting: str})
        for i, v in enumerate(ab.values):
            at = df[df[ab.setting] == ab.label(v)]

            def score(source, proto, at=at, of=profile):
                sel = at[at["source"].str.startswith(source) & (at["protocol"] == proto)
                         & (at["profile"] == (of if source == "measured" else "paper"))]
                return float(sel["Full UF1"].iloc[0]) if len(sel) else float("nan")

            cfg = at.loc[at["profile"] == profile, "config"]
            default = at["source"].str.contains("profile default") & (at["profile"] == profile)
            rows.append({"ablation": f"{ab.item} ([{nb}](notebooks/{nb}.ipynb))" if i == 0 else "",
                         "paper grid point": ab.label(v) + (" (paper default)" if v ==
                                                           ab.paper_default else ""),
                         f"{profile} setting": (cfg.iloc[0] if len(cfg) else "-")
                         + (" (default)" if default.any() else ""),
                         "honest Full UF1": score("measured", "honest"),
                         "oracle Full UF1": score("measured", "oracle"),
                         "paper Full UF1 (oracle)": score("cited", "oracle"),
                         **({"paper profile honest / oracle": "%.4f / %.4f" % (
                             score("measured", "honest", of="paper"),
                             score("measured", "oracle", of="paper"))}
                            if profile != "paper" else {})})
    if not rows:
        return None
    df = pd.DataFrame(rows).astype(object).where(lambda d: d.notna(), "-")
    df = df.replace("nan / nan", "not run")
    return (f"<!-- generated by `make reproduce` from results/tables/*_{profile}.csv of the "
            f"ablation notebooks; profile {profile}, seed 0 -->\n{markdown(df)}")


SEL_START, SEL_END = "<!-- honest-selection:start -->", "<!-- honest-selection:end -->"
LODO_START, LODO_END = "<!-- lodo:start -->", "<!-- lodo:end -->"
# the rules of notebook 12 the README shows for every variant (fixed with the plan, not picked
# from the results); the whole table is results/tables/honest_selection_<profile>.md
README_RULES = ("final epoch", "cross-subject epoch (UF1)", "nested epoch (UF1)",
                "vote of seeds x last 25% of epochs", "oracle (test labels; not honest)")
SEL_COLUMNS = ["variant", "rule", "seeds", "Full UF1", "Full UF1 95% CI", "Full UAR",
               "SMIC UF1", "CASME II UF1", "SAMM UF1", "UF1 - plain honest",
               "difference 95% CI"]
LODO_COLUMNS = ["model", "seeds", "trained on", "tested on", "LODO UF1", "LODO UAR",
                "LODO UF1 95% CI", "LOSO honest UF1", "LODO - LOSO UF1", "difference 95% CI"]


def selection_block(results: Path, profile: str) -> str | None:
    """Notebook 12's rows of :data:`README_RULES` for every training variant, and the largest
    honest row of the whole table, labelled as such."""
    import pandas as pd

    from .report import markdown

    table = results / "tables" / f"honest_selection_{profile}.csv"
    if not table.is_file():
        return None
    df = pd.read_csv(table, keep_default_na=False)
    shown = df[df["rule"].isin(README_RULES)
               & ((df["variant"] == "plain") | (df["honest"].astype(str) == "True"))]
    honest = df[df["honest"].astype(str) == "True"]
    best = honest.loc[[honest["Full UF1"].astype(float).idxmax()]]
    if best.index[0] not in shown.index:
        shown = pd.concat([shown, best])
    shown = shown[SEL_COLUMNS].copy()
    shown["rule"] = [r + (" (largest honest row)" if i == best.index[0] else "")
                     for i, r in zip(shown.index, shown["rule"])]
    return (f"<!-- generated by `make reproduce` from results/tables/{table.name}; "
            f"profile {profile} -->\n{markdown(shown)}")


def lodo_block(results: Path, profile: str) -> str | None:
    """Notebook 13's leave-one-dataset-out table beside LOSO."""
    import pandas as pd

    from .report import markdown

    table = results / "tables" / f"lodo_{profile}.csv"
    if not table.is_file():
        return None
    df = pd.read_csv(table, keep_default_na=False)
    return (f"<!-- generated by `make reproduce` from results/tables/{table.name}; "
            f"profile {profile} -->\n{markdown(df[LODO_COLUMNS])}")


FIND_START, FIND_END = "<!-- ablation-findings:start -->", "<!-- ablation-findings:end -->"
RES_START, RES_END = "<!-- results-findings:start -->", "<!-- results-findings:end -->"
# the notebooks whose closing findings the README quotes under the results table
RESULT_FINDINGS = {"04_training_loso": ("04_training", "Training (section 4.2)"),
                   "05_table2_confusion": ("05_table2", "Table 2"),
                   "11_protocol_audit": ("11_protocol_audit", "Protocol audit")}
BEYOND_START, BEYOND_END = "<!-- beyond-findings:start -->", "<!-- beyond-findings:end -->"
BEYOND_FINDINGS = {"12_honest_selection": ("12_honest_selection", "Honest model selection"),
                   "13_cross_dataset": ("13_cross_dataset", "Leave one dataset out")}


def findings_block(results: Path, profile: str, entries: dict | None = None) -> str | None:
    """The notebooks' own "What we found" texts (``results/findings/``), one item each;
    ``entries`` maps a notebook to (findings name, title), by default the four ablations."""
    if entries is None:
        from .ablation import ABLATIONS

        entries = {nb: (name, ABLATIONS[key].item)
                   for key, (nb, name) in ABLATION_TABLES.items()}
    items = []
    for nb, (name, title) in entries.items():
        path = results / "findings" / f"{name}_{profile}.md"
        if path.is_file():
            items.append(f"- **{title}** ([{nb}](notebooks/{nb}.ipynb)): "
                         f"{path.read_text().strip()}")
    if not items:
        return None
    return (f"<!-- generated by `make reproduce` from results/findings/*_{profile}.md, the "
            "notebooks' closing cells -->\n" + "\n".join(items) + "\n")


def update_readme(readme: Path = ROOT / "README.md", results: Path = ROOT / "results",
                  profile: str = "cpu") -> bool:
    """Fill the README's generated blocks from ``results/``: Table 2 (notebook 05), the
    ablations (06-09), notebook 12's honest selection rows, notebook 13's leave-one-dataset-out
    table, and the notebooks' findings. Returns whether anything changed."""
    if not readme.is_file():
        return False
    text = original = readme.read_text()
    for start, end, body in ((START, END, table2_block(results, profile)),
                             (ABL_START, ABL_END, ablation_block(results, profile)),
                             (FIND_START, FIND_END, findings_block(results, profile)),
                             (RES_START, RES_END,
                              findings_block(results, profile, RESULT_FINDINGS)),
                             (SEL_START, SEL_END, selection_block(results, profile)),
                             (LODO_START, LODO_END, lodo_block(results, profile)),
                             (BEYOND_START, BEYOND_END,
                              findings_block(results, profile, BEYOND_FINDINGS))):
        if body is not None:
            text = _fill(text, start, end, body) or text
    if text == original:
        return False
    readme.write_text(text)
    return True


def refusal(plan, budget_hours: float) -> str:
    """The message that stops a run too expensive for this device, and how to make it."""
    total = plan.missing_seconds
    cost = "an unknown time (no timing for some runs)" if total is None else \
        f"about {total / 3600:.1f} h"
    gpu = "bash bench/gpu.sh run --profile paper" if plan.profile == "paper" else \
        f"bash bench/gpu.sh run --profile {plan.profile}"
    inner = (f" and {len(plan.missing_nested)} nested rule(s) without inner fits"
             if plan.missing_nested else "")
    return (f"refused: the {len(plan.missing)} missing {plan.profile}-profile run(s){inner} "
            f"would take "
            f"{cost} on this {plan.device_type} (budget {budget_hours:g} h). Nothing was trained "
            f"and no notebook was changed. Make them where they are cheap: on a GPU with "
            f"`{gpu}` (add --ablation NAME=VALUE for a grid point), or as cluster jobs with "
            f"`htnet grid --profile {plan.profile}`; copy the runs into results/runs/ and run "
            f"this again. Or: --stored-only renders the notebooks from the runs that exist; "
            f"--allow-slow trains here anyway.")


def main(argv: list[str] | None = None) -> int:
    from .config import PROFILES

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=sorted(PROFILES),
                    help="training profile: cpu, paper or smoke")
    ap.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 04 05")
    ap.add_argument("--retrain", action="store_true", help="train again even if runs exist")
    ap.add_argument("--plan", action="store_true", help="print the plan and stop")
    ap.add_argument("--budget-hours", type=float, default=2.0,
                    help="most training time to spend here on missing runs (default 2)")
    ap.add_argument("--allow-slow", action="store_true",
                    help="train the missing runs even beyond the budget")
    ap.add_argument("--stored-only", action="store_true",
                    help="train nothing: render the notebooks from the stored runs")
    ap.add_argument("--workers", type=int, default=2, help="fold processes on a CPU")
    args = ap.parse_args(argv)

    from .data import DataError, load_composite
    from .plan import make_plan
    from .train import pick_device

    try:
        data = load_composite()
    except DataError as exc:
        print(f"reproduce: error: {exc}", file=sys.stderr)
        return 3
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
    elif (plan.missing or plan.missing_nested) and not args.allow_slow:
        total = plan.missing_seconds
        if total is None or total > args.budget_hours * 3600:
            print(refusal(plan, args.budget_hours), file=sys.stderr)
            return EXIT_REFUSED
    selected = [nb for nb in notebooks()
                if not args.only or any(nb.name.startswith(o) for o in args.only)]
    for nb in selected:
        out = output_path(nb, profile)
        print(f"papermill {nb.name} (profile {profile}) -> {out.relative_to(ROOT)}", flush=True)
        try:
            execute(nb, out, parameters_for(nb, {"profile": profile, "retrain": args.retrain}))
        except Exception as exc:  # papermill reports the failing cell; keep it to one line
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            print(f"reproduce: error: {nb.name} failed ({last}); the committed notebook is "
                  "unchanged", file=sys.stderr)
            return 4
    print(f"{len(selected)} notebook(s) executed")
    if profile == COMMITTED_PROFILE and update_readme(profile=profile):
        print("README results table updated")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
