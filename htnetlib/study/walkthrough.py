"""The walkthrough notebooks 01-03: optical flow and strain, apex spotting, the four facial
regions and the model's size, as figures, tables and findings (paper sections 3.1-3.3, 4.2)."""

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
    """Endpoint error and speed found per flow method (section 3.1's flow, synthetic)."""
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
        rows.append({"method": method, "EPE, smooth field <= 2 px": endpoint_error(r, field),
                     "EPE, action-unit areas": endpoint_error(f, pair.flow, moving),
                     "speed found / true there": speed})
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
    rows = []
    for name, seqs in sets.items():
        for method in flow.APEX_METHODS:
            err = np.array([abs(flow.spot_apex([gray(f) for f in s.frames], landmarks,
                                               method=method) - s.apex) for s in seqs])
            rows.append({"sequences": name, "spotter": method,
                         "within 1 frame": int((err <= 1).sum()),
                         "within 2 frames": int((err <= 2).sum()), "of": len(seqs)})
    return pd.DataFrame(rows).set_index(["sequences", "spotter"])


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


def findings_01(endpoint, scale_table, levels, hits, spot: dict) -> str:
    """Notebook 01's "What we found" text (section 3.1's flow and strain, 4.2's apex spotting)."""
    fb, dis = endpoint.loc["farneback"], endpoint.loc["dis"]
    zero = scale_table["zero lands at"]
    is_strain = zero.index.get_level_values("channel").str.startswith("strain")
    med = {c: (levels[c]["min"].min(), levels[c]["max"].max()) for c in ("u", "v")}
    spot_ = lambda s, m, w: f"{hits.loc[(s, m), w]} of {hits.loc[(s, m), 'of']}"  # noqa: E731
    sym, asym = APEX_SETS
    seq, diff, spotted = spot["seq"], spot["diff"], spot["spotted"]
    return (
        f"Farneback flow (OpenCV, with this library's parameters: the paper names the method but gives none) recovers a random smooth field of up "
        f"to 2 px with a median endpoint error of {fb.iloc[0]:.3f} px (DIS {dis.iloc[0]:.3f} "
        f"px); on the small action-unit areas it errs by {fb.iloc[1]:.3f} px (DIS "
        f"{dis.iloc[1]:.3f} px) and finds {fb.iloc[2]:.0%} of the true speed there (DIS "
        f"{dis.iloc[2]:.0%}): its window smooths small motions away. Each 28x28 channel is "
        f"min-max stretched on its own, so zero motion is not mid-grey 128: in the three "
        f"synthetic maps it lands anywhere from {zero[~is_strain].min():.0f} to "
        f"{zero[~is_strain].max():.0f} in u and v, and at {round(zero[is_strain].max())} in "
        f"strain. In the release, the median pixel of a map (roughly the still face's level) "
        f"ranges over {med['u'][0]:.0f}-{med['u'][1]:.0f} in u and "
        f"{med['v'][0]:.0f}-{med['v'][1]:.0f} in v across samples. D&C-RoIs keeps the half "
        f"with the larger mean difference, so it need not pick the largest difference: on the "
        f"surprise sequence above it spots frame {spotted} (true apex {seq.apex}) while the "
        f"largest LBP difference is at frame {np.argmax(diff)}. Apex spotting, within 1 frame: "
        f"on 12 symmetric 1.5 px sequences D&C-RoIs (`lbp`) hits "
        f"{spot_(sym, 'lbp', 'within 1 frame')} and the flow-magnitude spotter "
        f"{spot_(sym, 'flow', 'within 1 frame')} (within 2 frames "
        f"{spot_(sym, 'lbp', 'within 2 frames')} and {spot_(sym, 'flow', 'within 2 frames')}); "
        f"on 12 asymmetric 3 px sequences `lbp` hits {spot_(asym, 'lbp', 'within 1 frame')} "
        f"and `flow` {spot_(asym, 'flow', 'within 1 frame')} (within 2 frames "
        f"{spot_(asym, 'lbp', 'within 2 frames')} and {spot_(asym, 'flow', 'within 2 frames')}).")


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


def findings_02(full, small, by_ds, size: dict, lm: dict, centres: dict) -> str:
    """Notebook 02's "What we found" text (the region cropping of sections 3.1 and 4.2)."""
    n = int(by_ds.loc["all", "samples"])
    off, cor = (by_ds.filter(like=mode).iloc[:, 0] for mode in ("official", "corrected"))
    layouts = len(np.unique(centres["official"][~lm["official"].found], axis=0))
    eyes = {mode: centres[mode][:, :2] for mode in centres}  # (row, col) of the two eye crops
    left, top = (eyes["official"][..., 1] < 14).mean(), (eyes["corrected"][..., 0] < 14).mean()
    per_ds = lambda s: ", ".join(f"{d} {s[d]} of {by_ds.samples[d]}"  # noqa: E731
                                 for d in by_ds.index[:-1])
    return (
        f"MTCNN finds the astronaut's face at 224x224 ({bool(full.found[0])}) but not when "
        f"shown it at 28x28 ({bool(small.found[0])}), as the official code does. On the "
        f"composite release's {n} apex images, the official mode (MTCNN on the image shrunk to "
        f"{size['official']}) finds no face in {off['all']} ({off['all'] / n:.0%}; "
        f"{per_ds(off)}); those samples share {layouts} crop layout, the fixed fallback "
        f"landmarks. The corrected mode (MTCNN on the {size['corrected']} image) finds no face "
        f"in {cor['all']} ({cor['all'] / n:.0%}; {per_ds(cor)}). Reading landmark x as the "
        f"row, the official mode centres {left:.0%} of its eye crops in the left half of the "
        f"map, where the corrected mode centres {top:.0%} of its eye crops in the top half.")


# --- notebook 03: the model -----------------------------------------------------------------

def findings_03(paper_model, paper_cfg, profile_model, profile: str, table5_params) -> str:
    """Notebook 03's "What we found" text (sections 3.2-3.3 and Table 5's parameter column)."""
    from ..model import architecture, count_parameters

    paper_levels = architecture(paper_model, paper_cfg.image_size)
    n_paper, n_profile = count_parameters(paper_model), count_parameters(profile_model)
    size_gap = max(abs(table5_params["Table 5 column"] / table5_params["float32 MiB"] - 1))
    return (f"The paper's HTNet has {n_paper:,} parameters, "
            f"{paper_levels[-1]['transformer parameters'] / n_paper:.0%} of "
            f"them in the top level's {paper_levels[-1]['layers']} transformer layers. Every "
            f"block at every level holds "
            f"{', '.join(str(lv['tokens per block']) for lv in paper_levels)} "
            "token(s), so its attention is a softmax over one key: the transformer layers mix "
            "channels only; pixels are mixed within each patch by the patch embedding and "
            "across neighbouring patches by the aggregation convolutions. Table "
            f"5's \"#Params\" column is within {size_gap:.1%} "
            "of the float32 size in MiB, not a parameter count. The "
            f"{profile} profile's model has {n_profile:,} parameters "
            f"({n_profile / n_paper:.2%} of the paper's).")


def transformer_by_hand(model, x) -> pd.DataFrame:
    """Eqs. 4-6 (section 3.2) step by step: the first transformer layer of the bottom level on
    the patch tokens of ``x``, computed by hand, each step beside the model's own module."""
    import torch
    import torch.nn.functional as F
    from einops import rearrange

    transformer = model.layers[0][0]
    (pre_a, pre_f) = transformer.layers[0]
    attn, ff = pre_a.fn, pre_f.fn

    def ln(norm, t):  # eq. 6: per token, over its channels: (t - mean) / sqrt(var + eps) g + b
        mu, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=False, keepdim=True)
        return (t - mu) / torch.sqrt(var + norm.eps) * norm.g.flatten() + norm.b.flatten()

    def lin(conv, t):  # a 1x1 convolution is a linear map of each token's channels
        w = conv.weight.flatten(1)
        return t @ w.T + (conv.bias if conv.bias is not None else 0)

    with torch.no_grad():
        n = 2 ** (len(model.layers) - 1)  # blocks per side at the bottom level
        emb = model.to_patch_embedding(x)  # (B, C, 4, 4): one token per 7x7 patch
        blocks = rearrange(emb, "b c (n1 h) (n2 w) -> (b n1 n2) c h w", n1=n, n2=n)
        h, w = blocks.shape[-2:]
        z0 = blocks + transformer.pos_emb[: h * w].reshape(1, 1, h, w)  # + positional embedding
        tok = rearrange(z0, "b c h w -> b (h w) c")  # (blocks, tokens, C)
        y = ln(pre_a.norm, tok)
        q, k, v = (rearrange(t, "b t (n d) -> b n t d", n=attn.heads)
                   for t in lin(attn.to_qkv, y).chunk(3, dim=-1))
        weights = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)  # (b, n, t, t)
        msa = lin(attn.to_out[0], rearrange(weights @ v, "b n t d -> b t (n d)"))
        z1 = tok + msa  # eq. 4, first residual
        y2 = ln(pre_f.norm, z1)
        hidden = F.gelu(lin(ff.net[0], y2))
        z2 = z1 + lin(ff.net[3], hidden)  # eq. 4, second residual
        own_z1 = z0 + pre_a(z0)
        own_z2 = own_z1 + pre_f(own_z1)
        back = lambda t: rearrange(t, "b (h w) c -> b c h w", h=h, w=w)  # noqa: E731
        steps = [("patch embedding + positional embedding", "z0", z0, None),
                 ("LayerNorm (eq. 6)", "LN(z0)", y, pre_a.norm(z0)),
                 ("attention weights softmax(q k^T / sqrt(d)) (eq. 5)", "per head", weights,
                  None),
                 ("multi-head self-attention (eq. 5)", "MSA(LN(z0))", msa, pre_a(z0)),
                 ("residual (eq. 4)", "z1 = z0 + MSA", z1, own_z1),
                 ("feed-forward: linear, GELU, linear", "FFN(LN(z1))", z2 - z1,
                  pre_f(own_z1)),
                 ("residual (eq. 4): the layer's output", "z2 = z1 + FFN", z2, own_z2)]
        rows = []
        for step, formula, t, own in steps:
            same = ("-" if own is None or t.dim() != 3 else  # float32 rounding allowed
                    "yes" if torch.allclose(back(t), own, rtol=1e-5, atol=1e-4) else "no")
            rows.append({"step": step, "formula": formula, "shape": tuple(t.shape),
                         "values (min to max)": f"{float(t.min()):.3g} to {float(t.max()):.3g}",
                         "equals the model's own step (float32 rounding)": same})
    return pd.DataFrame(rows)
