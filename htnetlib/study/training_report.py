"""The LOSO notebooks 04, 05, 10 and 11: training curves, the profiles side by side, Table 2's
comparisons, Figure 7's confusion matrices, Table 3 and the protocol audit, as figures, tables
and findings (paper sections 4.2-4.3, Tables 2-3, Figure 7)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import paper
from ..config import PROFILES
from ..data import DATASET_NAMES, LABELS
from ..evaluation import metrics
from ..training.store import Run
from .tables import bullets, other_profiles, stored_run

CLASS_NAMES = [LABELS[k] for k in (0, 1, 2)]


# --- notebook 04: LOSO training -------------------------------------------------------------

def uf1_by_epoch(run: Run) -> np.ndarray:
    """Composite UF1 had every fold stopped at each epoch (section 4.2's stopping point)."""
    return np.array([metrics.uf1(run.predictions["label"], row) for row in run.epochs["pred"]])


def training_curves_figure(run: Run, profile: str):
    """Loss, accuracy and UF1 by stopping epoch of one LOSO run, averaged over folds (4.2)."""
    import matplotlib.pyplot as plt

    ep = run.epochs["epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title, ylabel in [
            (axes[0], "train_loss", "training loss", "cross-entropy (mean over folds)"),
            (axes[1], "train_acc", "accuracy", "fraction correct (mean over folds)")]:
        m, s = run.epochs[key].mean(0), run.epochs[key].std(0)
        ax.plot(ep, m, label="train")
        ax.fill_between(ep, m - s, m + s, alpha=0.2)
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    axes[1].plot(ep, run.epochs["test_acc"].mean(0), label="held-out subject")
    axes[1].legend()
    axes[2].plot(ep, uf1_by_epoch(run), label="all folds stopped at epoch e")
    axes[2].axhline(run.metrics["oracle"]["full"]["uf1"], color="C3", ls="--",
                    label="oracle (best epoch per subject)")
    axes[2].set(xlabel="epoch", ylabel="composite UF1", title="UF1 by stopping epoch")
    axes[2].legend()
    fig.suptitle(f"LOSO training, {profile} profile, {run.meta['n_folds']} folds")
    fig.tight_layout()
    return fig


def profile_runs(data, run: Run, profile: str, seed: int,
                 runs_dir) -> tuple[dict[str, Run], list[str]]:
    """``(runs, notes)``: each profile's run of ``seed`` where stored (section 4.2's LOSO)."""
    shown, notes = {profile: run}, []
    for other in other_profiles(profile):
        found = stored_run(data, PROFILES[other], seed, other, runs_dir)
        if found is None:
            notes.append(f"{other} profile: no stored run of seed {seed}")
        else:
            shown[other] = found
    return shown, notes


def profiles_table(shown: dict[str, Run]) -> pd.DataFrame:
    """Composite UF1 and UAR under both protocols of each profile's run (section 4.2)."""
    rows = []
    for name, r in shown.items():
        c = r.meta["config"]
        for proto in metrics.PROTOCOLS:
            s = r.metrics[proto]["full"]
            rows.append({"profile": name, "seed": r.meta["seed"], "epochs": r.meta["epochs"],
                         "layers": tuple(c["block_repeats"]), "dim": c["dim"],
                         "protocol": proto, "device": r.meta["device"], "Full UF1": s["uf1"],
                         "Full UAR": s["uar"]})
    return pd.DataFrame(rows)


def profiles_figure(shown: dict[str, Run]):
    """UF1 by stopping point of each profile's run beside its oracle (section 4.2)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, r in shown.items():
        frac = r.epochs["epoch"] / r.epochs["epoch"][-1]
        line, = ax.plot(frac, uf1_by_epoch(r),
                        label=f"{name} profile: all folds stopped there (honest at 1.0)")
        ax.axhline(r.metrics["oracle"]["full"]["uf1"], color=line.get_color(), ls="--",
                   label=f"{name} profile: oracle (best epoch per subject)")
    ax.set(xlabel="fraction of the profile's epochs", ylabel="composite UF1",
           title="UF1 by stopping point, each profile")
    ax.legend(fontsize=7.5)
    fig.tight_layout()
    return fig


# --- notebook 05: Table 2 and Figure 7 ------------------------------------------------------

PAIRS = [("HTNet", "STSTNet"), ("HTNet", "HTNet without regions (whole map)"),
         ("HTNet", "Logistic regression"), ("STSTNet", "Logistic regression")]


def paired_table(runs: dict[str, list[Run]], n_boot: int = 1000) -> pd.DataFrame:
    """Paired subject-bootstrap differences of honest UF1 between Table 2's measured rows."""
    preds = {name: [r.predictions for r in rs] for name, rs in runs.items()}
    rows = []
    for a, b in PAIRS:
        res = metrics.paired_bootstrap(preds[a], "honest", preds[b], "honest", n_boot=n_boot)
        rows.append({"a": a, "b": b, "honest UF1, a - b": res["diff"], "CI low": res["ci"][0],
                     "CI high": res["ci"][1], "P(diff <= 0)": res["p_le_zero"]})
    return pd.DataFrame(rows)


def confusion_tables(p: pd.DataFrame) -> pd.DataFrame:
    """Figure 7's composite confusion counts per protocol as one labelled table (section 4.3):
    rows the true class, columns the predicted class."""
    return pd.concat({proto: pd.DataFrame(
        metrics.confusion(p["label"], p[proto]),
        index=pd.Index(CLASS_NAMES, name="true"),
        columns=pd.Index([f"predicted {c}" for c in CLASS_NAMES])) for proto in metrics.PROTOCOLS},
        names=["protocol"])


def bootstrap_samples(tables, column: str, *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Composite UF1 of each subject-resampled benchmark (section 4.3's LOSO unit is the subject),
    averaged over the seeds' tables; the draws of :func:`metrics.bootstrap_ci` with that seed."""
    tables = tables if isinstance(tables, list) else [tables]
    base, preds = metrics.align(tables, [column] * len(tables))
    subjects, y = base["subject"].to_numpy(), base["label"].to_numpy()
    ids = pd.unique(subjects)
    rows = {s: np.flatnonzero(subjects == s) for s in ids}
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rows[ids[k]] for k in rng.choice(len(ids), size=len(ids))])
        out[b] = np.mean([metrics.uf1(y[idx], p[idx]) for p in preds])
    return out


def bootstrap_figure(runs: dict[str, list[Run]], a: str, b: str, n_boot: int = 1000):
    """The bootstrap over subjects (section 4.3): left, model ``a``'s resampled honest UF1 and its
    95 % interval; right, the paired differences a - b on the same resamples, P(diff <= 0) shaded."""
    import matplotlib.pyplot as plt

    pa = bootstrap_samples([r.predictions for r in runs[a]], "honest", n_boot=n_boot)
    pb = bootstrap_samples([r.predictions for r in runs[b]], "honest", n_boot=n_boot)
    diff = pa - pb
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, x, what in ((axes[0], pa, f"{a}: honest UF1"), (axes[1], diff, f"{a} - {b}")):
        lo, hi = np.quantile(x, [0.025, 0.975])
        ax.hist(x, bins=40, color="0.7")
        for v in (lo, hi):
            ax.axvline(v, color="C0", ls="--")
        ax.set(xlabel=f"{what}, per resample", ylabel="resamples",
               title=f"{what}: 95 % interval {lo:.3f} to {hi:.3f} (dashed)")
    axes[1].hist(diff[diff <= 0], bins=20, color="C3",
                 label=f"diff <= 0: {np.mean(diff <= 0):.1%} of resamples = P(diff <= 0)")
    axes[1].axvline(0, color="black", lw=1)
    axes[1].legend(fontsize=9, loc="upper left")
    n_subjects = runs[a][0].predictions["subject"].nunique()
    fig.suptitle(f"{n_boot} resamples of the {n_subjects} subjects (with replacement), the same "
                 "for both models", fontsize=10)
    fig.tight_layout()
    return fig


def confusion_figure(p: pd.DataFrame, profile: str):
    """Figure 7: normalised confusion matrices per dataset, honest (top) and oracle (bottom)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    groups = ["full", "smic", "casme2", "samm"]
    fig, axes = plt.subplots(2, 4, figsize=(15, 7))
    for r, proto in enumerate(metrics.PROTOCOLS):
        for c, g in enumerate(groups):
            part = p if g == "full" else p[p["dataset"] == g]
            if part.empty:  # a run over a subset of folds may miss a dataset
                axes[r, c].set_axis_off()
                continue
            cm = metrics.confusion(part["label"], part[proto], normalize="true")
            sns.heatmap(cm, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="Blues", cbar=False,
                        xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES, ax=axes[r, c],
                        square=True)
            axes[r, c].set(title=f"{DATASET_NAMES[g]}, {proto}", xlabel="predicted",
                           ylabel="true")
    fig.suptitle(f"Figure 7: HTNet confusion matrices ({profile} profile, seed 0)")
    fig.tight_layout()
    return fig


def findings_05(table2: pd.DataFrame, paired: pd.DataFrame, runs: dict, others: dict,
                profile: str) -> str:
    """Notebook 05's "What we found" bullets (Table 2 under both protocols)."""
    m = table2[table2["source"] == "measured"].set_index(
        ["approach", "profile", "protocol"])["Full UF1"]
    cited = table2[table2["source"] != "measured"].set_index("approach")["Full UF1"]
    h = m["HTNet", profile, "honest"]
    rivals = {a: m[a, profile, "honest"] for a in runs if a != "HTNet"}
    separated = paired[(paired["CI low"] > 0) | (paired["CI high"] < 0)]
    found = [f"Oracle protocol: the {profile}-profile HTNet scores a composite UF1 of "
             f"{m['HTNet', profile, 'oracle']:.3f}, near the paper's {cited['HTNet']:.3f} (also "
             "oracle).",
             f"Honest protocol, same folds: HTNet {h:.3f}; "
             + ", ".join(f"{a} {v:.3f}" for a, v in rivals.items()) + ".",
             f"{len(separated)} of the {len(paired)} paired honest comparisons above have a 95 % "
             "interval that excludes 0."]
    for p in others:
        if ("HTNet", p, "oracle") in m.index:
            found.append(f"The {p}-profile HTNet (the paper's own model, "
                         f"{len(others[p]['HTNet'])} seed): {m['HTNet', p, 'honest']:.3f} "
                         f"honest, {m['HTNet', p, 'oracle']:.3f} oracle.")
    return bullets(found)


# --- notebook 10: Table 3 -------------------------------------------------------------------

def table3_cited() -> pd.DataFrame:
    """Table 3 as published (CAS(ME)^3 part A; HTNet's row under the oracle protocol)."""
    return pd.DataFrame([{"approach": k, "UF1": v[0], "UAR": v[1]}
                         for k, v in paper.TABLE3.items()])


def table3(run: Run, profile: str) -> pd.DataFrame:
    """Table 3: the measured HTNet rows on CAS(ME)^3 part A beside the paper's."""
    rows = [{"approach": f"HTNet ({profile})", "protocol": proto, "source": "measured",
             "UF1": run.metrics[proto]["full"]["uf1"], "UAR": run.metrics[proto]["full"]["uar"]}
            for proto in ("honest", "oracle")]
    rows.append({"approach": "HTNet (paper, Table 3)", "protocol": "oracle", "source": "cited",
                 "UF1": paper.TABLE3["HTNet"][0], "UAR": paper.TABLE3["HTNet"][1]})
    return pd.DataFrame(rows)


def casme3_confusion_figure(run: Run):
    """Figure 7(e): the CAS(ME)^3 confusion matrices, honest (left) and oracle (right)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for ax, proto in zip(axes, metrics.PROTOCOLS):
        cm = metrics.confusion(run.predictions["label"], run.predictions[proto],
                               normalize="true")
        sns.heatmap(cm, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="Blues", cbar=False,
                    xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES, ax=ax, square=True)
        ax.set(title=f"CAS(ME)^3 part A, {proto}", xlabel="predicted", ylabel="true")
    fig.tight_layout()
    return fig


def findings_10(run: Run | None, profile: str) -> str:
    """Notebook 10's "What we found" bullets (Table 3; the cited row when no data was given)."""
    if run is not None:
        return bullets(f"On CAS(ME)^3 part A the {profile}-profile HTNet scores UF1 "
                       f"{run.metrics['honest']['full']['uf1']:.3f} honest and "
                       f"{run.metrics['oracle']['full']['uf1']:.3f} oracle.",
                       f"The paper's Table 3: {paper.TABLE3['HTNet'][0]:.3f} (oracle).")
    return bullets(f"No CAS(ME)^3 data was given: nothing was measured here for the "
                   f"**{profile}** profile.",
                   f"The only numbers are the paper's Table 3: HTNet's UF1 "
                   f"{paper.TABLE3['HTNet'][0]:.4f} and UAR {paper.TABLE3['HTNet'][1]:.4f}, from "
                   "the official code's oracle protocol.",
                   "CAS(ME)^3 is licensed by its owners and is not part of the public release.")


# --- notebook 11: the protocol audit --------------------------------------------------------

NULL = "HTNet, labels permuted (null)"


def audit_runs(data, profile: str, seeds, *, runs_dir, retrain: bool = False,
               workers: int = 1) -> tuple[dict[str, list[Run]], Run]:
    """``(runs, null)``: Table 2's HTNet and STSTNet runs and a permuted-label HTNet."""
    import dataclasses

    from ..config import profile_config
    from ..training.loso import run_loso
    from ..training.store import load_run
    from .tables import stored_variant_runs, variant_runs

    runs = variant_runs(data, profile, seeds, runs_dir=runs_dir, retrain=retrain,
                        workers=workers, names=["HTNet", "STSTNet"])
    null_cfg = dataclasses.replace(profile_config(profile), permute_labels=True)
    null = load_run(run_loso(data, null_cfg, seed=0, runs_dir=runs_dir, profile=profile,
                             retrain=retrain, workers=workers, progress=False))
    for p in other_profiles(profile):
        for name, rs in stored_variant_runs(data, p, seeds, runs_dir=runs_dir,
                                            names=["HTNet"]).items():
            runs[f"{name} ({p} profile)"] = rs
    return runs, null


def audit_table(runs: dict[str, list[Run]], null: Run) -> pd.DataFrame:
    """Honest and oracle UF1 and UAR of each model and the null model (Table 2's protocols)."""
    rows = []
    for name, rs in {**runs, NULL: [null]}.items():
        for m in ("uf1", "uar"):
            h = np.mean([r.metrics["honest"]["full"][m] for r in rs])
            o = np.mean([r.metrics["oracle"]["full"][m] for r in rs])
            rows.append({"model": name, "profile": rs[0].meta["profile"], "metric": m.upper(),
                         "seeds": len(rs), "honest": h, "oracle": o, "oracle - honest": o - h})
    return pd.DataFrame(rows)


def protocol_curve(run: Run) -> pd.DataFrame:
    """Honest and oracle UF1 had training stopped after E epochs, on up to 25 values of E."""
    pred, p = run.epochs["pred"], run.predictions
    grid = np.unique(np.linspace(1, len(pred), min(25, len(pred))).astype(int))
    return metrics.protocol_curve(pred, p["label"], p["subject"], grid)


def protocol_curves_figure(runs: dict[str, list[Run]], null: Run):
    """``(fig, curves)``: honest and oracle UF1 against epochs (Table 2's protocols)."""
    import matplotlib.pyplot as plt

    curves = {name: protocol_curve(rs[0]) for name, rs in runs.items()}
    curves[NULL] = protocol_curve(null)
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), sharey=True)
    for ax, (name, c) in zip(axes, curves.items()):
        ax.plot(c["epochs"], c["honest_uf1"], label="honest (epoch E)")
        ax.plot(c["epochs"], c["oracle_uf1"], label="oracle (best of 1..E per subject)")
        ax.set(title=name, xlabel="epochs E")
    axes[0].set_ylabel("composite UF1")
    axes[0].legend()
    fig.tight_layout()
    return fig, curves


def chance_uf1(null: Run, n: int = 200) -> float:
    """The UF1 of shuffled predictions on the null run's labels (mean of ``n`` shuffles)."""
    rng = np.random.default_rng(0)
    y = null.predictions["label"].to_numpy()
    return float(np.mean([metrics.uf1(y, rng.permutation(y)) for _ in range(n)]))


SIZE_BINS, SIZE_LABELS = [0, 1, 2, 3, 6, 100], ["1", "2", "3", "4-6", "7+"]


def perfect_subjects(run: Run, null: Run) -> pd.DataFrame:
    """Subjects at 100 % accuracy by test-set size and protocol (Table 2's protocols)."""
    out = []
    for name, r in [("HTNet", run), ("null", null)]:
        for proto in metrics.PROTOCOLS:
            acc = metrics.subject_accuracy(r.predictions, proto)
            acc["size"] = pd.cut(acc["samples"], SIZE_BINS, labels=SIZE_LABELS)
            frac = acc.groupby("size", observed=False)["accuracy"].apply(
                lambda a: (a == 1).mean())
            out.append(pd.Series(frac, name=f"{name} {proto}"))
    sizes = metrics.subject_accuracy(run.predictions, "honest")
    counts = pd.cut(sizes["samples"], SIZE_BINS, labels=SIZE_LABELS).value_counts().sort_index()
    return pd.concat([counts.rename("subjects")] + out, axis=1)


def perfect_subjects_figure(perfect: pd.DataFrame):
    """Bars of :func:`perfect_subjects` by protocol (the audit's per-subject view)."""
    ax = perfect.drop(columns="subjects").plot.bar(figsize=(9, 3.6), rot=0)
    ax.set(xlabel="test samples of the subject", ylabel="fraction of subjects at 100 % accuracy",
           title="Per-subject accuracy of 100 %, by protocol")
    ax.legend(fontsize=8)
    fig = ax.figure
    fig.tight_layout()
    return fig


def findings_11(audit: pd.DataFrame, null_curve: pd.Series, chance: float, run: Run, null: Run,
                profile: str) -> str:
    """Notebook 11's "What we found" bullets (the protocol audit of Table 2's rows)."""
    a = audit[audit["metric"] == "UF1"].set_index("model")
    c = null_curve
    small = {}
    for name, r in [("HTNet", run), ("null", null)]:
        acc = metrics.subject_accuracy(r.predictions, "oracle")
        few = acc[acc["samples"] <= 3]
        small[name] = (int((few["accuracy"] == 1).sum()), len(few))
    found = [f"Choosing each subject's epoch with its test labels adds "
             f"{a.loc['HTNet', 'oracle - honest']:.3f} composite UF1 to the {profile}-profile "
             f"HTNet and {a.loc['STSTNet', 'oracle - honest']:.3f} to STSTNet.",
             f"It lifts a null HTNet trained on permuted labels from {c.honest_uf1:.3f} (chance "
             f"{chance:.3f}) to {c.oracle_uf1:.3f}.",
             f"Of the {small['HTNet'][1]} subjects with one to three test samples, the oracle "
             f"makes all of them right for {small['HTNet'][0]} (HTNet, seed 0) and for "
             f"{small['null'][0]} with the null model."]
    for name in a.index:
        if "paper profile" in name:
            found.append(f"{name}: honest {a.loc[name, 'honest']:.3f}, oracle "
                         f"{a.loc[name, 'oracle']:.3f}, a gap of "
                         f"{a.loc[name, 'oracle - honest']:.3f}.")
    return bullets(found)


def uf1_uar_note(example: pd.DataFrame, y_true, y_pred) -> str:
    """Equations 8 and 9 on a worked example, as Markdown: UF1, UAR and accuracy, and why the
    two macro scores differ (F1 charges false positives, recall does not)."""
    f1, rec = example["F1_c (eq. 8)"], example["recall_c (eq. 9)"]
    per = example.iloc[:-1]
    acc = float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))
    worst = per.loc[(per["recall_c (eq. 9)"] - per["F1_c (eq. 8)"]).idxmax()]
    return (f"UF1 = {f1.iloc[-1]:.4f}, UAR = {rec.iloc[-1]:.4f}, plain accuracy {acc:.4f}. "
            f"UAR only asks how many of each class's samples were found (recall); F1 also charges "
            f"the false positives. Class {worst['class']} ({CLASS_NAMES[int(worst['class'])]}) "
            f"has recall {worst['recall_c (eq. 9)']:.4f} but {int(worst['FP'])} false positives, "
            f"so its F1 is only {worst['F1_c (eq. 8)']:.4f}"
            + ("; the other classes lose recall but have no false positives, so their F1 stays "
               "above their recall" if (per.drop(worst.name)["FP"] == 0).all() else "")
            + (". Accuracy, dominated by the common class, is higher than both."
               if acc > max(f1.iloc[-1], rec.iloc[-1]) else "."))
