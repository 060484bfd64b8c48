"""Figures, tables and findings as committed files, with the provenance line each carries; and
the drawings that several notebooks share (HTNet's architecture, the region colours)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import ROOT, atomic_write
from ..training.store import SMOKE_RESULTS
from .tables import loose_lists, markdown

RESULTS_ENV = "HTNET_RESULTS_DIR"  # where a test session sends every output instead


def stored_dir(value) -> Path:
    """Where a notebook reads stored results (runs, leave-one-dataset-out results, timings):
    its ``results_dir`` parameter, resolved against the repository root when relative."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else ROOT / path


SMOKE_OUTPUTS = SMOKE_RESULTS  # git-ignored; smoke runs go there too (training.store.smoke_folder)


def results_dir(value, profile: str | None = None) -> Path:
    """Where a notebook writes its figures, tables, findings and timings: ``$HTNET_RESULTS_DIR``
    when set (a test session's temporary folder), else :func:`stored_dir` of ``value``; a
    ``smoke`` run aimed at the repository's own ``results/`` writes to the git-ignored
    :data:`SMOKE_OUTPUTS` instead, so a smoke run never overwrites a committed file."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    path = stored_dir(value)
    if profile == "smoke" and path.resolve() == (ROOT / "results").resolve():
        return SMOKE_OUTPUTS
    return path


def quantized(values, step: float) -> np.ndarray:
    """``values`` rounded to multiples of ``step`` before they are drawn, so that a figure's
    pixels do not follow float noise (README, "Same bytes on every machine")."""
    return np.round(np.asarray(values, dtype=np.float64) / step) * step


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

    fig.text(0.005, 0.005, provenance(**prov), fontsize=8, color="0.35", ha="left", va="bottom")
    path = Path(results_dir) / "figures" / f"{name}.png"
    atomic_write(path, lambda p: fig.savefig(p, dpi=150, bbox_inches="tight", format="png",
                                             metadata={"Software": None}))
    return path


def save_table(df: pd.DataFrame, name: str, results_dir, **prov) -> Path:
    """Write ``<results_dir>/tables/<name>.csv`` and ``.md`` (the latter with its provenance)."""

    base = Path(results_dir) / "tables" / name
    atomic_write(base.with_suffix(".csv"), lambda p: df.to_csv(p, index=False))
    text = f"{provenance(**prov)}\n\n{markdown(df)}"
    atomic_write(base.with_suffix(".md"), lambda p: p.write_text(text))
    return base.with_suffix(".md")


def save_findings(text: str, name: str, results_dir) -> Path:
    """Write a notebook's computed "What we found" text to ``<results_dir>/findings/<name>.md``
    (the README quotes these files, so its prose is the notebooks' own numbers), its list items
    separated by blank lines (:func:`~htnetlib.study.tables.loose_lists`)."""
    path = Path(results_dir) / "findings" / f"{name}.md"
    atomic_write(path, lambda p: p.write_text(loose_lists(text.strip()) + "\n"))
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

    from ..data.flow import optical_strain

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

    from ..model import architecture, build_model

    with torch_meta():
        model = build_model(config)
    levels = architecture(model, config.image_size)
    grid = config.image_size // config.patch_size
    fig, ax = plt.subplots(figsize=(14, 4.4))
    ax.set(xlim=(0, 14), ylim=(0, 4.4), aspect="equal")
    ax.axis("off")
    # the input: four regions of the mosaic, cut into a grid of patches
    names = ("left eye", "right eye", "mouth left", "mouth right")
    colours = region_colours()
    for k, name in enumerate(names):
        r, c = divmod(k, 2)
        ax.add_patch(Rectangle((0.2 + c, 2.2 - r), 1, 1, color=colours[name], alpha=0.45))
    for i in range(grid + 1):  # the patch grid, drawn under the region labels
        ax.plot([0.2, 2.2], [1.2 + 2 * i / grid] * 2, color="0.3", lw=0.6, zorder=1)
        ax.plot([0.2 + 2 * i / grid] * 2, [1.2, 3.2], color="0.3", lw=0.6, zorder=1)
    for k, name in enumerate(names):
        r, c = divmod(k, 2)
        ax.text(0.7 + c, 2.7 - r, name.replace(" ", "\n"), ha="center", va="center", fontsize=8,
                zorder=3, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    ax.text(1.2, 3.5, f"input {config.image_size}x{config.image_size}x3 (strain, v, u)\n"
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
        nxt = x0 + size + 1.2
        if "none" not in lv["aggregation"]:
            ax.add_patch(FancyArrowPatch((x0 + size + 0.05, 2.1), (nxt - 0.05, 2.1),
                                         arrowstyle="->", mutation_scale=12))
            ax.text((x0 + size + nxt) / 2, 2.25, "aggregate\n3x3 conv, LN,\nmax-pool /2",
                    ha="center", fontsize=8)
        x0 = nxt
    ax.add_patch(FancyArrowPatch((x0 - 1.15, 2.1), (x0 - 0.05, 2.1), arrowstyle="->",
                                 mutation_scale=12))
    ax.text(x0 + 0.6, 2.1, "head\nLayerNorm\nmean\nlinear -> 3\n(neg, pos, surp)",
            ha="center", va="center", fontsize=8,
            bbox=dict(boxstyle="round", fc="0.95", ec="0.5"))
    ax.set_title(title or "HTNet, drawn from the model's own shapes", fontsize=10)
    return fig


def region_colours() -> dict:
    """One colour per facial region, shared by every figure that shows the regions."""
    return {"left eye": "tab:blue", "right eye": "tab:orange", "mouth left": "tab:green",
            "mouth right": "tab:red"}


def torch_meta():
    """A context in which new tensors (and so models) live on the meta device: shapes only."""
    import torch

    return torch.device("meta")

