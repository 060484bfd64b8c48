"""Ablations of section 4.4: Table 4 (block size), Figure 5 (hidden dimension), Figure 6 (heads)
and Table 5 (transformer layers).

Each ablation (:data:`htnetlib.study.experiments.ABLATIONS`) changes one setting of a profile's
default model and keeps the rest. One grid point is one LOSO run with one seed; the seed spread
of the default configuration, measured over several seeds, is what a reader compares the
differences between grid points with.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import paper
from ..config import Config, profile_config
from ..data import DATASET_NAMES, Composite
from ..evaluation import metrics
from ..io import provenance, write_json
from ..data.regions import network_inputs
from ..model import parameter_count
from ..training.fold import train_fold
from ..training.loso import run_loso
from ..training.store import Run, data_fingerprint, load_run
from .experiments import ABLATIONS, Ablation, describe
from .tables import bullets, scores_row, seed_statistic, stored_run


def grid_runs(data: Composite, ablation: Ablation, profile: str, seed: int, *, runs_dir,
              train_missing: bool = True, retrain: bool = False, workers: int = 1) -> dict:
    """``{grid value: Run or None}`` for one seed.

    With ``train_missing`` a missing run is trained (as ``make reproduce`` does for the
    profile it regenerates); without it, a missing run is ``None`` (a profile that needs a
    GPU, looked up but never trained here).
    """
    out = {}
    fingerprint = None if train_missing else data_fingerprint(data)
    for v in ablation.values:
        cfg = ablation.config(v, profile)
        if train_missing:
            out[v] = load_run(run_loso(
                data, cfg, seed=seed, runs_dir=runs_dir, profile=profile, retrain=retrain,
                workers=workers, progress=False))
        else:
            out[v] = stored_run(data, cfg, seed, profile, runs_dir, fingerprint)
    return out


def notebook_runs(data: Composite, ablation: Ablation, profile: str, seeds, *, runs_dir,
                  stored_profiles=("paper",), retrain: bool = False, workers: int = 1
                  ) -> tuple[dict, list[Run]]:
    """What notebooks 06-09 show: ``({profile: {grid value: Run or None}}, default runs)``.

    The grid of ``profile`` with seed ``seeds[0]`` is read or trained where missing; every
    other profile of ``stored_profiles`` is only looked up (a point without a stored run is
    None, listed as *not run*); the profile's default is read or trained with every seed.
    """
    runs = {profile: grid_runs(data, ablation, profile, seeds[0], runs_dir=runs_dir,
                               retrain=retrain, workers=workers)}
    for p in stored_profiles:
        if p != profile:
            runs[p] = grid_runs(data, ablation, p, seeds[0], runs_dir=runs_dir,
                                train_missing=False)
    default_runs = [load_run(run_loso(
        data, profile_config(profile), seed=s, runs_dir=runs_dir, profile=profile,
        retrain=retrain, workers=workers, progress=False)) for s in seeds]
    return runs, default_runs


def stored_counts(ablation: Ablation, runs: dict, profile: str) -> str:
    """One sentence on the grid points that other profiles have stored runs for."""
    parts = []
    for p, by_value in runs.items():
        if p == profile:
            continue
        have = [ablation.label(v) for v, r in by_value.items() if r is not None]
        parts.append(f"the {p} profile has a stored run at {len(have)} of {len(by_value)} grid "
                     f"points ({', '.join(have) if have else 'none'}); the others are not run "
                     "(they need a GPU: bench/gpu.sh or htnet grid)")
    return "; ".join(parts).capitalize() + "." if parts else ""


def versus_default(ablation: Ablation, by_value: dict, profile: str, *, n_boot: int = 1000
                   ) -> pd.DataFrame:
    """Each grid point against the profile's default on the same seed, subjects and folds:
    the difference of composite UF1 under each protocol with a paired subject-bootstrap 95 %
    interval (:func:`htnetlib.metrics.paired_bootstrap`). An interval that holds 0 says the
    grid point is not told apart from the default on these 68 subjects."""
    base = profile_config(profile)
    default = [v for v in ablation.values if ablation.config(v, profile) == base]
    ref = by_value.get(default[0]) if default else None
    rows = []
    for v, run in by_value.items():
        if run is None or ref is None or v == default[0]:
            continue
        row = {ablation.setting: ablation.label(v), f"{profile} setting":
               describe(ablation.config(v, profile), ablation.key)}
        for proto in metrics.PROTOCOLS:
            res = metrics.paired_bootstrap(run.predictions, proto, ref.predictions, proto,
                                           n_boot=n_boot)
            row[f"{proto}: UF1 - default"] = res["diff"]
            row[f"{proto}: 95% CI"] = "%+.3f to %+.3f" % res["ci"]
            row[f"{proto}: CI holds 0"] = res["ci"][0] <= 0 <= res["ci"][1]
        rows.append(row)
    return pd.DataFrame(rows)


def best_points(df: pd.DataFrame, ablation: Ablation, profile: str, default_runs: list[Run]
                ) -> pd.DataFrame:
    """Per protocol (section 4.4): the best grid point(s) of ``profile`` (all of them where
    several tie), the range of composite UF1 over the grid, and the default's seed sd."""
    sd = default_spread(default_runs)
    rows = []
    for proto in metrics.PROTOCOLS:
        sel = df[(df["profile"] == profile) & (df["protocol"] == proto)]
        if sel.empty:
            continue
        top = sel["Full UF1"].max()
        tied = sel[np.isclose(sel["Full UF1"], top, rtol=0, atol=5e-5)][ablation.setting]
        span = top - sel["Full UF1"].min()
        rows.append({"protocol": proto, "best grid point(s)": ", ".join(map(str, tied))
                     + (" (tie)" if len(tied) > 1 else ""),
                     "best Full UF1": top, "range over the grid": span,
                     "seed sd of the default": sd[proto]["full"]["uf1"]})
    return pd.DataFrame(rows)


def findings(ablation: Ablation, df: pd.DataFrame, versus: pd.DataFrame, profile: str,
             seeds) -> str:
    """A notebook's closing verdict, as Markdown bullets, computed from its table and
    comparisons."""
    mine = df[(df["profile"] == profile) & df["source"].str.startswith("measured")]
    rng = {p: (mine[mine["protocol"] == p]["Full UF1"].min(),
               mine[mine["protocol"] == p]["Full UF1"].max()) for p in metrics.PROTOCOLS}
    def point(i):  # a grid point in the paper's units, with the profile's own setting
        label, cfg = mine.loc[i, ablation.setting], mine.loc[i, "config"]
        return label if profile == "paper" else f"{label} ({cfg})"

    def best_of(p):  # every grid point that ties for the best composite UF1
        sel = mine[mine["protocol"] == p]["Full UF1"]
        tied = [point(i) for i in sel.index[np.isclose(sel, sel.max(), rtol=0, atol=5e-5)]]
        return tied[0] if len(tied) == 1 else f"{', '.join(tied)} (tied)"

    best = {p: best_of(p) for p in metrics.PROTOCOLS}
    cited = df[df["source"].str.startswith("cited")]["Full UF1"]
    lines = [f"All measured rows: the **{profile}** profile (each grid point seed {seeds[0]}; "
             f"the default also seeds {', '.join(map(str, seeds))}); grid points in the paper's "
             "units."]
    paper_part = (f" (the paper's stated values, oracle: {cited.min():.3f}-{cited.max():.3f})"
                  if len(cited) > 1 else "")
    lines.append(f"Composite UF1 over the grid: oracle {rng['oracle'][0]:.3f}-"
                 f"{rng['oracle'][1]:.3f}{paper_part}; honest {rng['honest'][0]:.3f}-"
                 f"{rng['honest'][1]:.3f}.")
    lines.append(f"Best point, honest protocol: {best['honest']}.")
    lines.append(f"Best point, oracle protocol: {best['oracle']}.")
    if len(versus):
        sep = {p: versus.loc[~versus[f"{p}: CI holds 0"], ablation.setting].tolist()
               for p in metrics.PROTOCOLS}
        lines.append(
            f"Against the default on the same subjects (paired bootstrap, 95 %): "
            f"{len(sep['honest'])} of {len(versus)} grid points differ under the honest protocol"
            + (f" ({', '.join(sep['honest'])})" if sep["honest"] else "")
            + f", {len(sep['oracle'])} under the oracle"
            + (f" ({', '.join(sep['oracle'])})" if sep["oracle"] else "")
            + "; every other difference is within what the 68 subjects can resolve.")
    other = df[(df["profile"] != profile) & df["source"].str.startswith("measured")]
    for p in other["profile"].unique():
        o = other[other["profile"] == p]
        pts = ", ".join(
            f"{v}: honest {o[(o[ablation.setting] == v) & (o.protocol == 'honest')]['Full UF1'].iloc[0]:.3f}, "
            f"oracle {o[(o[ablation.setting] == v) & (o.protocol == 'oracle')]['Full UF1'].iloc[0]:.3f}"
            for v in o[ablation.setting].unique())
        lines.append(f"The {p} profile (the paper's model size) has stored runs at {pts}.")
    return bullets(lines)


def default_spread(runs: list[Run]) -> dict:
    """Standard deviation over seeds of each score: ``{protocol: {group: {uf1, uar}}}``."""
    if len(runs) < 2:
        nan = {"uf1": float("nan"), "uar": float("nan")}
        return {p: {g: dict(nan) for g in metrics.GROUPS} for p in metrics.PROTOCOLS}
    return {p: seed_statistic(runs, p, lambda x: np.std(x, ddof=1)) for p in metrics.PROTOCOLS}


def table(ablation: Ablation, runs: dict[str, dict], *, n_boot: int = 1000) -> pd.DataFrame:
    """The ablation beside the paper: one row per grid point, source and protocol.

    ``runs`` maps a profile to ``{grid value: Run or None}``. Rows: the paper's value where it
    states one (oracle protocol, the official code's), then per profile the honest and oracle
    scores with a 95 % subject-bootstrap interval of the composite UF1, or one row saying that
    no run of the grid point is stored.
    """
    rows = []
    for v in ablation.values:
        label = ablation.label(v)
        if v in ablation.cited:
            cited = {g: {"uf1": f, "uar": a} for g, (f, a) in ablation.cited[v].items()}
            rows.append(scores_row({ablation.setting: label, "source": "cited (paper)",
                                    "profile": "paper", "protocol": "oracle",
                                    "config": describe(ablation.config(v, "paper"), ablation.key)},
                                   cited))
        for profile, by_value in runs.items():
            cfg = ablation.config(v, profile)
            base = {ablation.setting: label, "profile": profile,
                    "config": describe(cfg, ablation.key)}
            run = by_value.get(v)
            if run is None:
                rows.append(scores_row({**base, "source": "not run (no stored run)",
                                        "protocol": "-"}, {}))
                continue
            default = " (profile default)" if cfg == profile_config(profile) else ""
            for proto in metrics.PROTOCOLS:
                row = scores_row({**base, "source": f"measured, seed {run.meta['seed']}{default}",
                                  "protocol": proto}, run.metrics[proto])
                ci = metrics.bootstrap_ci(run.predictions, proto, n_boot=n_boot)
                row["Full UF1 95% CI"] = "%.3f-%.3f" % ci["uf1"]
                row["run"] = run.path.name
                rows.append(row)
    return pd.DataFrame(rows)


def spread_table(profile: str, runs: list[Run]) -> pd.DataFrame:
    """Mean and standard deviation over seeds of the profile default's scores."""
    sd = default_spread(runs)
    rows = []
    for proto in metrics.PROTOCOLS:
        for statistic, scores in (("mean", seed_statistic(runs, proto)), ("sd", sd[proto])):
            rows.append(scores_row({"profile": profile, "protocol": proto,
                                    "statistic": statistic, "seeds": len(runs)}, scores))
    return pd.DataFrame(rows)


def compact(df: pd.DataFrame, ablation: Ablation, group: str = "Full") -> pd.DataFrame:
    """Paper-style view: grid points as columns, one row per source, protocol and metric."""
    d = df[df["protocol"] != "-"].copy()
    d["row"] = d["profile"] + ", " + d["protocol"] + np.where(
        d["source"].str.startswith("cited"), " (paper)", "")
    out = []
    for metric in ("UF1", "UAR"):
        p = d.pivot_table(index="row", columns=ablation.setting, values=f"{group} {metric}",
                          sort=False)
        p.index = [f"{group} {metric}: {i}" for i in p.index]
        out.append(p[[ablation.label(v) for v in ablation.values if ablation.label(v) in p]])
    return pd.concat(out)


def compact_all(df: pd.DataFrame, ablation: Ablation, digits: int = 4) -> pd.DataFrame:
    """Section 4.4's tables in the paper's layout for every dataset, as a reader sees them: a
    profile's point without a run says "not run", a value the paper does not state "-"."""
    out = pd.concat({g: compact(df, ablation, g) for g in ("Full", "SMIC", "CASME II", "SAMM")})
    out = out.round(digits).astype(object)
    cited = np.array([str(i[1]).endswith("(paper)") for i in out.index])
    fill = np.broadcast_to(np.where(cited[:, None], "-", "not run"), out.shape)
    return out.where(out.notna(), pd.DataFrame(fill, index=out.index, columns=out.columns))


def _short(cfg: Config, key: str) -> str:
    return {"block_size": f"{cfg.patch_size}x{cfg.patch_size}", "dim": str(cfg.dim),
            "heads": str(cfg.heads), "layers": "(%d, %d, %d)" % tuple(cfg.block_repeats)}[key]


def plot(df: pd.DataFrame, ablation: Ablation, profile: str, spread: dict | None = None):
    """UF1 (left) and UAR (right) against the grid; top: the composite, bottom: each dataset.

    Solid lines are honest, dashed oracle, open squares the paper's stated values (oracle).
    Where ``spread`` is given, a bar of +-1 sd over seeds marks the profile default on every
    series. Where the profile scales the grid, its own setting is under each paper value.
    """
    import matplotlib.pyplot as plt

    x = np.arange(len(ablation.values))
    labels = [ablation.label(v) for v in ablation.values]
    scaled = any(_short(ablation.config(v, profile), ablation.key)
                 != _short(ablation.config(v, "paper"), ablation.key) for v in ablation.values)
    ticks = [f"{lab}\n{_short(ablation.config(v, profile), ablation.key)}" if scaled else lab
             for v, lab in zip(ablation.values, labels)]
    colours = dict(zip(metrics.GROUPS, ("black", "tab:blue", "tab:green", "tab:red")))
    measured = df[(df["profile"] == profile) & df["source"].str.startswith("measured")]
    cited = df[df["source"].str.startswith("cited")].set_index(ablation.setting)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for col, metric in enumerate(("UF1", "UAR")):
        for row, groups in enumerate((metrics.GROUPS[:1], metrics.GROUPS[1:])):
            ax = axes[row, col]
            for g in groups:
                name = f"{DATASET_NAMES[g]} {metric}"
                for proto, style in (("honest", "-"), ("oracle", "--")):
                    sel = measured[measured["protocol"] == proto].set_index(ablation.setting)
                    ax.plot(x, [sel[name].get(lab, np.nan) for lab in labels], style, marker="o",
                            ms=3.5, color=colours[g], label=f"{DATASET_NAMES[g]}, {proto}")
                y = [cited[name].get(lab, np.nan) for lab in labels]
                if np.isfinite(y).any():
                    ax.plot(x, y, ":", marker="s", mfc="none", ms=7, color=colours[g],
                            label=f"{DATASET_NAMES[g]}, paper (oracle)")
            if row == 0:
                _plot_other_profiles(ax, df, ablation, profile, labels, f"Full {metric}")
            if spread is not None:
                _seed_bars(ax, measured, ablation, labels, spread, groups, metric, colours)
            ax.set(ylabel=f"{'composite' if row == 0 else 'per dataset'} {metric}")
            ax.grid(alpha=0.3)
            if col == 1:
                ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        axes[1, col].set(xticks=x, xticklabels=ticks,
                         xlabel=ablation.setting + (f"; {profile} profile below" if scaled else ""))
    fig.tight_layout()
    return fig


def _seed_bars(ax, measured, ablation: Ablation, labels: list, spread: dict, groups, metric: str,
               colours: dict) -> None:
    """Section 4.4's noise: a +-1 seed-sd bar at the profile default for every drawn series
    (each dataset, honest and oracle), shifted a little sideways so that none hides another."""
    dflt = measured[measured["source"].str.contains("profile default")]
    if dflt.empty:
        return
    i = labels.index(dflt[ablation.setting].iloc[0])
    series = [(g, p) for g in groups for p in metrics.PROTOCOLS]
    for k, (g, proto) in enumerate(series):
        s = spread[proto].get(g, {}).get(metric.lower(), float("nan"))  # a group without runs
        y = dflt[dflt["protocol"] == proto][f"{DATASET_NAMES[g]} {metric}"]
        if len(y) and np.isfinite(s) and np.isfinite(y.iloc[0]):
            dx = 0.06 * (k - (len(series) - 1) / 2)
            ax.errorbar([i + dx], [y.iloc[0]], yerr=[s], color=colours[g], capsize=4, lw=1.6,
                        ls="none", label="default: +-1 seed sd (each series)" if k == 0 else None)


def _plot_other_profiles(ax, df: pd.DataFrame, ablation: Ablation, profile: str, labels: list,
                         column: str) -> None:
    """Stars at the grid points that another profile (the paper's) has stored runs for:
    filled for honest, open for oracle."""
    other = df[(df["profile"] != profile) & df["source"].str.startswith("measured")]
    for p in other["profile"].unique():
        for proto, fill in (("honest", "tab:purple"), ("oracle", "none")):
            sel = other[(other["profile"] == p) & (other["protocol"] == proto)]
            xs = [labels.index(v) for v in sel[ablation.setting]]
            ax.plot(xs, sel[column], "*", ms=13, mfc=fill, color="tab:purple", ls="none",
                    label=f"composite, {proto}, {p} profile")


def time_epochs(data: Composite, configs: dict, *, epochs: int = 2, repeats: int = 3,
                threads: int = 1, seed: int = 0) -> pd.DataFrame:
    """Seconds per training epoch over all samples for each configuration.

    Each timing is the one fold loop (:func:`htnetlib.training.fold.train_fold`) trained for
    ``epochs`` epochs on every sample, predicting one sample after each epoch, on the CPU with
    ``threads`` torch threads, as the LOSO runs train a fold; its seconds (from the first step,
    which also allocates Adam's state) over ``epochs``. The configurations are timed in turn,
    ``repeats`` rounds over all of them, so a change in machine load touches every
    configuration alike; the median round counts. Only one model is alive at a time, so the
    paper profile's largest fits in memory.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    y = data.table["label"].to_numpy()
    times = {name: [] for name in configs}
    try:
        for _ in range(repeats):
            for name, cfg in configs.items():
                x = network_inputs(data, cfg)
                res = train_fold(dataclasses.replace(cfg, epochs=epochs), x, y, x[:1], y[:1],
                                 seed=seed, device=torch.device("cpu"), name=name)
                times[name].append(res.seconds / epochs)
    finally:
        torch.set_num_threads(old)
    return pd.DataFrame([{"config": name, "seconds per epoch": float(np.median(t)),
                          "rounds": ", ".join(f"{s:.4f}" for s in t)} for name, t in times.items()])


def layer_timing(data: Composite, profiles, *, results_dir, retime: bool = False,
                 epochs: int = 2, repeats: int = 3, threads: int = 1,
                 out_dir=None) -> pd.DataFrame:
    """Table 5's training time measured here, read from ``<results_dir>/timing/`` if stored,
    else measured and written to ``<out_dir>/timing/`` (default ``results_dir``).

    Every layer configuration of every profile in ``profiles`` is timed in one process
    (:func:`time_epochs`) and stored with the machine, commit and library versions beside it,
    so the ratios between configurations are what to compare with the paper's column.
    """
    import json

    ab = ABLATIONS["layers"]
    name = "table5_layers_" + "_".join(profiles)
    path = Path(results_dir) / "timing" / f"{name}.json"
    configs = {f"{p} {ab.label(v)}": ab.config(v, p) for p in profiles for v in ab.values}
    fingerprint = data_fingerprint(data)
    if path.is_file() and not retime:
        stored = json.loads(path.read_text())
        want = {k: c.to_dict() for k, c in configs.items()}
        if stored["configs"] == want and stored["data_fingerprint"] == fingerprint:
            return pd.DataFrame(stored["timing"])
    df = time_epochs(data, configs, epochs=epochs, repeats=repeats, threads=threads)
    meta = {"what": "seconds per training epoch over all samples (median of the rounds)",
            "configs": {k: c.to_dict() for k, c in configs.items()},
            "data_fingerprint": fingerprint, "epochs": epochs, "repeats": repeats,
            "threads": threads, **provenance(torch.device("cpu"), dirty=False),
            "timing": df.to_dict(orient="records")}
    write_json(Path(out_dir or results_dir) / "timing" / path.name, meta)
    return df


def layers_costs(timing: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Table 5's cost rows: parameters and training time, the paper's beside ours.

    Parameters are counted for the paper profile (the paper's column is close to float32 MiB, 0.4-0.6 % off,
    rather than a count) and for ``profile``; times are relative to the paper's default
    (2, 2, 8), the only comparison that survives a change of machine.
    """
    ab = ABLATIONS["layers"]
    sec = timing.set_index("config")["seconds per epoch"]
    ref = f"paper {ab.label(ab.paper_default)}"
    paper_ref = paper.TABLE5_SECONDS[ab.paper_default]
    rows = []
    for v in ab.values:
        n = parameter_count(ab.config(v, "paper"))
        row = {ab.setting: ab.label(v),
               "paper: params column (Table 5)": paper.TABLE5_PARAMS[v],
               "paper profile: params (M)": n / 1e6,
               "paper profile: float32 MiB": n * 4 / 2**20,
               f"{profile} setting": describe(ab.config(v, profile), "layers"),
               f"{profile}: params": parameter_count(ab.config(v, profile)),
               "paper: training time (s, Table 5)": paper.TABLE5_SECONDS[v],
               "paper: time / time of (2, 2, 8)": paper.TABLE5_SECONDS[v] / paper_ref}
        key = f"paper {ab.label(v)}"
        if key in sec and ref in sec:
            row["paper profile here: s per epoch"] = sec[key]
            row["paper profile here: time / time of (2, 2, 8)"] = sec[key] / sec[ref]
        key = f"{profile} {ab.label(v)}"
        own = [f"{profile} {ab.label(u)}" for u in ab.values
               if ab.config(u, profile) == profile_config(profile)]
        if key in sec:
            row[f"{profile} here: s per epoch"] = sec[key]
            if own and own[0] in sec:
                row[f"{profile} here: time / time of its default"] = sec[key] / sec[own[0]]
        rows.append(row)
    return pd.DataFrame(rows)



def cost_growth(costs: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Table 5's growth (section 4.4.4): each cost at the deepest grid point over the shallowest,
    the paper's beside ours, as a table."""
    first, last = costs.iloc[0], costs.iloc[-1]
    cols = {"paper profile parameters": "paper profile: params (M)",
            "paper's training time (Table 5)": "paper: training time (s, Table 5)",
            "paper profile here, time per epoch": "paper profile here: s per epoch",
            f"{profile} here, time per epoch": f"{profile} here: s per epoch"}
    setting = costs.columns[0]
    rows = [{"cost": name, "from": first[setting], "to": last[setting],
             "growth (x)": round(float(last[c] / first[c]), 2)}
            for name, c in cols.items() if c in costs]
    return pd.DataFrame(rows)
