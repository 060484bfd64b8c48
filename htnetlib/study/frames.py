"""Notebook 14, from two frames to a prediction (paper sections 3.1-3.3 and 4.2): a fitted
model's steps drawn on synthetic motions of one face, the release's maps through ``--flow``,
the time per pair and the findings. None of it is an accuracy."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .. import io, predict
from ..data import LABELS, flow, regions, synthetic
from .figures import quantized
from .tables import to_precision

CLASSES = [LABELS[k] for k in range(3)]
#: The flow method that ``Model.predict`` and ``htnet predict`` use unless told otherwise.
FLOW_NAME = {"tvl1": "TV-L1", "farneback": "Farneback", "dis": "DIS"}[predict.DEFAULT_FLOW]
AMPLITUDES = [-3, -1.5, -0.75, -0.25, 0, 0.25, 0.75, 1.5, 3]


def to_bgr(im: np.ndarray) -> np.ndarray:
    """A synthetic RGB frame as the BGR array the library reads."""
    return cv2.cvtColor(im, cv2.COLOR_RGB2BGR)


def to_rgb(im: np.ndarray) -> np.ndarray:
    """A library BGR array as RGB for drawing."""
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def predicted(p) -> str:
    """The class a probability vector picks."""
    return CLASSES[int(np.argmax(p))]


def notebook_model(data, profile: str, seed: int, *, stored, out, model_dir=None):
    """Notebook 14's model and whether it was fitted now: ``model_dir`` if given; else the one
    committed under ``<stored>/models/<name>`` (read as stored, so every machine shows the same
    answers); else fitted on every sample (section 4.2's schedule) and saved under
    ``<out>/models/<name>``."""
    from ..training.store import data_fingerprint

    if model_dir is not None:
        return predict.fitted_model(data, profile, seed, model_dir=model_dir)
    name = predict.model_name(profile, seed, data_fingerprint(data))
    committed = Path(stored) / "models" / name
    if (committed / predict.META).is_file():
        return predict.fitted_model(data, profile, seed, model_dir=committed)
    return predict.fitted_model(data, profile, seed, model_dir=Path(out) / "models" / name)


def model_summary(model, fitted_now: bool) -> str:
    """What the fitted model of section 4.2's profile is: its folder, data, training, input."""
    meta, t = model.meta, model.meta["training"]
    shown = (model.path.relative_to(predict.ROOT) if model.path.is_relative_to(predict.ROOT)
             else model.path.name)
    inp = {k: meta["input"][k] for k in ("map_size", "channels", "value_range", "input_scale",
                                         "regions", "image_size")}
    return "\n".join([
        f"{'fitted now' if fitted_now else 'reused the stored model'}: {shown}",
        f"{meta['config']['model']}, profile {meta['profile']}, seed {meta['seed']}, data "
        f"{meta['data_fingerprint']} ({meta['data_root']}: {meta['data_manifest']})",
        f"trained on all {meta['n_samples']} samples {meta['class_counts']}, {t['epochs']} "
        f"epochs, lr {meta['config']['lr']}, final epoch kept",
        f"final epoch: training loss {t['final_train_loss']:.4f}, training accuracy "
        f"{t['final_train_acc']:.3f} (samples it was trained on: not an accuracy estimate)",
        f"input: {inp}"])


def frames_to_flow_figure(pair, maps: dict):
    """Steps 1-2 of section 3.1: frames, difference, true motion, face crop, flow, strain."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(14, 7))
    axes[0, 0].imshow(pair.onset); axes[0, 0].set_title("onset")
    axes[0, 1].imshow(pair.apex); axes[0, 1].set_title("apex")
    diff = np.abs(pair.apex.astype(int) - pair.onset.astype(int)).sum(2)
    axes[0, 2].imshow(np.clip(diff * 8, 0, 255), cmap="gray")
    axes[0, 2].set_title("|apex − onset| × 8")
    step = 12
    ys, xs = np.mgrid[step // 2:224:step, step // 2:224:step]
    axes[0, 3].imshow(pair.onset, alpha=0.5)
    axes[0, 3].quiver(xs, ys, pair.flow[ys, xs, 0], -pair.flow[ys, xs, 1], color="C3", scale=30)
    axes[0, 3].set_title(
        f"true motion (peak {np.hypot(*pair.flow.transpose(2, 0, 1)).max():.1f} px)")
    axes[1, 0].imshow(to_rgb(maps["onset_face"])); axes[1, 0].set_title("MTCNN face crop (onset)")
    uv = quantized(maps["flow"], 1e-3)  # px
    lim = np.abs(uv).max()
    for ax, k, name in [(axes[1, 1], 0, "u (x)"), (axes[1, 2], 1, "v (y)")]:
        im = ax.imshow(uv[..., k], cmap="coolwarm", vmin=-lim, vmax=lim)
        ax.set_title(f"{FLOW_NAME} flow {name}, px")
        fig.colorbar(im, ax=ax, fraction=0.046).set_label(f"{name[0]}: displacement (px)")
    im = axes[1, 3].imshow(quantized(maps["strain"], 1e-4), cmap="magma")
    axes[1, 3].set_title("optical strain (eq. 3)")
    fig.colorbar(im, ax=axes[1, 3], fraction=0.046).set_label("strain (no unit: px per px)")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def map_and_regions_figure(maps: dict, mode: str):
    """Steps 3-4 of sections 3.1 and 4.2: the 28x28 map, the four crops, the network input."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from matplotlib.patches import Patch

    from .walkthrough import REGION_COLOURS, mosaic_regions

    m = maps["map"]  # (strain, v, u), as cv2.imread gives the release PNGs
    fig, grid = plt.subplots(2, 4, figsize=(14, 7.6))
    axes = list(grid.flat)
    for ax, k, name in [(axes[0], 2, "u"), (axes[1], 1, "v"), (axes[2], 0, "strain")]:
        ax.imshow(m[..., k], cmap="gray", vmin=0, vmax=255); ax.set_title(f"map: {name} (0..255)")
    axes[3].imshow(m[..., ::-1])
    axes[3].set_title("map as the release PNG\n(RGB = u, v, strain)", fontsize=10)
    names = mosaic_regions()  # the crops' order, that of the mosaic's quadrants
    if mode == "whole":
        for ax in axes[4:6]:
            ax.text(0.5, 0.5, "regions = whole:\nno landmarks", ha="center", va="center")
    else:
        face = (cv2.resize(maps["apex_face"], (28, 28), interpolation=cv2.INTER_AREA)
                if mode == "official" else maps["apex_face"])
        axes[4].imshow(to_rgb(face))
        if maps["landmarks_found"]:
            axes[4].scatter(*maps["landmarks"].T, c="yellow", s=14)
        axes[4].set_title(f"apex face as MTCNN sees it\n({mode} mode)", fontsize=10)
        axes[5].imshow(m[..., ::-1])
        for k, (row, col) in enumerate(maps["centres"]):
            axes[5].add_patch(Rectangle((col - 7.5, row - 7.5), 14, 14, fill=False,
                                        color=REGION_COLOURS[names[k]], lw=2))
        axes[5].set_title("the four crops on the map", fontsize=10)
    axes[6].imshow(maps["input"][..., ::-1])
    for k, name in enumerate(names):  # each quadrant framed in its region's colour
        r, c = divmod(k, 2)
        axes[6].add_patch(Rectangle((c * 14 - 0.5, r * 14 - 0.5), 14, 14, fill=False,
                                    color=REGION_COLOURS[name], lw=2))
    axes[6].set_title("network input (mosaic)", fontsize=10)
    for ax in axes:
        ax.axis("off")
    if mode != "whole":
        axes[7].legend(handles=[Patch(fill=False, edgecolor=REGION_COLOURS[n], lw=2, label=n)
                                for n in names], title="crop (region)", loc="center",
                       fontsize=11, title_fontsize=11)
    fig.tight_layout()
    return fig


def prediction_figure(probs, label: int):
    """Step 5 of section 3.3: the fitted model's probabilities for one synthetic pair."""
    import matplotlib.pyplot as plt

    probs = quantized(probs, 1e-4)  # drawn at a precision every CPU gives
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.barh(CLASSES, probs, color=["C0", "C2", "C1"])
    for k, p in enumerate(probs):
        ax.text(p + 0.01, k, f"{p:.3f}", va="center")
    ax.set_xlim(0, 1.12); ax.set_xlabel("probability")
    ax.set_title(f"synthetic {CLASSES[label]} → predicted {predicted(probs)}")
    fig.tight_layout()
    return fig


def variants(model) -> dict:
    """The fitted model on each synthetic class as made, reversed, mirrored, and on no motion."""
    rng = np.random.default_rng(0)

    def noisy(im):
        return np.clip(im + rng.normal(0, 1.0, im.shape), 0, 255).astype(np.uint8)

    face = synthetic.astronaut_face()
    # what htnet predict answers on two identical frames: below its motion threshold
    still_answer = model.answer(to_bgr(face), to_bgr(face))
    rows, variant_maps, still_flow = [], {}, None
    for lab in range(3):
        field = synthetic.au_field(lab, 224, 1.5)
        cases = {
            "as made": (face, synthetic.warp(face, field)),
            "reversed": (face, synthetic.warp(face, -field)),
            "mirrored left-right": (face[:, ::-1], synthetic.warp(face, field)[:, ::-1]),
            "no motion": (face, face),
            "sensor noise only": (noisy(face), noisy(face)),
        }
        for name, (a, b) in cases.items():
            if lab > 0 and name in ("no motion", "sensor noise only"):
                continue  # the same for every class
            p, mp = model.predict(to_bgr(np.ascontiguousarray(a)),
                                  to_bgr(np.ascontiguousarray(b)), return_maps=True)
            variant_maps[(lab, name)] = mp["map"]
            if name == "no motion":
                still_flow = np.abs(mp["flow"])  # the flow between identical frames
            rows.append({"motion of": "-" if name in ("no motion", "sensor noise only")
                         else CLASSES[lab],
                         "variant": name, **{c: p[k] for k, c in enumerate(CLASSES)},
                         "predicted": predicted(p)})
    return {"table": pd.DataFrame(rows), "maps": variant_maps, "still_flow": still_flow,
            "still_answer": still_answer}


def variant_note(var: dict) -> str:
    """What identical frames and noise alone make of the map (the variants' two null cases)."""
    still, maps = var["still_flow"], var["maps"]
    zero_map = int(maps[(0, "no motion")].max())
    return (f"identical frames: the largest {FLOW_NAME} flow is {to_precision(still.max(), 1e-3)}"
            f" px, the mean {to_precision(still.mean(), 1e-3)} px; the no-motion map spans "
            f"0..{zero_map}"
            f"\nsensor noise only: the map spans {maps[(0, 'sensor noise only')].min()}.."
            f"{maps[(0, 'sensor noise only')].max()}")


def variant_maps_figure(var: dict):
    """The 28x28 maps the fitted model reads for each synthetic variant."""
    import matplotlib.pyplot as plt

    maps = var["maps"]
    cols = 4
    rows = -(-len(maps) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, ((lab, name), mp) in zip(axes.flat, maps.items()):
        ax.imshow(mp[..., ::-1])
        moving = "motion" not in name and "noise" not in name
        ax.set_title(f"{CLASSES[lab] + ', ' if moving else ''}{name}", fontsize=11)
    fig.suptitle("the 28x28 maps the model reads (RGB = u, v, strain)", fontsize=12)
    fig.tight_layout()
    return fig


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps' values (NaN where one is constant)."""
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b))) if (a @ a) * (b @ b) > 0 else float("nan")


def amplitude_sweep(model) -> dict:
    """Probabilities and map correlations of a surprise from -3 to +3 px (section 3.1)."""
    face = synthetic.astronaut_face()
    probs, maps = [], {}
    for a in AMPLITUDES:
        b = synthetic.warp(face, synthetic.au_field(2, 224, a)) if a else face
        p, mp = model.predict(to_bgr(face), to_bgr(b), return_maps=True)
        probs.append(p); maps[a] = mp["map"].astype(float)
    probs = np.array(probs)
    pos = [a for a in AMPLITUDES if a > 0]
    return {"probs": probs, "map_corr": {a: correlation(maps[a], maps[1.5]) for a in pos},
            "spread": float(np.ptp(probs[[AMPLITUDES.index(a) for a in pos]], axis=0).max())}


def amplitude_figure(sweep: dict):
    """Probabilities of the fitted model against the size of a synthetic surprise."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for k, c in enumerate(CLASSES):
        ax.plot(AMPLITUDES, quantized(sweep["probs"][:, k], 1e-4), "o-", label=c)
    ax.axvline(0, color="0.7", lw=0.8)
    ax.set_xlabel("surprise motion, peak displacement (px; negative = reversed)")
    ax.set_ylabel("probability"); ax.set_ylim(0, 1); ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def release_check(model, data) -> dict:
    """``--flow`` on 20 release maps against the forward pass, and training accuracy (4.2)."""
    x_all = regions.network_inputs(data, model.config)
    y_all = data.table["label"].to_numpy()
    train_probs = predict.softmax(model.logits(x_all))
    idx = np.linspace(0, len(data) - 1, 20).astype(int)
    flow_diff = max(float(np.abs(model.predict_map(data.root / data.table.flow_path[i],
                                                   data.root / data.table.apex_path[i])
                                 - train_probs[i]).max()) for i in idx)
    return {"idx": idx, "labels": y_all, "flow_diff": flow_diff,
            "train_acc": float((train_probs.argmax(1) == y_all).mean())}


def release_maps_figure(model, data, check: dict):
    """Four release maps with their labels and the fitted model's ``--flow`` prediction."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(10, 3.0))
    for ax, i in zip(axes, check["idx"][::5]):
        p = model.predict_map(data.flows[i], data.root / data.table.apex_path[i])
        ax.imshow(data.flows[i][..., ::-1]); ax.axis("off")
        ax.set_title(f"{data.table.dataset[i]}, label {CLASSES[check['labels'][i]]}\npredicted "
                     f"{predicted(p)}", fontsize=9)
    fig.tight_layout()
    return fig


def best_time(fn, n: int = 5) -> float:
    """The shortest of ``n`` timed calls of ``fn``, in seconds."""
    times = []
    for _ in range(n):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return min(times)


def predict_timing(model, onset, apex, profile: str, *, stored_dir, out_dir,
                   retime: bool = False) -> dict:
    """Seconds per pair and step: stored under ``stored_dir``, else measured into ``out_dir``."""
    import torch

    name = f"predict_{profile}.json"
    stored = Path(stored_dir) / "timing" / name
    if stored.is_file() and not retime:
        return json.loads(stored.read_text())
    model.predict(onset, apex)  # warm-up
    of, af = flow.crop_face(onset, apex, predict.FACE_SIZE)
    size = model.config.image_size
    measured = {"parts": {
        "MTCNN face crop": best_time(lambda: flow.crop_face(onset, apex, predict.FACE_SIZE)),
        "flow, strain and 28x28 map": best_time(
            lambda: flow.flow_to_map(flow.optical_flow(of, af))),
        "MTCNN landmarks + regions": best_time(
            lambda: regions.image_landmarks(af, model.config.regions))
        if model.config.regions != "whole" else 0.0,
        "network": best_time(lambda: model.logits(np.zeros((1, 3, size, size), np.float32))),
    }, "per_pair": best_time(lambda: model.predict(onset, apex)), "load": os.getloadavg()[0],
        "device": io.device_name(torch.device("cpu")), "git_commit": io.git_commit(),
        "versions": io.versions(), "what": "seconds, best of 5, one torch thread"}
    io.write_json(Path(out_dir) / "timing" / name, measured)
    return measured


def timing_text(measured: dict) -> str:
    """The timing as printed: seconds per step, then the whole pair and the machine's load."""
    timing = pd.Series(measured["parts"], name="seconds (best of 5)").round(4)
    return (f"{timing.to_string()}\nwhole predict per pair: {measured['per_pair']:.3f} s (best "
            f"of 5); load average {measured['load']:.1f} while timing, on {measured['device']}")


def findings_14(model, fitted_now: bool, profile: str, seed: int, probs, var: dict,
                sweep: dict, seq, seq_probs, seq_maps: dict, check: dict,
                measured: dict) -> str:
    """Notebook 14's "What we found" text (sections 3.1-3.3 and 4.2 on synthetic motions)."""
    meta, t = model.meta, model.meta["training"]
    table, still_flow = var["table"], var["still_flow"]
    zero_map = int(var["maps"][(0, "no motion")].max())
    made = table[table.variant == "as made"]
    hits = int((made["motion of"] == made["predicted"]).sum())
    rev = table[table.variant == "reversed"]
    still = table[table.variant == "no motion"].iloc[0]
    noise = table[table.variant == "sensor noise only"].iloc[0]
    map_corr, spread = sweep["map_corr"], sweep["spread"]
    parts, per_pair, load = measured["parts"], measured["per_pair"], measured["load"]
    moves = lambda d: ", ".join(f"{r[0]} → {r[1]}"  # noqa: E731
                                for r in d[["motion of", "predicted"]].itertuples(index=False))
    answer = var["still_answer"]
    command = ("no motion (label null in `--json`)" if answer["no_motion"] else
               f"{answer['label']} (above the threshold)")
    corr_min = min(map_corr, key=map_corr.get)
    lines = [
        f"* **Model.** One {meta['config']['model']} of the `{profile}` profile (seed {seed}) "
        f"fitted on all {meta['n_samples']} release samples, {t['epochs']} epochs, final epoch; "
        f"{'fitted in this run' if fitted_now else 'read back from its model folder'}. Its "
        f"training-set accuracy is {check['train_acc']:.3f}: the samples it learnt, not an "
        f"estimate of accuracy.",
        f"* **Synthetic surprise on the astronaut face:** predicted **{predicted(probs)}** "
        f"(negative {probs[0]:.3f}, positive {probs[1]:.3f}, surprise {probs[2]:.3f}).",
        f"* **The three synthetic classes as made:** {hits} of 3 predicted as their class "
        f"({moves(made)}). Reversed: {moves(rev)}.",
        "* **No motion** (two identical frames) gives " + (
            "an all-zero map (every channel is constant, and the min-max normalisation maps a "
            "constant channel to 0)" if zero_map == 0 else
            f"no all-zero map: {FLOW_NAME} returns a flow of up to "
            f"{to_precision(still_flow.max(), 1e-3)} px between identical frames, and the "
            f"per-channel min-max normalisation stretches that to 0..{zero_map} like a real "
            f"motion")
        + f"; the network predicts {still['predicted']} (p = "
        f"{max(still[c] for c in CLASSES):.3f}); **sensor noise alone** (1 grey level) is "
        f"stretched to the full 0..255 range like a real motion and is predicted "
        f"{noise['predicted']} (p = {max(noise[c] for c in CLASSES):.3f}). The network has no "
        f"'no expression' class: it always gives one of the three. `htnet predict` has one: "
        f"below {answer['motion_threshold_px']} px of mean {FLOW_NAME} motion in the eye and "
        f"mouth regions it answers no motion; on the identical frames the motion it measured "
        f"is {to_precision(answer['motion_px'], 1e-3)} px and it answered {command}.",
        f"* **Size of the motion:** from 0.25 to 3 px the surprise's maps correlate at least "
        f"{map_corr[corr_min]:.3f} with the 1.5 px map (the lowest at {corr_min} px), so the "
        f"map changes with the size; " + (
            f"the largest change of a probability is {to_precision(spread, 1e-3)}: the "
            "prediction does not change with the size. The per-channel min-max normalisation of the "
            "release's maps (`norm` in `STSNet_whole_norm_u_v_os`, reproduced by "
            "`flow.flow_map`) keeps the pattern of a motion and drops its size, so the model "
            "cannot tell a faint expression from a strong one." if spread < 0.05 else
            f"the probabilities change with it, by up to {to_precision(spread, 1e-3)}."),
        f"* **Sequence:** the apex was spotted at frame {seq_maps['apex_index']} (true "
        f"{seq.apex}); predicted {predicted(seq_probs)}.",
        f"* **`--flow` on release maps** equals the network's output on "
        f"`regions.network_inputs` (largest difference {to_precision(check['flow_diff'], 1e-6)} "
        f"over 20 samples: float rounding).",
        f"* **Time:** {per_pair:.2f} s per pair, measured on {measured['device']} (load "
        f"{load:.1f}); the MTCNN steps take "
        f"{parts['MTCNN face crop'] + parts['MTCNN landmarks + regions']:.2f} s of it, the "
        f"network {parts['network'] * 1000:.1f} ms.",
        f"* None of this is accuracy: the release's maps are TV-L1 flow of real faces, these "
        f"are {FLOW_NAME} flow of synthetic bumps on one face. Accuracy is measured with "
        "leave-one-subject-out training in notebooks 04 and 05.",
    ]
    return "\n".join(lines)
