"""Which LOSO runs the notebooks of a profile need, which are stored, and what the rest cost.

The notebooks find their runs by id (:func:`htnetlib.run_id`: configuration, data and
seed), so the list of runs a profile needs is known before any notebook executes:

* 04 (training): the profile's HTNet, seed 0;
* 05 (Table 2) and 11 (protocol audit): HTNet, HTNet on the whole map, STSTNet with every seed,
  logistic regression once, and the permuted-label null model (seed 0);
* 06-09 (section 4.4): every grid point of the four ablations with the first seed, and the
  profile's default with every seed;
* 12 (honest selection): the training variants of :data:`htnetlib.protocols.VARIANTS`, the single
  changes with the first seed and the combinations with every seed (its nested rule adds the
  inner fits of :func:`htnetlib.protocols.run_nested`, stored inside their outer run).

Notebook 13 reads stored LOSO runs only; its leave-one-dataset-out results are not LOSO runs.

:func:`make_plan` splits that list into stored and missing runs and estimates what each missing
run costs on a device, from timings measured in this repository (:func:`estimate`): a stored run
of the same model on the same kind of device, scaled by parameters, epochs and folds, or the
per-epoch CPU timings of Table 5 (``results/timing/``). Where no timing exists, it says so.
``htnetlib.reproduce`` prints the plan and refuses a run that would take too long here;
``htnet grid`` submits the missing runs as jobs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, profile_config
from ..io import ROOT
from ..model import parameter_count
from ..training.nested import INNER_GROUPS, nested_complete
from ..training.store import data_fingerprint, is_complete, run_id
from .experiments import (ABLATIONS, NESTED_VARIANTS, SEEDS, SELECTION_VARIANTS, TABLE2, selection_config,
                          selection_seeds, table2_config, table2_seeds)

N_FOLDS = 68  # subjects of the composite benchmark


@dataclass
class Need:
    """One run that notebooks need: its configuration, seed and profile, and who needs it."""

    config: Config
    seed: int
    profile: str
    why: list = field(default_factory=list)
    run_id: str = ""
    stored: bool = False
    seconds: float | None = None  # estimated cost on the planned device, if missing
    basis: str = ""  # what the estimate rests on

    nested: bool = False  # the inner fits of this run for the nested rule, not the run

    @property
    def label(self) -> str:
        what = f"{self.run_id}/inner" if self.nested else self.run_id
        return f"{what} ({'; '.join(self.why)})"


def needed_runs(profile: str, seeds=SEEDS) -> list[Need]:
    """Every run the notebooks of ``profile`` train where missing, in notebook order."""
    seeds = list(seeds)
    found: dict[tuple, Need] = {}

    def need(config: Config, seed: int, why: str) -> None:
        key = (json.dumps(config.to_dict(), sort_keys=True), seed)
        found.setdefault(key, Need(config, seed, profile)).why.append(why)

    default = profile_config(profile)
    need(default, 0, "04 training")
    for name in TABLE2:
        cfg = table2_config(name, profile)
        for s in table2_seeds(name, seeds):
            need(cfg, s, f"05 Table 2: {name}")
    for nb, key in (("06", "block_size"), ("07", "dim"), ("08", "heads"), ("09", "layers")):
        ab = ABLATIONS[key]
        for v in ab.values:
            need(ab.config(v, profile), seeds[0], f"{nb} {ab.item}: {ab.label(v)}")
        for s in seeds:
            need(default, s, f"{nb} seed spread")
    need(dataclasses.replace(default, permute_labels=True), 0, "11 null model")
    for s in seeds:
        need(table2_config("STSTNet", profile), s, "11 protocol audit")
    for name in SELECTION_VARIANTS:
        for s in selection_seeds(name, seeds):
            need(selection_config(name, profile), s, f"12 honest selection: {name}")
    return list(found.values())


def needed_nested(profile: str, seeds=SEEDS) -> list[Need]:
    """The runs whose inner fits notebook 12's nested rule needs (first seed)."""
    return [Need(selection_config(name, profile), list(seeds)[0], profile,
                 [f"12 nested rule: {name}"], nested=True)
            for name in NESTED_VARIANTS]


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
    profile: str
    device_type: str
    needs: list
    nested: list = field(default_factory=list)  # inner stores of notebook 12's nested rule

    @property
    def missing(self) -> list:
        """The missing LOSO runs (what ``htnet grid`` submits)."""
        return [n for n in self.needs if not n.stored]

    @property
    def missing_nested(self) -> list:
        """The runs whose nested rule lacks its inner fits (notebook 12 trains them)."""
        return [n for n in self.nested if not n.stored]

    @property
    def missing_seconds(self) -> float | None:
        """Total estimated cost of the missing runs and inner fits; None when one of them has
        no estimate."""
        costs = [n.seconds for n in self.missing + self.missing_nested]
        return None if any(c is None for c in costs) else float(sum(costs))

    def summary(self, limit: int = 12) -> str:
        """What is stored, what is missing and what the missing runs cost here."""
        lines = [f"profile {self.profile}: {len(self.needs)} runs needed by the notebooks, "
                 f"{len(self.needs) - len(self.missing)} stored, {len(self.missing)} missing"]
        for n in self.missing[:limit]:
            cost = "no timing" if n.seconds is None else _duration(n.seconds)
            lines.append(f"  missing {n.label}: {cost} on this {self.device_type} ({n.basis})")
        if len(self.missing) > limit:
            lines.append(f"  ... and {len(self.missing) - limit} more")
        for n in self.missing_nested:
            cost = "no timing" if n.seconds is None else _duration(n.seconds)
            lines.append(f"  missing {n.label}: {cost} on this {self.device_type} ({n.basis})")
        total = self.missing_seconds
        if self.missing or self.missing_nested:
            lines.append("  estimated cost of the missing runs here: "
                         + ("unknown (a run has no timing)" if total is None else
                            _duration(total)))
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def make_plan(data, profile: str, *, runs_dir: Path = ROOT / "results" / "runs",
              device_type: str = "cpu", workers: int = 2, seeds=SEEDS,
              retrain: bool = False) -> Plan:
    """The runs ``profile``'s notebooks need on ``data``, stored or not, with the cost of each
    missing one on ``device_type`` (all of them count as missing with ``retrain``)."""
    fingerprint = data_fingerprint(data)
    n_folds = data.table["subject"].nunique()
    needs = needed_runs(profile, seeds)
    timings = _stored_timings(Path(runs_dir)) + _cpu_epoch_timings(Path(runs_dir).parent)
    for n in needs:
        n.run_id = run_id(n.config, n.seed, fingerprint, profile)
        n.stored = not retrain and is_complete(Path(runs_dir) / n.run_id)
        if not n.stored:
            n.seconds, n.basis = estimate(n.config, device_type, workers=workers,
                                          n_folds=n_folds, timings=timings)
    nested = needed_nested(profile, seeds)
    for n in nested:
        n.run_id = run_id(n.config, n.seed, fingerprint, profile)
        n.stored = not retrain and nested_complete(Path(runs_dir) / n.run_id)
        if not n.stored:
            # INNER_GROUPS fits per fold, each on (INNER_GROUPS - 1) / INNER_GROUPS of its
            # training subjects: (INNER_GROUPS - 1) times the LOSO run (4.4 measured, cpu)
            seconds, basis = estimate(n.config, device_type, workers=workers, n_folds=n_folds,
                                      timings=timings)
            n.seconds = None if seconds is None else seconds * (INNER_GROUPS - 1)
            n.basis = f"{INNER_GROUPS - 1} x the LOSO run, {basis}"
    return Plan(profile, device_type, needs, nested)
