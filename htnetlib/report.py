"""Tables of stored runs beside the paper's values (Table 2), and figure/table provenance."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics, paper, train
from .data import DATASET_NAMES
from .train import Run

# The measured rows of Table 2: (model, changes to the profile's configuration).
VARIANTS = {
    "HTNet": ("htnet", {}),
    "HTNet without regions (whole map)": ("htnet", {"regions": "whole"}),
    "STSTNet": ("ststnet", {}),
    "Logistic regression": ("logreg", {}),
}


def check_parameters(profile: str, *, seeds=None, seed=None) -> None:
    """Check a notebook's papermill parameters: a known profile, whole-number seeds.

    Raises :class:`htnetlib.config.ConfigError` with one line naming the value and the choices.
    """
    from .config import PROFILES, ConfigError, check_seed

    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r} is not a profile; choose one of "
                          f"{', '.join(sorted(PROFILES))}")
    if seed is not None:
        check_seed(seed)
    if seeds is not None:
        if isinstance(seeds, (str, bytes, int)) or not list(seeds):
            raise ConfigError(f"seeds={seeds!r} must be a non-empty list of whole numbers")
        for s in seeds:
            check_seed(s)


def profile_note(profiles=("cpu", "paper")) -> str:
    """Markdown for the top of a notebook with measured numbers: which model each profile is."""
    from .ablation import parameter_count
    from .config import PROFILES

    def size(n: int) -> str:
        return f"{n / 1e6:.0f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"

    what = {"paper": "the paper's own HTNet, trained on a GPU",
            "cpu": "the same architecture scaled down to train all 68 folds on two CPU cores",
            "smoke": "a tiny model on a few folds, for tests only"}
    lines = ["**Which model made each row.** Every measured row is labelled with its profile:"]
    for p in profiles:
        c = PROFILES[p]
        lines.append(f"* `{p}`: {what[p]}: dim {c.dim}, {c.heads} head(s), layers "
                     f"{tuple(c.block_repeats)}, {size(parameter_count(c))} parameters, "
                     f"{c.epochs} epochs at learning rate {c.lr:g}.")
    return "\n".join(lines)


def scores_row(row: dict, scores: dict) -> dict:
    """``row`` with UF1 and UAR columns per group from ``{group: {uf1, uar}}`` (NaN if absent)."""
    for g in metrics.GROUPS:
        f1, ar = (scores[g]["uf1"], scores[g]["uar"]) if g in scores else (float("nan"),) * 2
        row[f"{DATASET_NAMES[g]} UF1"], row[f"{DATASET_NAMES[g]} UAR"] = f1, ar
    return row


def table2_rows(run: Run) -> pd.DataFrame:
    """One row per protocol of ``run`` plus the paper's HTNet row: UF1 and UAR per group."""
    name = {"htnet": "HTNet"}.get(run.meta["config"]["model"], run.meta["config"]["model"])
    rows = [scores_row({"approach": f"{name} ({run.meta.get('profile')} profile, "
                                     f"seed {run.meta['seed']})",
                         "protocol": proto, "source": "measured"}, run.metrics[proto])
            for proto in metrics.PROTOCOLS]
    cited = {"approach": "HTNet (paper, Table 2)", "protocol": "oracle", "source": "cited"}
    rows.append(scores_row(cited, {g: {"uf1": f1, "uar": ar}
                                    for g, (f1, ar) in paper.TABLE2["HTNet"].items()}))
    return pd.DataFrame(rows)


def seed_statistic(runs: list[Run], protocol: str, stat=np.mean) -> dict:
    """``{group: {uf1, uar}}``: ``stat`` over the runs (seeds) of each score of ``protocol``."""
    return {g: {m: float(stat([r.metrics[protocol][g][m] for r in runs])) for m in ("uf1", "uar")}
            for g in runs[0].metrics[protocol]}


def variant_config(name: str, profile: str) -> train.Config:
    model, changes = VARIANTS[name]
    return dataclasses.replace(train.profile_config(profile, model), **changes)


def variant_runs(data, profile: str, seeds, *, runs_dir, retrain: bool = False, workers: int = 1,
                 names=None) -> dict[str, list[Run]]:
    """Every variant's runs for ``seeds``, read back or trained where missing.

    Logistic regression is deterministic and fitted once (seed 0).
    """
    out = {}
    for name in names or VARIANTS:
        cfg = variant_config(name, profile)
        out[name] = [train.load_run(train.run_loso(
            data, cfg, seed=s, runs_dir=runs_dir, profile=profile, retrain=retrain,
            workers=workers, progress=False)) for s in ([0] if cfg.model == "logreg" else seeds)]
    return out


def stored_run(data, config: train.Config, seed: int, profile: str, runs_dir,
               fingerprint: str | None = None) -> Run | None:
    """The finished run of ``config`` and ``seed`` under ``runs_dir``, or None; never trains
    (``fingerprint``: :func:`train.data_fingerprint` of ``data``, if already computed)."""
    rid = train.run_id(config, seed, fingerprint or train.data_fingerprint(data), profile)
    path = Path(runs_dir) / rid
    return train.load_run(path) if train.is_complete(path) else None


def other_profiles(profile: str) -> list[str]:
    """The measured profiles shown beside ``profile``'s rows where their runs are stored: the
    ``cpu`` rows beside the ``paper`` rows and the other way round (none beside ``smoke``)."""
    return [p for p in ("cpu", "paper") if p != profile] if profile in ("cpu", "paper") else []


def stored_variant_runs(data, profile: str, seeds, *, runs_dir, names=None
                        ) -> dict[str, list[Run]]:
    """Like :func:`variant_runs`, but only the runs already stored: a variant without any
    stored seed is left out. For the profiles of :func:`other_profiles`, never trained here."""
    fingerprint = train.data_fingerprint(data)
    out = {}
    for name in names or VARIANTS:
        cfg = variant_config(name, profile)
        found = [stored_run(data, cfg, s, profile, runs_dir, fingerprint)
                 for s in ([0] if cfg.model == "logreg" else seeds)]
        found = [r for r in found if r is not None]
        if found:
            out[name] = found
    return out


def table2_full(runs: dict[str, list[Run]], *, n_boot: int = 1000,
                others: dict[str, dict[str, list[Run]]] | None = None) -> pd.DataFrame:
    """The whole Table 2: every cited row of the paper and our measured rows.

    Measured rows give the mean over seeds per group, the spread (sd over seeds) of the
    composite UF1, and 95 % subject-bootstrap intervals of the seed-averaged composite scores.
    ``others`` maps another profile to its stored runs (:func:`stored_variant_runs`); their
    rows follow each approach's rows, labelled with their profile and seed count.
    """
    rows = []
    for name, scores in paper.TABLE2.items():
        row = {"approach": name, "source": "cited (paper, Table 2)",
               "protocol": "oracle" if name == "HTNet" else "as published", "profile": "-",
               "seeds": "-"}
        rows.append(scores_row(row, {g: {"uf1": f, "uar": a} for g, (f, a) in scores.items()}))
    groups = [(name, rs) for key, base in runs.items()
              for name, rs in [(key, base)] + [(key, o[key]) for o in (others or {}).values()
                                               if key in o]]
    for name, rs in groups:
        protocols = ("honest",) if rs[0].meta["config"]["model"] == "logreg" else metrics.PROTOCOLS
        for proto in protocols:
            row = {"approach": name, "source": "measured", "protocol": proto,
                   "profile": rs[0].meta.get("profile"), "seeds": len(rs)}
            scores_row(row, seed_statistic(rs, proto))
            f1 = [r.metrics[proto]["full"]["uf1"] for r in rs]
            row["Full UF1 sd"] = float(np.std(f1, ddof=1)) if len(rs) > 1 else float("nan")
            ci = metrics.bootstrap_ci([r.predictions for r in rs], proto, n_boot=n_boot)
            row["Full UF1 95% CI"] = "%.3f-%.3f" % ci["uf1"]
            row["Full UAR 95% CI"] = "%.3f-%.3f" % ci["uar"]
            rows.append(row)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured markdown table with floats rounded."""
    cols = list(df.columns)
    fmt = lambda v: f"{v:.{digits}f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def provenance(item: str, *, profile: str | None = None, protocol: str | None = None,
               device: str | None = None) -> str:
    """The line every committed figure and table carries: what it reproduces and how."""
    parts = [f"Reproduces {item}"]
    if profile:
        parts.append(f"profile {profile}")
    if protocol:
        parts.append(f"protocol {protocol}")
    if device:
        parts.append(f"device {device}")
    return "; ".join(parts)


def save_figure(fig, name: str, results_dir, **prov) -> Path:
    """Write ``<results_dir>/figures/<name>.png`` at 150 dpi with its provenance line."""
    from .train import atomic_write

    fig.text(0.005, 0.005, provenance(**prov), fontsize=6.5, color="0.35", ha="left", va="bottom")
    path = Path(results_dir) / "figures" / f"{name}.png"
    atomic_write(path, lambda p: fig.savefig(p, dpi=150, bbox_inches="tight", format="png",
                                             metadata={"Software": None}))
    return path


def save_table(df: pd.DataFrame, name: str, results_dir, **prov) -> Path:
    """Write ``<results_dir>/tables/<name>.csv`` and ``.md`` (the latter with its provenance)."""
    from .train import atomic_write

    base = Path(results_dir) / "tables" / name
    atomic_write(base.with_suffix(".csv"), lambda p: df.to_csv(p, index=False))
    text = f"{provenance(**prov)}\n\n{markdown(df)}"
    atomic_write(base.with_suffix(".md"), lambda p: p.write_text(text))
    return base.with_suffix(".md")


def save_findings(text: str, name: str, results_dir) -> Path:
    """Write a notebook's computed "What we found" text to ``<results_dir>/findings/<name>.md``
    (the README quotes these files, so its prose is the notebooks' own numbers)."""
    from .train import atomic_write

    path = Path(results_dir) / "findings" / f"{name}.md"
    atomic_write(path, lambda p: p.write_text(text.strip() + "\n"))
    return path


def map_scale(flow_field: np.ndarray, size: int = 28) -> pd.DataFrame:
    """How to read the (u, v, strain) map that :func:`htnetlib.flow.flow_to_map` makes of a flow.

    Each channel is resized to ``size`` x ``size`` and min-max stretched to 0..255 on its own,
    so a map value has no fixed meaning: per channel, the 28x28 channel's smallest and largest
    value (px for u and v; strain is dimensionless, px of displacement per px), the size of one
    grey level in those units, and the map value where zero (no motion, no strain) lands
    (below 0 or above 255 where zero lies outside the channel's range).
    """
    import cv2

    from .flow import optical_strain

    field = np.asarray(flow_field, dtype=np.float32)
    channels = {"u (px)": field[..., 0], "v (px)": field[..., 1],
                "strain (px/px)": optical_strain(field)}
    rows = []
    for name, channel in channels.items():
        small = cv2.resize(np.ascontiguousarray(channel), (size, size),
                           interpolation=cv2.INTER_AREA)
        lo, hi = float(small.min()), float(small.max())
        span = hi - lo
        rows.append({"channel": name, "min": lo, "max": hi,
                     "per grey level": span / 255 if span > 0 else float("nan"),
                     "zero lands at": 255 * (0.0 - lo) / span if span > 0 else float("nan")})
    return pd.DataFrame(rows).set_index("channel")


def halving_trace(differences) -> list[tuple[int, int]]:
    """The intervals [lo, hi) that :func:`htnetlib.flow.divide_and_conquer` (two parts) keeps,
    from frames 1..n-1 down to one frame: the same rule (the half with the greater mean
    difference, ties to the earlier half), step by step, for drawing the search."""
    diffs = np.asarray(differences, dtype=np.float64)
    lo, hi = 1, len(diffs)
    trace = [(lo, hi)]
    while hi - lo > 1:
        mid = int(np.linspace(lo, hi, 3).round().astype(int)[1])
        lo, hi = (lo, mid) if diffs[lo:mid].mean() >= diffs[mid:hi].mean() else (mid, hi)
        trace.append((lo, hi))
    return trace


def draw_architecture(config, *, title: str | None = None):
    """HTNet as boxes, from the model's own shapes (:func:`htnetlib.model.architecture`): the
    four-region input, the patch grid, each level's blocks of one token with width, heads and
    layers, the aggregation steps and the head (the counterpart of the paper's Figures 2-4)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    from .model import architecture, build_model

    with torch_meta():
        model = build_model(config)
    levels = architecture(model, config.image_size)
    grid = config.image_size // config.patch_size
    fig, ax = plt.subplots(figsize=(13, 4.4))
    ax.set(xlim=(0, 13), ylim=(0, 4.4), aspect="equal")
    ax.axis("off")
    # the input: four regions of the mosaic, cut into a grid of patches
    names = ("left eye", "right eye", "left mouth", "right mouth")
    colours = region_colours()
    for k, name in enumerate(names):
        r, c = divmod(k, 2)
        ax.add_patch(Rectangle((0.2 + c, 2.2 - r), 1, 1, color=colours[name], alpha=0.45))
        ax.text(0.7 + c, 2.7 - r, name, ha="center", va="center", fontsize=7)
    for i in range(grid + 1):
        ax.plot([0.2, 2.2], [1.2 + 2 * i / grid] * 2, color="0.3", lw=0.6)
        ax.plot([0.2 + 2 * i / grid] * 2, [1.2, 3.2], color="0.3", lw=0.6)
    ax.text(1.2, 3.5, f"input {config.image_size}x{config.image_size}x3 (u, v, strain)\n"
            f"four {config.image_size // 2}x{config.image_size // 2} regions",
            ha="center", fontsize=8)
    ax.text(1.2, 0.8, f"{grid}x{grid} patches of {config.patch_size}x{config.patch_size}\n"
            f"-> {grid * grid} tokens of width {config.dim}", ha="center", va="top", fontsize=8)
    x0 = 3.0
    for i, lv in enumerate(levels):
        n = int(lv["blocks"].split("x")[0])
        size = 1.6
        for a in range(n):
            for b in range(n):
                ax.add_patch(Rectangle((x0 + b * size / n, 1.3 + (n - 1 - a) * size / n),
                                       size / n, size / n, fill=False, lw=1))
                ax.plot(x0 + (b + 0.5) * size / n, 1.3 + (n - 1 - a + 0.5) * size / n, "o",
                        ms=3, color="tab:purple")
        ax.text(x0 + size / 2, 3.15, f"level {i + 1}: {lv['blocks']} blocks,\n"
                f"{lv['tokens per block']} token each", ha="center", fontsize=8)
        ax.text(x0 + size / 2, 1.15, f"width {lv['width']}, {lv['layers']} layer(s)\n"
                f"{lv['heads']} heads x {lv['head width']} = {lv['attention width']}\n"
                f"q, k, v: {lv['q, k, v channels']} channels", ha="center", va="top",
                fontsize=7.5)
        nxt = x0 + size + 0.9
        if "none" not in lv["aggregation"]:
            ax.add_patch(FancyArrowPatch((x0 + size + 0.05, 2.1), (nxt - 0.05, 2.1),
                                         arrowstyle="->", mutation_scale=12))
            ax.text((x0 + size + nxt) / 2, 2.25, "aggregate\n3x3 conv, LN,\nmax-pool /2",
                    ha="center", fontsize=6.5)
        x0 = nxt
    ax.add_patch(FancyArrowPatch((x0 - 0.85, 2.1), (x0 - 0.05, 2.1), arrowstyle="->",
                                 mutation_scale=12))
    ax.text(x0 + 0.6, 2.1, f"head\nLayerNorm\nmean\nlinear -> 3\n(neg, pos, surp)",
            ha="center", va="center", fontsize=8,
            bbox=dict(boxstyle="round", fc="0.95", ec="0.5"))
    ax.set_title(title or "HTNet, drawn from the model's own shapes", fontsize=10)
    return fig


def region_colours() -> dict:
    """One colour per facial region, shared by every figure that shows the regions."""
    return {"left eye": "tab:blue", "right eye": "tab:orange", "left mouth": "tab:green",
            "right mouth": "tab:red"}


def torch_meta():
    """A context in which new tensors (and so models) live on the meta device: shapes only."""
    import torch

    return torch.device("meta")
