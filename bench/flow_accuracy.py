"""Measured accuracy of optical flow and D&C-RoIs apex spotting on synthetic faces.

Run ``python bench/flow_accuracy.py`` (about three minutes on two idle cores; ``--only 4``
runs section 4 alone).  Prints:

1. median endpoint error (px) of Farneback (the paper's settings) and DIS on the astronaut
   face moved by smooth random fields of at most 2 px, over the whole image and away from
   a 16 px border;
2. the same on action-unit pairs (localised motion of 1.5 px), inside the moving regions,
   with the ratio of estimated to true speed there;
3. how often :func:`htnetlib.data.flow.spot_apex` lands within 2 frames of the true apex, and its
   mean absolute error, for several motion sizes, noise levels and sequence lengths, with
   each apex spotter (``"lbp"``: D&C-RoIs, ``"flow"``: peak optical-flow magnitude);
4. the hit rate of each spotter (within 1 and within 2 frames of the true apex) against
   the apex motion (0.5-4 px) and the time profile (symmetric rise and fall, or fast rise
   and slow decay; :func:`htnetlib.data.synthetic.ramp`);
5. each flow method (TV-L1, the release's; Farneback; DIS): median end-point error on the
   smooth random fields and on the action-unit pairs, and seconds per 224x224 pair;
6. ``motion_px`` (:func:`htnetlib.data.flow.motion_px`, the no-motion measure of
   ``htnet predict``) of still pairs with sensor noise against weak micro-expressions, per
   method: what :data:`htnetlib.predict.NO_MOTION_PX` is chosen from;
7. how far the committed ``cpu`` model's probabilities (results/models/cpu-s0-*) move between
   flow methods on synthetic faces (labels 0-2, several seeds), against TV-L1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from htnetlib.data import flow
from htnetlib.data import synthetic  # noqa: E402

MARGIN = 16


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


def _epe(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.hypot(estimate[..., 0] - truth[..., 0], estimate[..., 1] - truth[..., 1])


def random_field_errors(seeds=range(10)) -> None:
    face = synthetic.astronaut_face(224)
    print("1. smooth random fields, max 2 px, 224x224 astronaut face, %d seeds" % len(seeds))
    print("   method      median EPE (all)   median EPE (16 px border excluded)")
    for method in flow.FLOW_METHODS:
        whole, inner = [], []
        for seed in seeds:
            truth = synthetic.random_smooth_field(224, max_disp=2.0, seed=seed)
            error = _epe(flow.optical_flow(_bgr(face), _bgr(synthetic.warp(face, truth)), method), truth)
            whole.append(np.median(error))
            inner.append(np.median(error[MARGIN:-MARGIN, MARGIN:-MARGIN]))
        print(f"   {method:<10}  {np.mean(whole):.3f} px           {np.mean(inner):.3f} px"
              f"   (worst seed {max(inner):.3f})")


def au_pair_errors(seeds=range(6)) -> None:
    print("2. action-unit pairs (amplitude 1.5 px), inside regions moving > half the peak")
    print("   method      median EPE   estimated / true speed")
    for method in flow.FLOW_METHODS:
        errors, ratios = [], []
        for seed in seeds:
            pair = synthetic.make_pair(seed % 3, amplitude=1.5, seed=seed)
            estimate = flow.optical_flow(_bgr(pair.onset), _bgr(pair.apex), method)
            speed = np.hypot(pair.flow[..., 0], pair.flow[..., 1])
            moving = speed > 0.5 * speed.max()
            errors.append(np.median(_epe(estimate, pair.flow)[moving]))
            estimated_speed = np.hypot(estimate[..., 0], estimate[..., 1])
            ratios.append(np.median(estimated_speed[moving]) / np.median(speed[moving]))
        print(f"   {method:<10}  {np.mean(errors):.3f} px     {np.mean(ratios):.2f}")


def _spot_errors(sequences, method: str) -> np.ndarray:
    """|spotted - true apex| per sequence, with the true landmarks of the synthetic face."""
    landmarks = synthetic.face_landmarks()
    return np.array([abs(flow.spot_apex(frames, landmarks, method=method) - apex)
                     for frames, apex in sequences])


def _sequences(n, lengths, noise, amplitude, profile="symmetric"):
    """(BGR frames, true apex) of n synthetic sequences, the 3 classes in turn."""
    out = []
    for seed in range(n):
        seq = synthetic.make_sequence(seed % 3, n_frames=lengths[seed % len(lengths)], seed=seed,
                                      noise=noise, amplitude=amplitude, profile=profile)
        out.append(([_bgr(f) for f in seq.frames], seq.apex))
    return out


def apex_spotting(n_sequences: int = 40) -> None:
    print(f"3. apex spotting, {n_sequences} sequences per row (3 classes), true landmarks")
    print("   amplitude  noise  frames     method   within 2 frames   mean |error|")
    settings = [
        (1.5, 0.5, (10, 12, 14, 16)),  # the unit test's setting
        (1.5, 1.0, (10, 12, 14, 16)),
        (1.5, 0.5, (20, 25, 30)),
        (3.0, 1.0, (20, 25, 30)),
    ]
    for amplitude, noise, lengths in settings:
        sequences = _sequences(n_sequences, lengths, noise, amplitude)
        for method in flow.APEX_METHODS:
            errors = _spot_errors(sequences, method)
            span = f"{min(lengths)}-{max(lengths)}"
            print(f"   {amplitude:>5.1f} px   {noise:>4.1f}   {span:<9}  {method:<6}   "
                  f"{np.mean(errors <= 2):>6.0%}            {errors.mean():.2f} frames")


AMPLITUDES = (0.5, 1.0, 2.0, 3.0, 4.0)


def apex_against_amplitude(n_sequences: int = 15, noise: float = 1.0) -> None:
    lengths = (16, 20, 24, 30)
    print(f"4. apex spotting against motion: % of {n_sequences} sequences within 1 / within 2 "
          f"frames of the apex\n   (3 classes, {min(lengths)}-{max(lengths)} frames, noise "
          f"{noise} grey level, true landmarks; amplitude = peak action-unit motion)")
    print("   profile      method" + "".join(f"{a:>7g} px" for a in AMPLITUDES))
    for profile in synthetic.PROFILES:
        errors = {method: [] for method in flow.APEX_METHODS}
        for amplitude in AMPLITUDES:
            sequences = _sequences(n_sequences, lengths, noise, amplitude, profile)
            for method in flow.APEX_METHODS:
                errors[method].append(_spot_errors(sequences, method))
        for method, rows in errors.items():
            cells = "".join(f" {np.mean(e <= 1):>4.0%}/{np.mean(e <= 2):<4.0%}" for e in rows)
            print(f"   {profile:<11}  {method:<6} {cells}")


def flow_methods(seeds=range(6)) -> None:
    print(f"5. flow methods: median EPE (px, 16 px border excluded) and seconds per 224x224 pair,"
          f" {len(seeds)} seeds")
    print("   method      random field   action units (moving)   seconds per pair")
    face = synthetic.astronaut_face(224)
    for method in flow.FLOW_METHODS:
        field, au, times = [], [], []
        for seed in seeds:
            truth = synthetic.random_smooth_field(224, max_disp=2.0, seed=seed)
            a, b = _bgr(face), _bgr(synthetic.warp(face, truth))
            start = time.perf_counter()
            estimate = flow.optical_flow(a, b, method)
            times.append(time.perf_counter() - start)
            field.append(np.median(_epe(estimate, truth)[MARGIN:-MARGIN, MARGIN:-MARGIN]))
            pair = synthetic.make_pair(seed % 3, amplitude=1.5, seed=seed)
            speed = np.hypot(pair.flow[..., 0], pair.flow[..., 1])
            moving = speed > 0.5 * speed.max()
            estimate = flow.optical_flow(_bgr(pair.onset), _bgr(pair.apex), method)
            au.append(np.median(_epe(estimate, pair.flow)[moving]))
        print(f"   {method:<10}  {np.mean(field):.3f}          {np.mean(au):.3f}"
              f"                   {np.median(times):.3f}")


STILL = ((0.0, 0.5), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0))  # (amplitude px, noise grey levels)
WEAK = ((0.25, 1.0), (0.5, 1.0), (0.5, 2.0), (1.0, 1.0))


def _motion(amplitude: float, noise: float, method: str, seeds) -> list[float]:
    """motion_px as htnet predict measures it: MTCNN crop, flow, landmarks on the apex face."""
    from htnetlib.data.preprocess import FACE_SIZE

    out = []
    for seed in seeds:
        pair = synthetic.make_pair(seed % 3, amplitude=amplitude, seed=seed, noise=noise)
        a, b = flow.crop_face(_bgr(pair.onset), _bgr(pair.apex), FACE_SIZE)
        out.append(flow.motion_px(flow.optical_flow(a, b, method), flow.detect_landmarks(b)))
    return out


def no_motion(seeds=range(6)) -> None:
    from htnetlib.predict import NO_MOTION_PX

    print(f"6. motion_px (px at the 224x224 face, eye and mouth ROIs), min / mean / max of "
          f"{len(seeds)} seeds")
    print("   method      amplitude  noise   motion_px               threshold")
    for method in flow.FLOW_METHODS:
        for amplitude, noise in STILL + WEAK:
            m = _motion(amplitude, noise, method, seeds)
            kind = "still" if amplitude == 0 else f"{amplitude:g} px"
            print(f"   {method:<10}  {kind:<9}  {noise:>4g}    {min(m):.3f} / {np.mean(m):.3f} / "
                  f"{max(m):.3f}     {NO_MOTION_PX[method]}")


def probability_shift(seeds=range(5), amplitudes=(0.5, 1.5)) -> None:
    from htnetlib.data.preprocess import FACE_SIZE, MAP_SIZE
    from htnetlib.predict import STORED_MODELS, Model

    folder = sorted(STORED_MODELS.glob("cpu-s0-*/"))[0]
    model = Model.load(folder)
    print(f"7. {folder.name}: probabilities by flow method on synthetic pairs (labels 0-2 x "
          f"{len(seeds)} seeds, noise 1 grey level), against TV-L1")
    print("   amplitude  method      mean |p - p_tvl1|   max   class differs   class = label")
    for amplitude in amplitudes:
        probs = {m: [] for m in flow.FLOW_METHODS}
        labels = []
        for label in (0, 1, 2):
            for seed in seeds:
                pair = synthetic.make_pair(label, amplitude=amplitude, seed=seed, noise=1.0)
                a, b = flow.crop_face(_bgr(pair.onset), _bgr(pair.apex), FACE_SIZE)
                labels.append(label)
                for method in flow.FLOW_METHODS:
                    uv = flow.optical_flow(a, b, method)
                    map28 = np.ascontiguousarray(flow.flow_to_map(uv, MAP_SIZE)[..., ::-1])
                    probs[method].append(model.predict_map(map28, b))
        probs = {m: np.array(p) for m, p in probs.items()}
        labels = np.array(labels)
        for method, p in probs.items():
            diff = np.abs(p - probs["tvl1"])
            differs = int(np.sum(p.argmax(1) != probs["tvl1"].argmax(1)))
            print(f"   {amplitude:>5g} px   {method:<10}  {diff.mean():.3f}               "
                  f"{diff.max():.3f}   {differs} of {len(p)}         "
                  f"{np.mean(p.argmax(1) == labels):.0%}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, choices=range(1, 8), help="run one section")
    sections = (random_field_errors, au_pair_errors, apex_spotting, apex_against_amplitude,
                flow_methods, no_motion, probability_shift)
    only = parser.parse_args(argv).only
    start = time.time()
    for number, section in enumerate(sections, 1):
        if only in (None, number):
            section()
    print(f"({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
