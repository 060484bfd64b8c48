"""Does the corrected crop mode change accuracy? Notebook 05's measurement.

Notebook 02 shows that the official crop mode (``regions="official"``) reads the landmarks'
(x, y) as (row, col) and so crops the four facial regions in the wrong places; the corrected
mode (``regions="corrected"``) crops where the landmarks are. The registry
(:data:`htnetlib.study.experiments.CROP_MODES`) trains both with every seed on the same LOSO
folds, and this module compares their stored runs (training only where asked):

* :func:`crop_mode_table`: per mode and protocol, the composite UF1 and UAR (mean over seeds)
  with 95 % subject-bootstrap intervals, and the paired difference from the official mode on
  the same subjects and seeds.
* :func:`findings_crop_mode`: the verdict in Markdown, computed from that table;
  :func:`crop_bullets`: the same as short bullets (notebook 05's findings).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import profile_config
from ..errors import RunError
from ..evaluation import metrics
from ..training.loso import run_loso
from ..training.store import data_fingerprint, load_run, run_id
from .experiments import CROP_MODES, SEEDS
from .tables import stored_run

BASELINE = "official"  # the mode every difference is taken from


def crop_mode_runs(data, profile: str, seeds=SEEDS, runs_dir: Path | str = "results/runs",
                   modes=None, *, train: bool = False) -> dict:
    """``{mode: [Run per seed]}``: the stored runs of each crop mode (``modes``, default
    :data:`CROP_MODES`: name -> changes to the profile's configuration); with ``train`` a
    missing run is trained into ``runs_dir`` (:func:`htnetlib.training.loso.run_loso`, which
    obeys ``HTNET_TRAIN_PROFILES``), as the other notebooks train what they lack.

    Without ``train`` raises :class:`htnetlib.errors.RunError` naming the first missing run and
    how to train it: the comparison is paired, so every mode needs every seed.
    """
    fingerprint = data_fingerprint(data)
    out = {}
    for mode, changes in (modes or CROP_MODES).items():
        config = dataclasses.replace(profile_config(profile), **changes)  # as crop_config
        out[mode] = []
        for s in seeds:
            run = stored_run(data, config, s, profile, runs_dir, fingerprint)
            if run is None and train:
                run = load_run(run_loso(data, config, seed=s, runs_dir=runs_dir,
                                        profile=profile, progress=False))
            if run is None:
                sets = "".join(f" --set {k}={v}" for k, v in changes.items())
                raise RunError(f"{Path(runs_dir) / run_id(config, s, fingerprint, profile)}: no "
                               f"finished run of crop mode {mode!r}; train it with `htnet train "
                               f"--profile {profile} --seed {s}{sets}` or `make reproduce`")
            out[mode].append(run)
    return out


def crop_mode_table(data, profile: str, seeds=SEEDS, runs_dir: Path | str = "results/runs", *,
                    modes=None, baseline: str = BASELINE, n_boot: int = 1000,
                    train: bool = False) -> pd.DataFrame:
    """One row per crop mode and protocol (honest, oracle) of the stored runs of ``seeds``.

    Columns: the composite UF1 and UAR (mean over seeds) with their 95 % subject-bootstrap
    intervals (:func:`htnetlib.evaluation.metrics.bootstrap_ci` over the seeds' predictions),
    and per metric the paired difference ``mode - baseline`` under the same protocol, its 95 %
    interval and the share of resamples where it is <= 0
    (:func:`htnetlib.evaluation.metrics.paired_bootstrap`, the same subjects and seeds). The
    baseline's own rows are compared with themselves, so their differences are exactly 0.
    ``modes`` replaces :data:`CROP_MODES` (name -> changes), e.g. to compare a mode with itself.
    """
    seeds = [int(s) for s in seeds]
    runs = crop_mode_runs(data, profile, seeds, runs_dir, modes, train=train)
    if baseline not in runs:
        raise ValueError(f"baseline={baseline!r} is not one of the modes {', '.join(runs)}")
    rows, intervals = [], {}
    for mode, rs in runs.items():
        for proto in metrics.PROTOCOLS:
            tables = [r.predictions for r in rs]
            base = [r.predictions for r in runs[baseline]]
            ci = metrics.bootstrap_ci(tables, proto, n_boot=n_boot)
            row = {"mode": mode, "protocol": proto, "profile": profile,
                   "seeds": ",".join(map(str, seeds)),
                   "subjects": int(tables[0]["subject"].nunique())}
            for m in ("uf1", "uar"):
                row[f"Full {m.upper()}"] = float(np.mean([r.metrics[proto]["full"][m]
                                                         for r in rs]))
                row[f"Full {m.upper()} 95% CI"] = "%.3f-%.3f" % ci[m]
            for m in ("uf1", "uar"):
                diff = metrics.paired_bootstrap(tables, proto, base, proto, metric=m,
                                                n_boot=n_boot)
                row[f"{m.upper()} - {baseline}"] = diff["diff"]
                row[f"{m.upper()} difference 95% CI"] = "%+.3f to %+.3f" % diff["ci"]
                row[f"{m.upper()} p(difference <= 0)"] = diff["p_le_zero"]
                intervals[mode, proto, m] = diff["ci"]
            rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(baseline=baseline, intervals=intervals)  # for findings_crop_mode
    return table


def findings_crop_mode(table: pd.DataFrame) -> str:
    """The verdict of :func:`crop_mode_table` in Markdown: per protocol, each mode's composite
    UF1 and its paired difference from the baseline with the 95 % interval, and whether that
    interval holds 0 (then the runs cannot tell the modes apart)."""
    baseline = table.attrs.get("baseline", BASELINE)
    first = table.iloc[0]
    lines = [f"**Crop mode and accuracy** ({first['profile']} profile, "
             f"seed{'s' if ',' in first['seeds'] else ''} {first['seeds']}, "
             f"the same {first['subjects']} held-out subjects; paired subject bootstrap, 95 %; "
             f"P is the share of resamples where a mode does no better than {baseline}):"]
    for proto in metrics.PROTOCOLS:
        part = table[table["protocol"] == proto]
        base = part[part["mode"] == baseline].iloc[0]
        for _, row in part[part["mode"] != baseline].iterrows():
            lo, hi = table.attrs["intervals"][row["mode"], proto, "uf1"]
            verdict = ("the interval holds 0: these runs cannot tell the two modes apart"
                       if lo <= 0 <= hi else
                       f"the interval excludes 0: the {row['mode']} mode is "
                       f"{'better' if lo > 0 else 'worse'}")
            lines.append(
                f"* {proto.capitalize()} protocol: composite UF1 {row['Full UF1']:.3f} "
                f"({row['mode']}) against {base['Full UF1']:.3f} ({baseline}); the difference "
                f"{row['mode']} - {baseline} is {row[f'UF1 - {baseline}']:+.3f} (95 % CI "
                f"{lo:+.3f} to {hi:+.3f}, P = "
                f"{row['UF1 p(difference <= 0)']:.2f}); {verdict}. UAR: "
                f"{row[f'UAR - {baseline}']:+.3f} ({row['UAR difference 95% CI']}).")
    return "\n".join(lines)


def crop_bullets(crop: pd.DataFrame) -> list[str]:
    """Notebook 05's crop-mode findings, one short bullet per protocol, every number read from
    ``crop`` (:func:`crop_mode_table`): each mode's composite UF1 against the official mode's,
    the paired difference with its 95 % interval and P, and whether the interval holds 0."""
    first, base = crop.iloc[0], crop.attrs["baseline"]  # base: the official mode
    out = []
    for _, row in crop[crop["mode"] != base].iterrows():
        proto, mode = row["protocol"], row["mode"]
        ref = crop[(crop["protocol"] == proto) & (crop["mode"] == base)].iloc[0]
        lo, hi = crop.attrs["intervals"][mode, proto, "uf1"]
        verdict = ("the interval holds 0: these runs cannot tell the modes apart"
                   if lo <= 0 <= hi else
                   f"the interval excludes 0: the {mode} mode is {'better' if lo > 0 else 'worse'}")
        out.append(f"Crop mode, {proto} protocol ({first['profile']} profile, seeds "
                   f"{first['seeds']}): {mode} {row['Full UF1']:.3f} against {base} "
                   f"{ref['Full UF1']:.3f} composite UF1, paired difference "
                   f"{row[f'UF1 - {base}']:+.3f} (95 % CI {lo:+.3f} to {hi:+.3f}, "
                   f"P = {row['UF1 p(difference <= 0)']:.2f}); {verdict}.")
    return out
