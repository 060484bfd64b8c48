"""Which jobs the notebooks of a profile need, which are stored, and what the rest cost.

The list comes from the experiment registry, :func:`htnetlib.study.experiments.experiments`
(notebook order, duplicates merged): LOSO runs (04-12), the nested rule's inner fits of
notebook 12 (stored in ``<run>/inner/``) and notebook 13's leave-one-dataset-out results
(``results/tables/lodo/<lodo id>/``). The notebooks find each by id (:func:`run_id` for runs and
inner fits, :func:`lodo_id`: configuration, data and seed), so what they need is known before
any notebook executes.

:func:`make_plan` splits that list into stored and missing jobs and estimates what each missing
one costs on a device, from timings measured in this repository (:func:`estimate`): a stored run
of the same model on the same kind of device, scaled by parameters, epochs and folds, or the
per-epoch CPU timings of Table 5 (``results/timing/``). Where no timing exists, it says so.
``htnetlib.reproduce`` prints the plan and refuses a run that would take too long here;
``htnet grid`` submits the missing jobs.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..io import ROOT
from ..model import parameter_count
from ..training.lodo import LODO_DATASETS, lodo_complete, lodo_id
from ..training.nested import INNER_DIR, INNER_GROUPS, nested_complete
from ..training.store import data_fingerprint, is_complete, run_id
from .experiments import SEEDS, experiments

N_FOLDS = 68  # subjects of the composite benchmark


@dataclass
class Need:
    """One job that notebooks need: its kind (``loso``, ``nested`` or ``lodo``), configuration,
    seed and profile, and who needs it; ``run_id`` is the run's id (a nested job's outer run) or
    the leave-one-dataset-out id."""

    config: Config
    seed: int
    profile: str
    why: list = field(default_factory=list)
    run_id: str = ""
    stored: bool = False
    seconds: float | None = None  # estimated cost on the planned device, if missing
    basis: str = ""  # what the estimate rests on
    kind: str = "loso"

    @property
    def nested(self) -> bool:
        """The inner fits of this run for the nested rule, not the run."""
        return self.kind == "nested"

    @property
    def key(self) -> str:
        """The job's id, unique over kinds: the run id, ``<run id>/inner`` or the lodo id."""
        return f"{self.run_id}/{INNER_DIR}" if self.nested else self.run_id

    @property
    def label(self) -> str:
        return f"{self.key} ({'; '.join(self.why)})"


def needed(profile: str, seeds=SEEDS, kind: str | None = None) -> list[Need]:
    """The registry's jobs for ``profile`` (of one ``kind``, or all), in notebook order."""
    return [Need(e.config, e.seed, profile, list(e.why), kind=e.kind)
            for e in experiments(profile, seeds) if kind in (None, e.kind)]


def needed_runs(profile: str, seeds=SEEDS) -> list[Need]:
    """Every LOSO run the notebooks of ``profile`` train where missing, in notebook order."""
    return needed(profile, seeds, "loso")


def needed_nested(profile: str, seeds=SEEDS) -> list[Need]:
    """The runs whose inner fits notebook 12's nested rule needs (first seed)."""
    return needed(profile, seeds, "nested")


def needed_lodo(profile: str, seeds=SEEDS) -> list[Need]:
    """Notebook 13's leave-one-dataset-out results."""
    return needed(profile, seeds, "lodo")


# --------------------------------------------------------------------------- cost


@functools.lru_cache(maxsize=None)
def _params(config: Config) -> int:
    if config.model == "logreg":
        return 1
    return parameter_count(config)


def _stored_timings(runs_dir: Path) -> list[dict]:
    """(config, device, seconds per fold-epoch, wall seconds) of every stored run with timings."""
    out = []
    for path in sorted(Path(runs_dir).glob("*/config.json")):
        try:
            meta = json.loads(path.read_text())
            cfg = Config.from_dict(meta["config"])
            folds, epochs = int(meta["n_folds"]), int(meta["epochs"])
            workers = max(1, int(meta.get("workers") or 1))
            fold_seconds = float(meta["train_seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable or unfinished run is no timing
        wall = meta.get("gpu_wall_s") or fold_seconds / workers
        out.append({"run": meta.get("run_id", path.parent.name), "config": cfg,
                    "device": meta.get("device", ""), "wall": float(wall), "what": None,
                    "per_fold_epoch": float(wall) * workers / (folds * epochs),
                    "folds": folds, "epochs": epochs, "workers": workers})
    return out


def _cpu_epoch_timings(results_dir: Path) -> list[dict]:
    """Table 5's per-epoch CPU timings (one thread per fold process) as timing references."""
    out = []
    for path in sorted((Path(results_dir) / "timing").glob("*.json")):
        try:
            stored = json.loads(path.read_text())
            for row in stored["timing"]:
                seconds = float(row["seconds per epoch"])
                out.append({"run": f"{path.name}, {row['config']}", "device": "cpu",
                            "config": Config.from_dict(stored["configs"][row["config"]]),
                            "per_fold_epoch": seconds, "wall": None,
                            "what": f"{seconds:.3g} s per epoch on this CPU"})
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def estimate(config: Config, device_type: str, *, workers: int = 2, n_folds: int = N_FOLDS,
             runs_dir: Path = ROOT / "results" / "runs",
             results_dir: Path = ROOT / "results", timings: list | None = None
             ) -> tuple[float | None, str]:
    """Estimated wall seconds of one LOSO run of ``config`` on a ``device_type`` device
    (``cpu`` with ``workers`` fold processes, or ``cuda``), and what the estimate rests on.

    The reference is the measured timing of the same model on the same kind of device whose
    parameter count is nearest (exact configurations first): stored runs (their fold seconds,
    or a GPU run's wall time) and, on a CPU, Table 5's per-epoch timings. It is scaled by
    parameters, epochs and folds. ``(None, reason)`` where nothing was measured.
    """
    import math

    folds = min(n_folds, config.max_folds or n_folds)
    if timings is None:
        timings = _stored_timings(runs_dir) + _cpu_epoch_timings(results_dir)
    same = [t for t in timings
            if t["config"].model == config.model and t["device"].startswith(device_type)]
    if not same:
        return None, f"no {config.model} run timed on a {device_type} device is stored"
    n = _params(config)
    ref = min(same, key=lambda t: (t["config"] != config,
                                   abs(math.log(_params(t["config"]) / n))))
    per_param = n / _params(ref["config"])
    if ref["wall"] is not None and device_type != "cpu":  # a GPU run: its whole wall time
        seconds = ref["wall"] * per_param * config.epochs / ref["epochs"] * folds / ref["folds"]
        what = f"{ref['wall'] / 60:.1f} min"
    else:
        seconds = ref["per_fold_epoch"] * per_param * config.epochs * folds / max(1, workers)
        what = ref.get("what") or f"{ref['per_fold_epoch']:.3g} s per fold-epoch"
    how = "the same configuration" if ref["config"] == config else \
        "scaled by parameters, epochs and folds"
    return seconds, f"from {ref['run']} ({ref['device']}, {what}), {how}"


# --------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """The jobs of a profile's notebooks on one release, by kind, each stored or missing."""

    profile: str
    device_type: str
    needs: list  # LOSO runs
    nested: list = field(default_factory=list)  # inner stores of notebook 12's nested rule
    lodo: list = field(default_factory=list)  # notebook 13's leave-one-dataset-out results

    @property
    def jobs(self) -> list:
        """Every job of every kind, in notebook order."""
        return self.needs + self.nested + self.lodo

    @property
    def missing(self) -> list:
        """The missing LOSO runs."""
        return [n for n in self.needs if not n.stored]

    @property
    def missing_nested(self) -> list:
        """The runs whose nested rule lacks its inner fits (notebook 12 trains them)."""
        return [n for n in self.nested if not n.stored]

    @property
    def missing_lodo(self) -> list:
        """The missing leave-one-dataset-out results (notebook 13 trains them)."""
        return [n for n in self.lodo if not n.stored]

    @property
    def missing_jobs(self) -> list:
        """Every missing job of every kind, in notebook order (what ``htnet grid`` submits)."""
        return [n for n in self.jobs if not n.stored]

    @property
    def missing_seconds(self) -> float | None:
        """Total estimated cost of the missing jobs of every kind; None when one of them has no
        estimate."""
        costs = [n.seconds for n in self.missing_jobs]
        return None if any(c is None for c in costs) else float(sum(costs))

    def counts(self) -> str:
        """``N LOSO runs, N nested inner fits, N leave-one-dataset-out results``."""
        return (f"{len(self.needs)} LOSO runs, {len(self.nested)} nested inner fits, "
                f"{len(self.lodo)} leave-one-dataset-out results")

    def summary(self, limit: int = 12) -> str:
        """What is stored, what is missing and what the missing jobs cost here."""
        missing = self.missing_jobs
        lines = [f"profile {self.profile}: {len(self.needs)} runs needed by the notebooks, "
                 f"{len(self.needs) - len(self.missing)} stored, {len(self.missing)} missing; "
                 f"nested inner fits {len(self.nested) - len(self.missing_nested)} of "
                 f"{len(self.nested)} stored, leave-one-dataset-out results "
                 f"{len(self.lodo) - len(self.missing_lodo)} of {len(self.lodo)} stored"]
        for n in self.missing[:limit]:
            lines.append(self._line(n))
        if len(self.missing) > limit:
            lines.append(f"  ... and {len(self.missing) - limit} more")
        for n in self.missing_nested + self.missing_lodo[:limit]:
            lines.append(self._line(n))
        if len(self.missing_lodo) > limit:
            lines.append(f"  ... and {len(self.missing_lodo) - limit} more")
        total = self.missing_seconds
        if missing:
            lines.append("  estimated cost of the missing jobs here: "
                         + ("unknown (a job has no timing)" if total is None else
                            _duration(total)))
        return "\n".join(lines)

    def _line(self, n: Need) -> str:
        cost = "no timing" if n.seconds is None else _duration(n.seconds)
        return f"  missing {n.label}: {cost} on this {self.device_type} ({n.basis})"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def lodo_fraction(table, n_folds: int) -> float:
    """A leave-one-dataset-out result's cost as a fraction of one LOSO run of ``n_folds`` folds.

    Training dominates a fold's cost and grows with the samples trained on: a LOSO fold trains
    on about N (1 - 1/S) of the N samples (S subjects), the fold that holds out dataset d on
    N - N_d. So the result costs (the LOSO run / ``n_folds``) x sum over held-out datasets of
    (N - N_d) / (N (1 - 1/S)): with three datasets, about 2 / (S - 1) of a full LOSO run (the
    extra test samples per epoch are ignored).
    """
    n, subjects = len(table), table["subject"].nunique()
    sizes = table["dataset"].value_counts()
    held = [d for d in LODO_DATASETS if d in sizes.index]
    per_loso_fold = n * (1 - 1 / max(subjects, 2))
    return sum(n - int(sizes[d]) for d in held) / per_loso_fold / n_folds


def make_plan(data, profile: str, *, runs_dir: Path = ROOT / "results" / "runs",
              lodo_dir: Path | None = None, device_type: str = "cpu", workers: int = 2,
              seeds=SEEDS, retrain: bool = False) -> Plan:
    """The jobs ``profile``'s notebooks need on ``data`` (:func:`experiments`), stored or not,
    with the cost of each missing one on ``device_type`` (all of them count as missing with
    ``retrain``). Runs and inner fits are looked for in ``runs_dir``, leave-one-dataset-out
    results in ``lodo_dir`` (default: ``tables/lodo`` beside ``runs_dir``, where the notebooks
    keep them).

    Costs: a LOSO run as :func:`estimate`; inner fits (INNER_GROUPS - 1) times their run
    (INNER_GROUPS fits per fold, each on (INNER_GROUPS - 1) / INNER_GROUPS of its training
    subjects); a leave-one-dataset-out result as :func:`lodo_fraction` of a LOSO run. Inner fits
    and leave-one-dataset-out results train on the CPU (:func:`run_nested` and :func:`run_lodo`
    take no device), so their LOSO reference is a CPU estimate even on a GPU plan.
    """
    runs_dir = Path(runs_dir)
    lodo_dir = runs_dir.parent / "tables" / "lodo" if lodo_dir is None else Path(lodo_dir)
    fingerprint = data_fingerprint(data)
    n_folds = data.table["subject"].nunique()
    timings = _stored_timings(runs_dir) + _cpu_epoch_timings(runs_dir.parent)
    plan = Plan(profile, device_type, [], [], [])
    for n in needed(profile, seeds):
        if n.kind == "lodo":
            n.run_id = lodo_id(n.config, n.seed, fingerprint, profile)
            n.stored = not retrain and lodo_complete(lodo_dir / n.run_id)
        else:
            n.run_id = run_id(n.config, n.seed, fingerprint, profile)
            n.stored = not retrain and (nested_complete if n.nested else is_complete)(
                runs_dir / n.run_id)
        {"loso": plan.needs, "nested": plan.nested, "lodo": plan.lodo}[n.kind].append(n)
        if n.stored:
            continue
        # inner fits and leave-one-dataset-out fits train on the job's device as LOSO folds do
        # (grouped on a GPU: htnetlib.training.nested.inner_trainer)
        seconds, basis = estimate(n.config, device_type, workers=workers, n_folds=n_folds,
                                  timings=timings)
        if n.kind == "loso":
            n.seconds, n.basis = seconds, basis
        elif n.kind == "nested":
            n.seconds = None if seconds is None else seconds * (INNER_GROUPS - 1)
            n.basis = f"{INNER_GROUPS - 1} x the LOSO run, {basis}"
        else:
            folds = min(n_folds, n.config.max_folds or n_folds)
            share = lodo_fraction(data.table, folds)
            n.seconds = None if seconds is None else seconds * share
            n.basis = f"{share:.3g} x the LOSO run (samples trained), {basis}"
    return plan
