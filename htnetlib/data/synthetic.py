"""Synthetic micro-expressions with known optical flow and known apex.

No licensed dataset may be used in tests, so this module makes stand-ins from the
public-domain astronaut portrait shipped with scikit-image (``skimage.data.astronaut()``).
A micro-expression is modelled as a small, smooth displacement field made of bumps placed
at fixed facial positions, shaped like the facial action units (AUs) that define the three
classes of the composite benchmark (paper section 4.1):

========  =====  ================================================================
label     class  action units imitated
========  =====  ================================================================
0         neg.   AU4 brow lowerer (inner brows down and together) + AU15 lip-corner
                 depressor (mouth corners down)
1         pos.   AU12 lip-corner puller (corners out and up) + AU6 cheek raiser
2         surp.  AU1+AU2 inner and outer brow raiser (brows up) + AU26 jaw drop
========  =====  ================================================================

Flow convention (the same as :func:`htnetlib.data.flow.optical_flow`): a field ``flow`` of shape
(H, W, 2) holds (u, v) = (x, y) displacements in pixels, and the onset pixel at p is found
in the apex at ``p + flow(p)``.

Each bump has the profile ``(1 - r^2/R^2)^3`` for ``r < R`` and 0 outside: Gaussian-like,
smooth, and exactly zero away from the action-unit regions.  ``amplitude`` is the peak
displacement of a bump in pixels (at any image size).

Public functions: :func:`astronaut_face`, :func:`face_landmarks`, :func:`au_field`,
:func:`random_smooth_field`, :func:`warp`, :func:`make_pair`, :func:`ramp`,
:func:`make_sequence`, and :func:`write_cohort`, a whole synthetic composite benchmark in the
release's layout for the lab (notebooks 01-04 without the licensed release).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

__all__ = [
    "LABELS",
    "PROFILES",
    "Pair",
    "Sequence",
    "COHORT",
    "astronaut_face",
    "au_field",
    "face_landmarks",
    "make_pair",
    "make_sequence",
    "random_smooth_field",
    "ramp",
    "warp",
    "write_cohort",
]

#: Class names of the composite benchmark, indexed by label.
LABELS = ("negative", "positive", "surprise")

# Face crop (x0, y0, x1, y1) inside the 512x512 astronaut image.
_FACE_BOX = (144, 37, 304, 197)

# MTCNN's five landmarks (left eye, right eye, nose, left and right mouth corner), as (x, y),
# measured once on the 224x224 face returned by astronaut_face().
_LANDMARKS_224 = np.array(
    [[85.2, 89.5], [144.2, 91.9], [113.4, 129.6], [79.8, 144.1], [142.3, 147.1]],
    dtype=np.float32,
)

# Action-unit bumps per label: (centre x, centre y, direction x, direction y, gain, radius),
# centres and radius as fractions of the image side, direction a unit-ish vector.
_BUMPS = {
    0: (  # AU4 brow lowerer + AU15 lip-corner depressor
        (0.45, 0.32, 0.5, 0.87, 1.0, 0.09),
        (0.57, 0.33, -0.5, 0.87, 1.0, 0.09),
        (0.356, 0.645, -0.2, 0.98, 0.9, 0.08),
        (0.635, 0.657, 0.2, 0.98, 0.9, 0.08),
    ),
    1: (  # AU12 lip-corner puller + AU6 cheek raiser
        (0.356, 0.643, -0.6, -0.8, 1.0, 0.09),
        (0.635, 0.657, 0.6, -0.8, 1.0, 0.09),
        (0.36, 0.53, 0.0, -1.0, 0.4, 0.08),
        (0.64, 0.54, 0.0, -1.0, 0.4, 0.08),
    ),
    2: (  # AU1 + AU2 brow raisers + AU26 jaw drop
        (0.31, 0.31, 0.0, -1.0, 1.0, 0.08),
        (0.45, 0.32, 0.0, -1.0, 1.0, 0.08),
        (0.57, 0.33, 0.0, -1.0, 1.0, 0.08),
        (0.71, 0.32, 0.0, -1.0, 1.0, 0.08),
        (0.50, 0.76, 0.0, 1.0, 1.0, 0.12),
    ),
}


@dataclass
class Pair:
    """An onset/apex pair with its true flow (onset(p) matches apex(p + flow(p)))."""

    onset: np.ndarray  # (H, W, 3) uint8 RGB
    apex: np.ndarray  # (H, W, 3) uint8 RGB
    flow: np.ndarray  # (H, W, 2) float32, (u, v) in pixels
    label: int


@dataclass
class Sequence:
    """A frame sequence: frame 0 is the onset, ``frames[apex]`` carries ``flow`` in full."""

    frames: list  # n_frames arrays (H, W, 3) uint8 RGB
    apex: int  # index of the apex frame
    flow: np.ndarray  # (H, W, 2) float32, true onset-to-apex flow
    label: int
    weights: np.ndarray  # (n_frames,) fraction of ``flow`` applied to each frame


@lru_cache(maxsize=8)
def _face(size: int) -> np.ndarray:
    from skimage import data

    x0, y0, x1, y1 = _FACE_BOX
    face = data.astronaut()[y0:y1, x0:x1]
    face = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
    face.setflags(write=False)
    return face


def astronaut_face(size: int = 224) -> np.ndarray:
    """The astronaut's face (public domain, scikit-image) as uint8 RGB (size, size, 3)."""
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    return _face(int(size)).copy()


def face_landmarks(size: int = 224) -> np.ndarray:
    """MTCNN-style 5 landmarks (left eye, right eye, nose, mouth left, mouth right) as (x, y)."""
    return _LANDMARKS_224 * (size / 224.0)


def _bump(size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """Compactly supported smooth bump (1 - r^2/R^2)^3, 1 at the centre, 0 beyond R (pixels)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (radius**2)
    return np.where(r2 < 1.0, (1.0 - r2) ** 3, 0.0).astype(np.float32)


def au_field(
    label: int,
    size: int = 224,
    amplitude: float = 1.5,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Displacement field (size, size, 2) float32 of the action units of ``label``.

    With ``rng`` None the field is the canonical one; with a generator each bump's gain is
    scaled by U(0.75, 1.25), its direction turned by U(-15, 15) degrees and its centre moved
    by N(0, 1 %) of the side, so different seeds give different expressions of one class.
    """
    if label not in _BUMPS:
        raise ValueError(f"label must be 0 (negative), 1 (positive) or 2 (surprise), got {label!r}")
    field = np.zeros((size, size, 2), dtype=np.float32)
    for cx, cy, dx, dy, gain, radius in _BUMPS[label]:
        if rng is not None:
            gain = gain * rng.uniform(0.75, 1.25)
            angle = np.deg2rad(rng.uniform(-15.0, 15.0))
            dx, dy = (dx * np.cos(angle) - dy * np.sin(angle), dx * np.sin(angle) + dy * np.cos(angle))
            cx = cx + rng.normal(0.0, 0.01)
            cy = cy + rng.normal(0.0, 0.01)
        norm = float(np.hypot(dx, dy))
        weight = _bump(size, cx * size, cy * size, radius * size) * (amplitude * gain / norm)
        field[..., 0] += weight * dx
        field[..., 1] += weight * dy
    return field


def random_smooth_field(size: int, max_disp: float = 2.0, seed: int = 0) -> np.ndarray:
    """Smooth random field (size, size, 2) float32 whose largest displacement is ``max_disp``.

    A 6x6 grid of uniform random vectors is upsampled with bicubic interpolation, then scaled
    so that the largest displacement magnitude equals ``max_disp`` pixels.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1.0, 1.0, size=(6, 6, 2)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    peak = float(np.hypot(field[..., 0], field[..., 1]).max())
    return (field * (max_disp / peak)).astype(np.float32)


def warp(image: np.ndarray, flow: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Move the content of ``image`` by ``flow``: result(p + flow(p)) ~= image(p).

    Backward warping: each output pixel q samples ``image`` at the point p with
    p + flow(p) = q.  That inverse is found by the fixed-point iteration
    p <- q - flow(p), started at p = q - flow(q); for small smooth fields (gradient well below
    1) three iterations leave an error far below 0.01 px.  Sampling is bicubic with
    reflected borders; the result has the dtype of ``image``.
    """
    if flow.shape[:2] != image.shape[:2] or flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow shape {flow.shape} does not fit image shape {image.shape}")
    h, w = flow.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    fu = np.ascontiguousarray(flow[..., 0], dtype=np.float32)
    fv = np.ascontiguousarray(flow[..., 1], dtype=np.float32)
    px, py = gx - fu, gy - fv
    for _ in range(iterations):
        su = cv2.remap(fu, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        sv = cv2.remap(fv, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        px, py = gx - su, gy - sv
    return cv2.remap(image, px, py, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)


def _add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    if sigma <= 0:
        return image
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def make_pair(
    label: int,
    size: int = 224,
    amplitude: float = 1.5,
    seed: int = 0,
    noise: float = 0.0,
) -> Pair:
    """An onset face and its apex moved by a random field of class ``label``.

    ``noise`` is the standard deviation (grey levels) of Gaussian sensor noise added to both
    images independently.
    """
    rng = np.random.default_rng(seed)
    onset = astronaut_face(size)
    flow = au_field(label, size, amplitude, rng)
    apex = warp(onset, flow)
    return Pair(_add_noise(onset, noise, rng), _add_noise(apex, noise, rng), flow, label)


#: Expression time profiles offered by :func:`ramp` and :func:`make_sequence`.
PROFILES = ("symmetric", "asymmetric")


def ramp(n_frames: int, apex: int, profile: str = "symmetric") -> np.ndarray:
    """Fraction of the apex displacement per frame: 0 at frame 0, 1 at ``apex``, 0 at the end.

    Both profiles rise as the raised cosine sin^2(pi/2 k/apex) up to the apex.  After it,
    with t = (k - apex) / (n_frames - 1 - apex) running from 0 to 1:

    * ``"symmetric"`` falls as cos^2(pi/2 t);
    * ``"asymmetric"`` falls as cos(pi/2 t), a slower decay that stays above the symmetric
      one everywhere and is twice as flat next to the apex (together with an early apex,
      see :func:`make_sequence`, the fast-rise/slow-decay shape of many micro-expressions).

    The last frame stays at 1 when the apex is the last frame.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    k = np.arange(n_frames, dtype=np.float64)
    w = np.sin(0.5 * np.pi * np.minimum(k, apex) / apex) ** 2
    if apex < n_frames - 1:
        fall = np.cos(0.5 * np.pi * (k - apex) / (n_frames - 1 - apex))
        w = np.where(k > apex, fall**2 if profile == "symmetric" else fall, w)
    return w


def make_sequence(
    label: int,
    n_frames: int = 30,
    apex: int | None = None,
    seed: int = 0,
    noise: float = 1.0,
    size: int = 224,
    amplitude: float = 1.5,
    profile: str = "symmetric",
) -> Sequence:
    """A sequence onset -> apex -> back to neutral, with sensor noise on every frame.

    Frame k shows the face moved by ``ramp(n_frames, apex, profile)[k] * flow`` (see
    :func:`ramp`), plus independent Gaussian noise of standard deviation ``noise`` grey
    levels.  The motion sits at the action units of ``label`` (brows, mouth corners, jaw:
    inside the eye and mouth ROIs of :func:`htnetlib.data.flow.roi_boxes`), each bump peaking at
    ``amplitude`` times its gain (see :func:`au_field`) pixels in the apex frame.

    ``apex`` None draws it with the seed, uniformly from [n_frames // 4, 3 * n_frames // 4]
    for the symmetric profile and from [n_frames // 6, n_frames // 3] (fast rise, a decay
    two to five times longer) for the asymmetric one.
    """
    if n_frames < 2:
        raise ValueError(f"a sequence needs at least 2 frames, got n_frames={n_frames}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    rng = np.random.default_rng(seed)
    if apex is None:
        if profile == "symmetric":
            lo, hi = n_frames // 4, 3 * n_frames // 4
        else:
            lo, hi = n_frames // 6, n_frames // 3
        apex = int(rng.integers(max(1, lo), max(2, hi + 1)))
    if not 1 <= apex < n_frames:
        raise ValueError(f"apex must lie in 1..{n_frames - 1}, got {apex}")
    face = astronaut_face(size)
    flow = au_field(label, size, amplitude, rng)
    weights = ramp(n_frames, apex, profile)
    frames = [_add_noise(warp(face, flow * np.float32(w)), noise, rng) for w in weights]
    return Sequence(frames, int(apex), flow, label, weights.astype(np.float32))


# --------------------------------------------------------------------------- synthetic cohort

#: The lab's synthetic cohort: subjects per dataset, samples per subject (low, high), the class
#: probabilities (negative is the majority, as in the release's Table 1), the seed, and a version
#: raised whenever write_cohort makes other files (a folder with an older mark is written again).
COHORT = {"subjects": {"smic": 6, "casme2": 6, "samm": 6}, "samples": (8, 14),
          "class_p": (0.5, 0.25, 0.25), "seed": 0, "version": 2}
COHORT_MARK = "cohort.json"


def _subject_face(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """The astronaut face as one made-up subject: mirrored or not, shifted, scaled, brighter or
    darker. Only one public-domain face is at hand, so subjects differ by these and by how they
    move (:func:`write_cohort`)."""
    face = astronaut_face(size)
    if rng.random() < 0.5:
        face = face[:, ::-1]
    scale = rng.uniform(0.92, 1.08)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-4, 4), scale)
    m[:, 2] += rng.uniform(-6, 6, 2)
    face = cv2.warpAffine(np.ascontiguousarray(face), m, (size, size),
                          borderMode=cv2.BORDER_REFLECT101)
    return np.clip(face.astype(np.float32) * rng.uniform(0.8, 1.15), 0, 255).astype(np.uint8)


def cohort_sample(face: np.ndarray, label: int, style: dict, rng: np.random.Generator):
    """One sample of a cohort subject: (onset, apex, true flow).

    The apex carries the class's action units at the subject's amplitude (varied per sample),
    part of another class's action units (``style["mix"]``: subjects express differently, so
    leave-one-subject-out is not trivial), a smooth head movement and sensor noise."""
    size = face.shape[0]
    amp = style["amplitude"] * rng.uniform(0.7, 1.3)
    field = au_field(label, size, amp, rng)
    other = int(rng.choice([c for c in range(3) if c != label]))
    field += rng.uniform(0.0, style["mix"]) * au_field(other, size, amp, rng)
    field += random_smooth_field(size, rng.uniform(0.2, 1.0) * style["head"],
                                 seed=int(rng.integers(2**31)))
    onset = _add_noise(face, style["noise"], rng)
    apex = _add_noise(warp(face, field), style["noise"], rng)
    return onset, apex, field


def write_cohort(root, *, cohort: dict | None = None) -> "Path":
    """Write the synthetic cohort into ``root`` in the release's layout and return ``root``.

    Each subject is the public-domain astronaut face moved as in :func:`_subject_face`, with its
    own amplitude (0.5-1.5 px), share of another class's movement (up to 0.3-0.8), head
    movement (up to 0.3-1.2 px) and sensor noise (1-3 grey levels). Each sample's 28x28 map is
    the Farneback flow of its onset and apex with the optical strain (:func:`~htnetlib.data.flow.
    flow_map`), written as the release writes it; its apex face is a 224x224 JPEG. The folder
    is written beside ``root`` and renamed into place, and ``cohort.json`` (the parameters)
    marks it complete: a folder with another or no mark is written again.
    """
    import json
    import shutil
    import tempfile
    from pathlib import Path

    import pandas as pd

    from . import flow as flowlib
    from .release import APEX_DIR, CSV_NAME, FLOW_DIR

    cohort = dict(COHORT if cohort is None else cohort)
    root = Path(root)
    mark = root / COHORT_MARK
    wanted = json.dumps(cohort, sort_keys=True)
    if mark.is_file() and mark.read_text() == wanted:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        (tmp / FLOW_DIR).mkdir(parents=True)
        (tmp / APEX_DIR).mkdir(parents=True)
        rng = np.random.default_rng(cohort["seed"])
        rows = []
        for ds, n_sub in cohort["subjects"].items():
            for s in range(n_sub):
                sub = {"smic": f"s{s + 1:02d}", "casme2": f"sub{s + 1:02d}",
                       "samm": f"{101 + s:03d}"}.get(ds, f"{ds}{s + 1:02d}")
                face = _subject_face(rng)
                style = {"amplitude": rng.uniform(0.4, 1.2), "mix": rng.uniform(0.5, 1.0),
                         "head": rng.uniform(0.6, 1.8), "noise": rng.uniform(1.0, 4.0)}
                lo, hi = cohort["samples"]
                labels = rng.choice(3, size=int(rng.integers(lo, hi + 1)), p=cohort["class_p"])
                for j, label in enumerate(labels):
                    onset, apex, _ = cohort_sample(face, int(label), style, rng)
                    name = f"ep{j + 1:02d}"
                    m = flowlib.flow_map(onset, apex, method="farneback")  # (u, v, strain)
                    cv2.imwrite(str(tmp / FLOW_DIR / f"{sub}_{name} .png"), m[..., ::-1])
                    cv2.imwrite(str(tmp / APEX_DIR / f"{sub}_{name}.jpg"),
                                cv2.cvtColor(apex, cv2.COLOR_RGB2BGR))
                    rows.append({"dataset": ds, "sub": sub, "filename_o": name,
                                 "label": int(label), "apex": "", "imagename": f"{sub}_{name}.jpg",
                                 "sub_filename": ""})
        pd.DataFrame(rows).to_csv(tmp / CSV_NAME, index=False)
        (tmp / COHORT_MARK).write_text(wanted)
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
        try:
            tmp.rename(root)
        except OSError:  # another process put a cohort there meanwhile
            if not (mark.is_file() and mark.read_text() == wanted):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
