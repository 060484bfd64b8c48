"""Notebook 13, leave one dataset out (beyond the paper): the training sets, the stored
results beside each model's LOSO runs, the figure, the per-class recall and the findings."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data import DATASET_NAMES
from ..evaluation import metrics
from ..training import lodo as lodo_mod
from ..training.store import Run
from .experiments import LODO_MODELS, lodo_config
from .tables import bullets, stored_run

POOLED = "all three (pooled)"
CLASSES = ("negative", "positive", "surprise")


def held_out(data) -> list[str]:
    """The release's datasets that can be held out, in order (their display names)."""
    present = set(data.table["dataset"])
    return [DATASET_NAMES[d] for d in lodo_mod.LODO_DATASETS if d in present]


def training_sets(data) -> pd.DataFrame:
    """Per held-out dataset: the training and test samples, subjects and test classes."""
    t = data.table
    rows = []
    for d in lodo_mod.LODO_DATASETS:
        if d not in set(t["dataset"]):
            continue
        train_part, test_part = t[t["dataset"] != d], t[t["dataset"] == d]
        rows.append({"held out": DATASET_NAMES[d], "training samples": len(train_part),
                     "training subjects": train_part["subject"].nunique(),
                     "test samples": len(test_part),
                     "test subjects": test_part["subject"].nunique(),
                     **{f"test {n}": int((test_part["label"] == k).sum())
                        for k, n in enumerate(CLASSES)}})
    return pd.DataFrame(rows)


def lodo_runs(data, profile: str, seeds, *, store_dir, runs_dir, retrain: bool = False,
              workers: int = 1) -> tuple[dict[str, list[dict]], dict[str, list[Run]]]:
    """``(lodo, loso)``: every model's LODO results and its stored LOSO runs."""
    lodo, loso = {}, {}
    for name, (model, _) in LODO_MODELS.items():
        cfg = lodo_config(name, profile)
        model_seeds = [seeds[0]] if model == "logreg" else list(seeds)
        lodo[name] = [lodo_mod.load_lodo(lodo_mod.run_lodo(
            data, cfg, seed=s, store_dir=store_dir, profile=profile, workers=workers,
            retrain=retrain)) for s in model_seeds]
        found = [stored_run(data, cfg, s, profile, runs_dir) for s in model_seeds]
        loso[name] = [r for r in found if r is not None]
    return lodo, loso


def results_table(lodo: dict[str, list[dict]], loso: dict[str, list[Run]]) -> pd.DataFrame:
    """Each leave-one-dataset-out result with its training time and the LOSO runs beside it."""
    return pd.DataFrame([{"model": name, "seed": r["meta"]["seed"], "result": r["path"].name,
                          "training (CPU min)": r["meta"]["train_seconds"] / 60,
                          "LOSO runs beside it": ", ".join(x.meta["run_id"] for x in loso[name])
                          or "none stored"}
                         for name, rs in lodo.items() for r in rs])


def cross_dataset_figure(table: pd.DataFrame, held: list[str], names: list[str]):
    """UF1 per held-out dataset and model: trained on the other two against LOSO (honest)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(held), figsize=(3.6 * len(held), 3.4), sharey=True,
                             squeeze=False)
    for ax, d in zip(axes[0], held):
        part = table[table["tested on"] == d].set_index("model").reindex(names)
        x = np.arange(len(names))
        ax.bar(x - 0.2, part["LOSO honest UF1"], 0.4, label="LOSO within the composite (honest)",
               color="0.7")
        lo_hi = part["LODO UF1 95% CI"].str.split("-", expand=True).astype(float)
        ax.bar(x + 0.2, part["LODO UF1"], 0.4, label="trained on the other two datasets",
               color="C0", yerr=[part["LODO UF1"] - lo_hi[0], lo_hi[1] - part["LODO UF1"]],
               capsize=3, error_kw=dict(lw=1, ecolor="0.2"))
        ax.axhline(1 / 3, color="k", lw=0.8, ls=":", label="chance (UF1 1/3, three classes)")
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set(title=f"tested on {d}")
    axes[0][0].set_ylabel("UF1 (final epoch)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=9, loc="upper center", ncol=3, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("error bars: 95 % subject-bootstrap interval of the leave-one-dataset-out UF1",
                 fontsize=9, y=0.91)
    fig.tight_layout(rect=(0, 0.02, 1, 0.9))
    return fig


def class_recall(data, lodo: dict[str, list[dict]], loso: dict[str, list[Run]],
                 names=("HTNet", "STSTNet")) -> pd.DataFrame:
    """Recall per class and held-out dataset, LODO against LOSO (mean over seeds)."""
    rows = []
    for name in names:
        for d in [d for d in lodo_mod.LODO_DATASETS if d in set(data.table["dataset"])]:
            for source, tables in (("LODO", [r["predictions"] for r in lodo[name]]),
                                   ("LOSO", [r.predictions for r in loso[name]])):
                parts = [t[t["dataset"] == d] for t in tables]
                if not parts or any(len(p_) != (data.table["dataset"] == d).sum()
                                    for p_ in parts):
                    continue
                cm = np.mean([metrics.confusion(p_["label"], p_["honest"], normalize="true")
                              for p_ in parts], axis=0)
                rows.append({"model": name, "tested on": DATASET_NAMES[d], "protocol": source,
                             **{f"recall {n}": cm[k, k] for k, n in enumerate(CLASSES)}})
    return pd.DataFrame(rows)


def pooled_pairs(lodo: dict[str, list[dict]], n_boot: int = 1000) -> pd.DataFrame:
    """Leave one dataset out, pooled over the held-out datasets: the highest-scoring model
    against each other one, paired bootstrap over subjects (seed-averaged), section 4.3's unit."""
    pooled = {name: [r["predictions"] for r in rs] for name, rs in lodo.items()}
    f1 = {name: float(np.mean([metrics.uf1(t["label"], t["honest"]) for t in ts]))
          for name, ts in pooled.items()}
    top = max(f1, key=f1.get)
    rows = []
    for name in sorted((n for n in f1 if n != top), key=f1.get, reverse=True):
        res = metrics.paired_bootstrap(pooled[top], "honest", pooled[name], "honest",
                                       n_boot=n_boot)
        rows.append({"a (highest)": top, "b": name, "UF1 a - b": res["diff"],
                     "95% CI": "%+.3f to %+.3f" % res["ci"],
                     "told apart": res["ci"][0] > 0 or res["ci"][1] < 0,
                     "P(diff <= 0)": res["p_le_zero"]})
    return pd.DataFrame(rows)


def findings_13(table: pd.DataFrame, lodo: dict[str, list[dict]], held: list[str],
                profile: str, pairs: pd.DataFrame | None = None) -> str:
    """Notebook 13's "What we found" bullets (leave one dataset out, beyond the paper)."""
    def at(name, d, col):
        sel = table[(table["model"] == name) & (table["tested on"] == d)]
        return float(sel[col].iloc[0]) if len(sel) else float("nan")

    parts = []
    for name in lodo:
        per = ", ".join(f"{d} {at(name, d, 'LODO UF1'):.3f}" for d in held)
        loso_part = (" (LOSO within the composite: "
                     + ", ".join(f"{at(name, d, 'LOSO honest UF1'):.3f}" for d in held) + ")"
                     if not np.isnan(at(name, held[0], "LOSO honest UF1")) else "")
        parts.append(f"**{name}** {per}{loso_part}")
    drops = table[(table["tested on"] != POOLED) & table["LODO - LOSO UF1"].notna()]
    lower = int((drops["difference 95% CI"].str.split(" to ").str[1].astype(float) < 0).sum())
    best = table[table["tested on"] == POOLED].set_index("model")["LODO UF1"]
    return bullets(
        f"Trained on two datasets, tested on the third ({profile} profile, final epoch, no "
        "selection); UF1 per held-out dataset:",
        [f"{p}." for p in parts],
        f"Of the {len(drops)} model and dataset pairs with a LOSO run beside them, {lower} "
        "lose UF1 against LOSO with a paired 95 % interval below 0.",
        f"Pooled over the three held-out datasets, UF1 runs from {best.min():.3f} "
        f"({best.idxmin()}) to {best.max():.3f} ({best.idxmax()}).",
        "" if pairs is None or pairs.empty else
        f"The paired bootstrap tells {pairs['a (highest)'].iloc[0]} apart from "
        f"{int(pairs['told apart'].sum())} of the {len(pairs)} other models ("
        + "; ".join(f"against {b} {d:+.3f}, 95 % CI {ci}" for b, d, ci in
                    zip(pairs["b"], pairs["UF1 a - b"], pairs["95% CI"]))
        + "); rows it does not tell apart are not ranked.",
        "Cost on this machine: "
        + ", ".join(f"{name} {sum(r['meta']['train_seconds'] for r in rs) / 60:.1f}"
                    for name, rs in lodo.items())
        + " CPU-minutes of training for all its seeds and held-out datasets.")
