"""The walkthrough notebooks 01-02 and 04: optical flow and strain, apex spotting and the four
facial regions, the leave-one-subject-out folds, as figures and tables (paper sections 3.1,
4.2); the notebooks compute each idea by hand beside these and build their findings from the
values."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from ..data import DATASET_NAMES, LABELS, flow, regions, synthetic
from . import figures

ROOM = (0, 0.035, 1, 0.965)  # the constrained layout's rectangle: room for the provenance line
REGION_NAMES = ["left eye", "right eye", "nose", "mouth left", "mouth right"]
REGION_COLOURS = {"left eye": "tab:blue", "right eye": "tab:orange",
                  "mouth left": "tab:green", "mouth right": "tab:red"}


def gray(rgb: np.ndarray) -> np.ndarray:
    """An RGB frame in grey levels, as the flow and the apex spotters read it."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


# --- notebook 01: optical flow, strain and apex spotting ------------------------------------

def flow_figure(pair):
    """The figure of true and Farneback flow and strain of a synthetic pair (section 3.1)."""
    import matplotlib.pyplot as plt

    est = flow.optical_flow(gray(pair.onset), gray(pair.apex), method="farneback")
    fields = {"true": pair.flow, "Farneback": est}
    shown = {name: (figures.quantized(f, 1e-3), figures.quantized(flow.optical_strain(f), 1e-4))
             for name, f in fields.items()}  # px and strain, drawn at a precision every CPU gives
    lim = np.abs(pair.flow).max()
    smax = max(strain.max() for _, strain in shown.values())
    fig, axes = plt.subplots(2, 4, figsize=(15, 7), layout="constrained")
    fig.get_layout_engine().set(rect=ROOM)
    axes[0, 0].imshow(pair.onset); axes[0, 0].set_title("onset")
    axes[1, 0].imshow(pair.apex); axes[1, 0].set_title("apex")
    for r, (name, (f, strain)) in enumerate(shown.items()):
        uv = [axes[r, c + 1].imshow(f[..., c], cmap="coolwarm", vmin=-lim, vmax=lim)
              for c in (0, 1)]
        st = axes[r, 3].imshow(strain, cmap="magma", vmin=0, vmax=smax)
        axes[r, 1].set_title(f"u, along x ({name})")
        axes[r, 2].set_title(f"v, along y ({name})")
        axes[r, 3].set_title(f"optical strain ({name})")
    for ax in axes.flat:
        ax.axis("off")
    fig.colorbar(uv[0], ax=axes[:, 1:3], shrink=0.8,
                 label="displacement (px): u > 0 right, v > 0 down")
    fig.colorbar(st, ax=axes[:, 3], shrink=0.8, label="strain (no unit: px per px)")
    return fig


def endpoint_error(a, b, mask=None) -> float:
    """The median endpoint error |a - b| in px, over ``mask`` where given."""
    e = np.linalg.norm(a - b, axis=-1)
    return float(np.median(e if mask is None else e[mask]))


def endpoint_table(pair) -> pd.DataFrame:
    """Per flow method (section 3.1's flow, synthetic): the median endpoint error on a smooth
    random field of up to 2 px over the whole face and on the action-unit areas of ``pair``
    (true motion above 0.5 px), and the speed found there (mean estimated speed over mean true
    speed: 1 finds all the motion, below 1 underestimates it)."""
    moving = np.linalg.norm(pair.flow, axis=-1) > 0.5
    face = synthetic.astronaut_face()
    field = synthetic.random_smooth_field(224, max_disp=2.0, seed=0)
    moved = synthetic.warp(face, field)
    rows = []
    for method in flow.FLOW_METHODS:
        f = flow.optical_flow(gray(pair.onset), gray(pair.apex), method=method)
        r = flow.optical_flow(gray(face), gray(moved), method=method)
        speed = (np.linalg.norm(f[moving], axis=-1).mean()
                 / np.linalg.norm(pair.flow[moving], axis=-1).mean())
        rows.append({"method": method,
                     "median endpoint error (px), smooth field up to 2 px":
                         endpoint_error(r, field),
                     "median endpoint error (px), action-unit areas":
                         endpoint_error(f, pair.flow, moving),
                     "speed found (estimated / true mean speed), action-unit areas": speed})
    return pd.DataFrame(rows).set_index("method")


def flow_maps_figure():
    """``(fig, scales)``: the 28x28 maps of one synthetic pair per class (section 4.2)."""
    import matplotlib.pyplot as plt

    pairs = {k: synthetic.make_pair(k, seed=0) for k in (0, 1, 2)}
    flows = {k: flow.optical_flow(gray(p.onset), gray(p.apex)) for k, p in pairs.items()}
    maps = {k: flow.flow_to_map(f) for k, f in flows.items()}  # = flow.flow_map(onset, apex)
    scales = {LABELS[k]: figures.map_scale(f) for k, f in flows.items()}
    fig, axes = plt.subplots(3, 4, figsize=(10, 7.5), layout="constrained")
    fig.get_layout_engine().set(rect=ROOM)
    for r, k in enumerate(maps):
        axes[r, 0].imshow(pairs[k].apex); axes[r, 0].set_ylabel(LABELS[k])
        for c, name in enumerate(("u", "v", "strain")):
            im = axes[r, c + 1].imshow(maps[k][..., c], cmap="gray", vmin=0, vmax=255)
            zero = scales[LABELS[k]]["zero lands at"].iloc[c]
            axes[r, c + 1].set_title(f"{name}, 28x28: zero = {round(zero)}", fontsize=9)
    axes[0, 0].set_title("apex (224x224)", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([]); ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, 1:], shrink=0.8,
                 label="map value 0..255 (per channel: its min -> 0, its max -> 255)")
    return fig, scales


def apex_spotting(landmarks) -> dict:
    """The sequence, differences, spotted apex and halving of D&C-RoIs (eq. 1, section 3.1)."""
    seq = synthetic.make_sequence(2, n_frames=16, seed=3)
    frames = [gray(f) for f in seq.frames]
    diff = flow.apex_differences(frames, landmarks)
    spotted = flow.spot_apex(frames, landmarks)
    trace = figures.halving_trace(diff)
    assert trace[-1][0] == spotted  # the same rule as flow.divide_and_conquer
    return {"seq": seq, "diff": diff, "spotted": spotted, "trace": trace}


def apex_spotting_figure(spot: dict):
    """The figure of :func:`apex_spotting`: differences, true and spotted apex, the halving."""
    import matplotlib.pyplot as plt

    seq, spotted, trace = spot["seq"], spot["spotted"], spot["trace"]
    diff = figures.quantized(spot["diff"], 1e-6)  # drawn at a precision every CPU gives
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(7.5, 5), sharex=True, height_ratios=(3, 1.4),
                                 layout="constrained")
    fig.get_layout_engine().set(rect=ROOM)
    ax.plot(diff, marker="o", label="LBP difference to the onset")
    ax.plot(seq.weights * diff.max() / seq.weights.max(), ls=":", label="true motion (scaled)")
    ax.axvline(seq.apex, color="C2", label=f"true apex ({seq.apex})")
    ax.axvline(spotted, color="C3", ls="--", label=f"spotted apex, D&C ({spotted})")
    ax.plot(np.argmax(diff), diff.max(), "k*", ms=11,
            label=f"largest difference ({np.argmax(diff)})")
    ax.set(ylabel="1 - correlation of LBP histograms\nto the onset, summed over\n"
                  "the three ROIs (eq. 1)",
           title="D&C-RoIs on a synthetic surprise sequence (symmetric, 1.5 px)")
    ax.legend(fontsize=7.5)
    for step, (lo, hi) in enumerate(trace):
        bx.plot([lo - 0.4, hi - 0.6], [step, step], lw=5, color="C3", solid_capstyle="butt")
    bx.set(xlabel="frame", ylabel="halving step", ylim=(len(trace) - 0.5, -0.5))
    return fig


def apex_spotters_figure(landmarks):
    """D&C-RoIs and the flow-magnitude spotter on an asymmetric synthetic sequence (4.2)."""
    import matplotlib.pyplot as plt

    aseq = synthetic.make_sequence(1, n_frames=30, seed=4, profile="asymmetric", amplitude=3.0)
    aframes = [gray(f) for f in aseq.frames]
    curves = {"lbp": (figures.quantized(flow.apex_differences(aframes, landmarks), 1e-6),
                      "1 - correlation of LBP histograms to the onset,\n"
                      "summed over the three ROIs (eq. 1)"),
              "flow": (figures.quantized(flow.flow_differences(aframes, landmarks), 1e-6),
                       "mean Farneback flow magnitude from the onset,\n"
                       "summed over the three ROIs (px)")}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    fig.get_layout_engine().set(rect=ROOM)
    for ax, (method, (curve, ylabel)) in zip(axes, curves.items()):
        apex_at = flow.spot_apex(aframes, landmarks, method=method)
        ax.plot(curve, marker="o", ms=3, label=f"{method} difference")
        ax.plot(aseq.weights * curve.max(), ls=":", label="true motion (scaled)")
        ax.axvline(aseq.apex, color="C2", label=f"true apex ({aseq.apex})")
        ax.axvline(apex_at, color="C3", ls="--", label=f"spotted apex ({apex_at})")
        ax.set(xlabel="frame", title=f'spot_apex(method="{method}")')
        ax.set_ylabel(ylabel, fontsize=8.5)
        ax.legend(fontsize=7.5)
    fig.suptitle("A synthetic positive sequence: fast rise, slow decay, 3 px at the apex",
                 fontsize=10)
    return fig


APEX_SETS = ("symmetric, 1.5 px, 12-16 frames", "asymmetric, 3 px, 24-30 frames")


def apex_hits(landmarks) -> pd.DataFrame:
    """Apex hits within 1 and 2 frames per spotter on 24 synthetic sequences (section 4.2)."""
    sym, asym = APEX_SETS
    sets = {sym: [synthetic.make_sequence(s % 3, n_frames=12 + s % 5, seed=100 + s)
                  for s in range(12)],
            asym: [synthetic.make_sequence(s % 3, n_frames=24 + s % 7, seed=200 + s,
                                           profile="asymmetric", amplitude=3.0)
                   for s in range(12)]}
    rows = []  # one row per sequence set and spotter; "sequences": how many in the set
    for name, seqs in sets.items():
        for method in flow.APEX_METHODS:
            err = np.array([abs(flow.spot_apex([gray(f) for f in s.frames], landmarks,
                                               method=method) - s.apex) for s in seqs])
            rows.append({"sequence set": name, "spotter": method,
                         "within 1 frame": int((err <= 1).sum()),
                         "within 2 frames": int((err <= 2).sum()), "sequences": len(seqs)})
    return pd.DataFrame(rows).set_index(["sequence set", "spotter"])


RELEASE_CHANNELS = {"u": 2, "v": 1, "strain": 0}  # positions in the array OpenCV reads


def class_mean_figure(data):
    """The class-mean flow maps of the composite release per dataset (section 4.1)."""
    import matplotlib.pyplot as plt

    t = data.table
    fig, axes = plt.subplots(3, 9, figsize=(16, 5.4), layout="constrained")
    fig.get_layout_engine().set(rect=ROOM)
    for r, ds in enumerate(("smic", "casme2", "samm")):
        for k in (0, 1, 2):
            sel = ((t.dataset == ds) & (t.label == k)).to_numpy()
            if not sel.any():
                continue
            mean = data.flows[sel].astype(float).mean(0)
            for c, (name, ch) in enumerate(RELEASE_CHANNELS.items()):
                ax = axes[r, 3 * k + c]
                im = ax.imshow(mean[..., ch], cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"{LABELS[k]} {name} (n={sel.sum()})", fontsize=8)
        axes[r, 0].set_ylabel(DATASET_NAMES[ds])
    for ax in axes.flat:
        ax.set_xticks([]); ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.7,
                 label="mean map value (0..255, each map stretched on its own)")
    return fig


def map_levels(data) -> pd.DataFrame:
    """Each release map's median pixel: mean and range per dataset (section 4.1's maps)."""
    t = data.table
    summary = pd.DataFrame({name: np.median(data.flows[..., ch].reshape(len(t), -1), axis=1)
                            for name, ch in RELEASE_CHANNELS.items()})
    return summary.groupby(t.dataset.map(DATASET_NAMES)).agg(["mean", "min", "max"])


# --- notebook 02: the four facial regions ---------------------------------------------------

def astronaut_bgr() -> np.ndarray:
    """A 224x224 BGR face cut from scikit-image's astronaut (the regions of sections 3.1, 4.2)."""
    from skimage import data as skdata

    return cv2.resize(cv2.cvtColor(skdata.astronaut()[20:220, 150:330], cv2.COLOR_RGB2BGR),
                      (224, 224), interpolation=cv2.INTER_AREA)


def mosaic_regions() -> list[str]:
    """The region name at each mosaic position (:data:`regions.MOSAIC_ORDER`)."""
    return [REGION_NAMES[k] for k in regions.MOSAIC_ORDER]


def region_legend() -> list:
    """Legend handles: one outline per region in its colour, in mosaic order."""
    from matplotlib.patches import Patch

    return [Patch(fill=False, edgecolor=REGION_COLOURS[r], lw=2, label=r)
            for r in mosaic_regions()]


def outline_quadrants(ax, size: int) -> None:
    """Frame each quadrant of a mosaic in its region's colour."""
    from matplotlib.patches import Rectangle

    h = size / 2
    region = mosaic_regions()
    for k, (row, col) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        ax.add_patch(Rectangle((col * h - 0.5 + 0.3, row * h - 0.5 + 0.3), h - 0.6, h - 0.6,
                               fill=False, color=REGION_COLOURS[region[k]], lw=2))


def bgr_to_rgb(im: np.ndarray) -> np.ndarray:
    """A BGR image (the library's arrays) as RGB for drawing."""
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def astronaut_regions_figure(astronaut, full, small):
    """Landmarks, regions and mosaics of the astronaut face at 224x224 and 28x28 (3.1, 4.2)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    face28 = cv2.resize(astronaut, (28, 28), interpolation=cv2.INTER_AREA)
    fig, axes = plt.subplots(1, 4, figsize=(14, 4.3), layout="constrained")
    fig.get_layout_engine().set(rect=ROOM)
    axes[0].imshow(bgr_to_rgb(astronaut))
    for k in regions.MOSAIC_ORDER:
        x, y = full.points[0][k]
        axes[0].add_patch(Rectangle((x - 56, y - 56), 112, 112, fill=False,
                                    color=REGION_COLOURS[REGION_NAMES[k]], lw=2))
    axes[0].scatter(*full.points[0].T, c="yellow", s=18)
    axes[0].set_title("224x224: 5 landmarks, corrected regions", fontsize=10)
    axes[1].imshow(bgr_to_rgb(face28))
    if small.found[0]:
        axes[1].scatter(*small.points[0].T, c="yellow", s=18)
    axes[1].set_title("28x28 as official MTCNN sees it" + ("" if small.found[0] else " (no face)"),
                      fontsize=10)
    for ax, mode, lm_ in [(axes[2], "official", small), (axes[3], "corrected", full)]:
        ax.imshow(bgr_to_rgb(regions.mosaic(face28[None], regions.crop_centres(lm_, mode))[0]))
        outline_quadrants(ax, 28)
        ax.set_title(f"{mode} mosaic of the 28x28 face", fontsize=10)
    for ax in axes:
        ax.axis("off")
    fig.legend(handles=region_legend(), loc="outside lower center", ncol=4, fontsize=9,
               title="region")
    return fig


def no_face_table(data, lm: dict) -> tuple[pd.DataFrame, dict]:
    """``(table, sizes)``: samples without a face per dataset and mode (section 4.2)."""
    size = {mode: "x".join(map(str, np.unique(l.image_size, axis=0).astype(int).ravel()))
            for mode, l in lm.items()}
    no_face = pd.DataFrame({f"{mode}: no face ({size[mode]})": ~l.found
                            for mode, l in lm.items()})
    by_ds = no_face.groupby(data.table.dataset.map(DATASET_NAMES)).sum()
    by_ds["samples"] = data.table.dataset.map(DATASET_NAMES).value_counts()
    by_ds.loc["all"] = by_ds.sum()
    return by_ds, size


def crop_centres_figure(centres: dict, n: int):
    """Where each mode centres each region's crop on the release's maps (section 4.2)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    region = mosaic_regions()
    fig, axes = plt.subplots(2, 4, figsize=(14, 7), layout="constrained")
    fig.get_layout_engine().set(rect=ROOM)
    for r, mode in enumerate(centres):
        for k in range(4):
            ax = axes[r, k]
            h = np.zeros((28, 28))
            np.add.at(h, (centres[mode][:, k, 0], centres[mode][:, k, 1]), 1)
            colour = REGION_COLOURS[region[k]]
            tint = LinearSegmentedColormap.from_list(region[k], [(0.85,) * 3, colour])
            ax.imshow(np.log10(np.where(h > 0, h, np.nan)), cmap=tint, vmin=0,
                      vmax=np.log10(n), extent=(-0.5, 27.5, 27.5, -0.5))  # no sample: white
            ax.set_title(f"{mode}: {region[k]} crop centres", fontsize=9, color=colour)
            ax.set_xlabel("column of the 28x28 map"); ax.set_ylabel("row")
        greys = LinearSegmentedColormap.from_list("samples", [(0.85,) * 3, "black"])
        bar = fig.colorbar(plt.cm.ScalarMappable(plt.Normalize(0, np.log10(n)), greys),
                           ax=axes[r, :], shrink=0.8,
                           label="samples centred there (log scale;\nin each region's colour)")
        bar.set_ticks(np.log10([1, 10, 100, n]), labels=["1", "10", "100", str(n)])
    return fig


def region_examples_figure(data, centres: dict):
    """Four release samples: apex face, flow map with each mode's crops and the mosaics (4.2)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    region = mosaic_regions()
    idx = np.linspace(0, len(data) - 1, 4).astype(int)
    fig, axes = plt.subplots(len(idx), 5, figsize=(11, 2.4 * len(idx) + 0.6),
                             layout="constrained")
    fig.get_layout_engine().set(rect=(0, 0.03, 1, 0.97))  # room for the provenance line
    for r, i in enumerate(idx):
        face = cv2.resize(cv2.imread(str(data.root / data.table.apex_path[i])), (28, 28),
                          interpolation=cv2.INTER_AREA)
        fmap = data.flows[i]
        axes[r, 0].imshow(bgr_to_rgb(face))
        axes[r, 0].set_title(f"{DATASET_NAMES[data.table.dataset[i]]} apex, 28x28", fontsize=8)
        for c, mode in [(1, "official"), (2, "corrected")]:
            axes[r, c].imshow(fmap[..., ::-1])
            for k, (row, col) in enumerate(centres[mode][i]):
                axes[r, c].add_patch(Rectangle((col - 7.5, row - 7.5), 14, 14, fill=False,
                                               color=REGION_COLOURS[region[k]], lw=1.5))
            axes[r, c].set_title(f"flow map, {mode} crops", fontsize=8)
            axes[r, c + 2].imshow(
                regions.mosaic(fmap[None], centres[mode][i:i + 1])[0][..., ::-1])
            outline_quadrants(axes[r, c + 2], 28)
            axes[r, c + 2].set_title(f"{mode} mosaic", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.legend(handles=region_legend(), loc="outside lower center", ncol=4, fontsize=8,
               title="region")
    return fig


# --- notebook 04: leave-one-subject-out folds ------------------------------------------------

def loso_folds_figure(data, subjects: list):
    """The LOSO folds as a strip (section 4.2): one row per fold, one column per subject in
    ``subjects`` (the folds' order); training subjects light, the held-out subject dark; the
    bar above counts each subject's samples."""
    import matplotlib.pyplot as plt

    t = data.table
    n = len(subjects)
    counts = t["subject"].value_counts().reindex(subjects).to_numpy()
    ds = t.drop_duplicates("subject").set_index("subject")["dataset"].reindex(subjects)
    fig, (top, ax) = plt.subplots(2, 1, figsize=(9, 7.2), height_ratios=(1, 5), sharex=True,
                                  layout="constrained")
    fig.get_layout_engine().set(rect=ROOM)
    top.bar(np.arange(n), counts, width=0.8, color="0.45")
    top.set(ylabel="clips")
    ax.imshow(np.eye(n), cmap="Reds", vmin=-0.15, vmax=1, aspect="auto", interpolation="none")
    ax.set(xlabel="subject (its dataset below)", ylabel="fold",
           title="every fold trains on the light squares and tests on the dark one")
    edges = np.flatnonzero(ds.to_numpy()[1:] != ds.to_numpy()[:-1]) + 0.5
    for x in edges:
        ax.axvline(x, color="0.3", lw=0.8)
        top.axvline(x, color="0.3", lw=0.8)
    starts = np.concatenate([[-0.5], edges])
    ends = np.concatenate([edges, [n - 0.5]])
    first = ds.iloc[(starts + 0.5).astype(int)]  # each dataset's first subject
    ax.set_xticks((starts + ends) / 2, [DATASET_NAMES.get(d, d) for d in first])
    step = max(1, n // 12)
    ax.set_yticks(np.arange(0, n, step), [f"{k + 1}: {subjects[k]}" for k in range(0, n, step)],
                  fontsize=7)
    top.set_title(f"leave-one-subject-out: {n} subjects, {n} folds")
    return fig


def fold_answers(subject: str, truth, epoch_pred) -> dict:
    """What a fold's model answered its held-out subject at every epoch: the subject's clips
    per class, the correct answers per epoch and the one class answered at every epoch (None
    when the answers vary)."""
    truth = np.asarray(truth)
    epoch_pred = [np.asarray(p) for p in epoch_pred]
    only = {int(c) for p in epoch_pred for c in np.unique(p)}
    return {"subject": subject, "clips": {LABELS[c]: int(n) for c, n in
                                          enumerate(np.bincount(truth, minlength=3)) if n},
            "correct": [int((p == truth).sum()) for p in epoch_pred], "n": len(truth),
            "one class": LABELS[only.pop()] if len(only) == 1 else None}


def fold_answers_note(a: dict) -> str:
    """Markdown of :func:`fold_answers`: why accuracy flatters a model that answers the
    common class (what UF1 and UAR, eqs. 8-9, correct)."""
    parts = [f"{n} {c}" for c, n in a["clips"].items()]
    clips = " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
    right, n = a["correct"][-1], a["n"]
    if a["one class"]:
        missed = [c for c in a["clips"] if c != a["one class"]]
        said = (f"At every epoch the model answered **{a['one class']}** for all {n}: "
                f"{right} of {n} correct ({right / n:.0%})"
                + (f", yet it recognised no {' or '.join(missed)} clip." if missed else "."))
    else:
        said = (f"Its correct answers by epoch: {', '.join(map(str, a['correct']))} of {n}; "
                f"at the last epoch {right / n:.0%}.")
    return (f"Subject **{a['subject']}** has {clips} clips. {said} Accuracy rewards answering "
            "the common class; UF1 and UAR weigh every class equally.")
