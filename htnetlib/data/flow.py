"""Optical flow, optical strain, flow maps, apex spotting and face crops (paper 3.1 and 4.2).

* :func:`optical_flow` -- the onset-to-apex flow V = (u, v) of eq. 2: TV-L1 (the release's
  method), Gunnar Farneback's algorithm as section 4.2 names it, or OpenCV's DIS.
* :func:`optical_strain` -- the strain magnitude V_z of eq. 3.
* :func:`flow_map` -- the 28x28x3 (u, v, strain) map fed to HTNet (section 4.2), in the
  layout of the official release (``STSNet_whole_norm_u_v_os``).
* :func:`spot_apex` -- apex spotting where a dataset annotates no apex (SMIC, section 4.2):
  D&C-RoIs (eq. 1; Liong et al., ACPR 2015), or the peak of the optical-flow magnitude in the
  same ROIs.
* :func:`crop_face` -- MTCNN face crop applied alike to onset and apex.
* :func:`motion_px` -- how much moved: the mean flow magnitude in the eye and mouth ROIs.

Images are numpy arrays in OpenCV's conventions: uint8, grey (H, W) or BGR (H, W, 3).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from ..errors import DataError, one_line, out_of_memory

__all__ = [
    "APEX_METHODS",
    "FALLBACK_ROIS",
    "FLOW_METHODS",
    "apex_differences",
    "crop_face",
    "detect_landmarks",
    "divide_and_conquer",
    "eye_distance",
    "face_detector",
    "motion_px",
    "nms_ties_by_index",
    "flow_differences",
    "flow_map",
    "flow_to_map",
    "optical_flow",
    "optical_strain",
    "roi_boxes",
    "spot_apex",
]

#: Flow methods offered by :func:`optical_flow`: TV-L1 (the official release's maps), Farneback
#: (section 4.2's name) and DIS.
FLOW_METHODS = ("tvl1", "farneback", "dis")

#: Apex spotters offered by :func:`spot_apex`.
APEX_METHODS = ("lbp", "flow")

# Farneback parameters of the paper's preprocessing (pyr_scale, levels, winsize, iterations,
# poly_n, poly_sigma, flags).
_FARNEBACK = dict(
    pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0
)


def _to_gray(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got dtype {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    raise ValueError(f"{name} must be grey (H, W) or BGR (H, W, 3), got shape {image.shape}")


def optical_flow(onset: np.ndarray, apex: np.ndarray, method: str = "farneback") -> np.ndarray:
    """Dense optical flow from ``onset`` to ``apex`` (eq. 2), float32 (H, W, 2) = (u, v).

    The flow satisfies onset(p) ~= apex(p + flow(p)); u is the displacement along x (columns)
    and v along y (rows), in pixels.  Inputs are uint8 grey or BGR images of equal size
    (colour is converted to grey).

    Methods:
      * ``"tvl1"`` -- TV-L1 (Zach, Pock and Bischof 2007; Wedel et al. 2009), the method the
        official composite release (``STSNet_whole_norm_u_v_os``) was made with, so the maps
        the models learn from: ``skimage.registration.optical_flow_tvl1`` with its defaults
        on the grey images scaled to 0..1.  OpenCV's TV-L1 (``cv2.optflow``) is in
        opencv-contrib only, not in opencv-python-headless.  skimage returns (v, u), rows
        then columns, with reference(p) ~= moving(p + flow(p)): reordered here to (u, v).
        About 0.4 s per 224x224 pair on one core (Farneback 0.017 s, DIS 0.007 s).
      * ``"farneback"`` -- Gunnar Farneback's algorithm, as named in the paper (section 4.2):
        ``cv2.calcOpticalFlowFarneback`` with pyr_scale 0.5, levels 3, winsize 15,
        iterations 3, poly_n 5, poly_sigma 1.2, flags 0.
      * ``"dis"`` -- OpenCV's Dense Inverse Search (``cv2.DISOpticalFlow_create``, medium
        preset), a fast alternative for comparison.

    bench/RESULTS.md ("Optical flow methods") gives each one's end-point error and time.
    """
    a = np.ascontiguousarray(_to_gray(onset, "onset"))
    b = np.ascontiguousarray(_to_gray(apex, "apex"))
    if a.shape != b.shape:
        raise ValueError(f"onset and apex differ in size: {a.shape} vs {b.shape}")
    if method == "tvl1":
        from skimage.registration import optical_flow_tvl1

        v, u = optical_flow_tvl1(a.astype(np.float32) / 255.0, b.astype(np.float32) / 255.0)
        flow = np.stack([u, v], axis=-1)
    elif method == "farneback":
        flow = cv2.calcOpticalFlowFarneback(a, b, None, **_FARNEBACK)
    elif method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flow = dis.calc(a, b, None)
    else:
        raise ValueError(f"unknown optical flow method {method!r}; choose one of {FLOW_METHODS}")
    return np.asarray(flow, dtype=np.float32)


def optical_strain(flow: np.ndarray) -> np.ndarray:
    """Optical strain magnitude (eq. 3), float32 (H, W).

    strain = sqrt(u_x^2 + v_y^2 + 0.5 * (u_y + v_x)^2), with u = flow[..., 0],
    v = flow[..., 1], x the column axis and y the row axis; derivatives are central
    differences with unit spacing (``np.gradient``; one-sided at the border).  This is the
    norm of the symmetric strain tensor, eps_xx^2 + eps_yy^2 + 2 eps_xy^2 with
    eps_xy = (u_y + v_x) / 2.  Eq. 3 as printed in the paper puts the squares on the flow
    components inside the derivatives and leaves the sum of the shear terms unsquared; the
    definition used here is the established one of the optical-strain literature.
    """
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must have shape (H, W, 2), got {flow.shape}")
    u_y, u_x = np.gradient(flow[..., 0])
    v_y, v_x = np.gradient(flow[..., 1])
    strain = np.sqrt(u_x**2 + v_y**2 + 0.5 * (u_y + v_x) ** 2)
    return strain.astype(np.float32)


def _minmax_uint8(channel: np.ndarray) -> np.ndarray:
    lo, hi = float(channel.min()), float(channel.max())
    if not hi > lo:  # constant channel (or NaN): no contrast to stretch
        return np.zeros(channel.shape, dtype=np.uint8)
    scaled = (channel - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def flow_to_map(flow: np.ndarray, size: int = 28) -> np.ndarray:
    """(u, v, strain) map of a flow field, uint8 (size, size, 3); see :func:`flow_map`."""
    flow = np.asarray(flow, dtype=np.float32)
    channels = (flow[..., 0], flow[..., 1], optical_strain(flow))
    out = []
    for channel in channels:
        small = cv2.resize(np.ascontiguousarray(channel), (size, size), interpolation=cv2.INTER_AREA)
        out.append(_minmax_uint8(small))
    return np.stack(out, axis=-1)


def flow_map(
    onset: np.ndarray, apex: np.ndarray, size: int = 28, method: str = "farneback"
) -> np.ndarray:
    """The flow map V_m = [V_x, V_y, V_z] of section 3.1 as uint8 (size, size, 3).

    Channels in memory are (u, v, strain).  Each channel is resized to size x size with
    ``cv2.INTER_AREA`` and then min-max normalised to 0..255 (a constant channel becomes 0).
    Normalising after the resize reproduces the official release, whose every channel holds
    both 0 and 255.  The release's PNG files hold (u, v, strain) as their RGB channels, so
    ``cv2.imread`` (BGR) of a release map gives (strain, v, u); ``htnet preprocess`` writes
    ``map[..., ::-1]`` with OpenCV to match.
    """
    return flow_to_map(optical_flow(onset, apex, method), size)


# --------------------------------------------------------------------------------------
# Face detection (MTCNN, facenet-pytorch)

_DETECTOR = None
_DETECTOR_LOCK = threading.Lock()


def face_detector():
    """The process-wide MTCNN (select_largest=True, post_process=False, CPU), made once, with
    its last non-maximum suppression breaking score ties by index (:func:`nms_ties_by_index`)."""
    global _DETECTOR
    with _DETECTOR_LOCK:
        if _DETECTOR is None:
            from facenet_pytorch import MTCNN
            from facenet_pytorch.models.utils import detect_face

            # facenet-pytorch's output-stage NMS orders the scores with np.argsort, whose order
            # of equal scores (ONet's probabilities saturate at 1.0) follows NumPy's sort
            # kernel: AVX-512 and SSE CPUs kept other boxes for 5 of the release's faces
            # (corrected mode, up to 61 px apart). The same greedy rule with ties broken by
            # index keeps the same box on every CPU.
            detect_face.nms_numpy = nms_ties_by_index
            _DETECTOR = MTCNN(select_largest=True, post_process=False, device="cpu")
        return _DETECTOR


def nms_ties_by_index(boxes: np.ndarray, scores: np.ndarray, threshold: float,
                      method: str) -> np.ndarray:
    """Greedy non-maximum suppression, the rule of MTCNN's output stage: take the box of the
    highest score (of equal scores, the one listed last), drop every box whose overlap with it
    is above ``threshold`` (intersection over the smaller box for ``"Min"``, over the union
    otherwise; pixel-inclusive widths, ``x2 - x1 + 1``), repeat. The order is a stable sort,
    so the result is the same on every CPU. Returns the kept indices in the order taken."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.empty((0,), dtype=np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(np.asarray(scores), kind="stable")[::-1]  # ties: last listed first
    kept = []
    while order.size:
        i, rest = order[0], order[1:]
        kept.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        base = np.minimum(area[i], area[rest]) if method == "Min" else \
            area[i] + area[rest] - inter
        order = rest[inter / base <= threshold]
    return np.asarray(kept, dtype=np.int64)


def _to_rgb(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got dtype {image.dtype}")
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[..., None], 3, axis=2))
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image[..., ::-1])
    raise ValueError(f"{name} must be grey (H, W) or BGR (H, W, 3), got shape {image.shape}")


def detect_faces(detector, rgb: np.ndarray, what: str, **kw):
    """``detector.detect(rgb, **kw)``, with a frame too small for a face, or one MTCNN fails
    on, as a DataError giving its size (MTCNN raises torch's ``expected a non-empty list`` for
    a frame below its smallest face, ``min_face_size``, 20 pixels by default)."""
    h, w = rgb.shape[:2]
    smallest = getattr(detector, "min_face_size", None)
    if (smallest is not None and min(h, w) < smallest) or min(h, w) < 1:
        raise DataError(f"the {what} is {w}x{h} pixels, too small for a face (MTCNN needs at "
                        f"least {smallest or 1}x{smallest or 1})")
    try:
        return detector.detect(rgb, **kw)
    except (RuntimeError, ValueError, IndexError) as exc:
        if out_of_memory(exc):
            raise
        raise DataError(f"face detection failed on the {w}x{h} {what} "
                        f"({one_line(exc)})") from None


def detect_landmarks(image: np.ndarray, detector=None) -> np.ndarray | None:
    """MTCNN's 5 landmarks (left eye, right eye, nose, mouth left, mouth right) as (x, y).

    ``image`` is grey or BGR uint8; ``detector`` anything with facenet-pytorch's
    ``detect(rgb, landmarks=True) -> (boxes, probs, points)`` (default :func:`face_detector`).
    Returns a float32 (5, 2) array for the largest face, or None when no face is found; a
    frame too small for a face is a DataError giving its size (:func:`detect_faces`).
    """
    detector = face_detector() if detector is None else detector
    _, _, points = detect_faces(detector, _to_rgb(image, "image"), "image", landmarks=True)
    if points is None or len(points) == 0:
        return None
    return np.asarray(points[0], dtype=np.float32).reshape(5, 2)


def crop_face(
    onset: np.ndarray, apex: np.ndarray, size: int = 224, detector=None
) -> tuple[np.ndarray, np.ndarray]:
    """Crop the face found in ``onset`` from both frames and resize to size x size.

    MTCNN (``detect`` on the RGB onset; the largest face) gives a box, which is widened to a
    square about its centre (side = the longer box side) and clipped to the frame.  The
    same box cuts onset and apex, so no motion is introduced between them; both crops are
    resized with ``cv2.INTER_AREA`` (``INTER_LINEAR`` when enlarging).  Images keep their
    colour order.  ``detector`` is anything with facenet-pytorch's ``detect(rgb)`` returning
    (boxes, probs); default :func:`face_detector`.  No face, or an onset too small for one
    (:func:`detect_faces`) -> :class:`DataError`.
    """
    onset, apex = np.asarray(onset), np.asarray(apex)
    if onset.shape != apex.shape:
        raise ValueError(f"onset and apex differ in size: {onset.shape} vs {apex.shape}")
    detector = face_detector() if detector is None else detector
    boxes, _ = detect_faces(detector, _to_rgb(onset, "onset"), "onset frame")
    if boxes is None or len(boxes) == 0:
        raise DataError(
            f"no face found in the onset frame ({onset.shape[1]}x{onset.shape[0]} pixels)"
        )
    x0, y0, x1, y1 = (float(c) for c in np.asarray(boxes[0], dtype=np.float64))
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = onset.shape[:2]
    left, top = max(0, int(round(cx - side / 2))), max(0, int(round(cy - side / 2)))
    right, bottom = min(w, int(round(cx + side / 2))), min(h, int(round(cy + side / 2)))
    if right - left < 2 or bottom - top < 2:
        raise DataError(f"the face box {[x0, y0, x1, y1]} lies outside the {w}x{h} onset frame")

    def cut(image: np.ndarray) -> np.ndarray:
        region = image[top:bottom, left:right]
        enlarge = size > max(region.shape[:2])
        interp = cv2.INTER_LINEAR if enlarge else cv2.INTER_AREA
        return cv2.resize(region, (size, size), interpolation=interp)

    return cut(onset), cut(apex)


# --------------------------------------------------------------------------------------
# D&C-RoIs apex spotting (eq. 1; Liong et al., ACPR 2015)

#: ROIs as fractions of the frame (x0, y0, x1, y1) used when no face is found: left eye and
#: brow, right eye and brow, mouth (a frontal face filling most of the frame).
FALLBACK_ROIS = ((0.15, 0.15, 0.50, 0.50), (0.50, 0.15, 0.85, 0.50), (0.25, 0.60, 0.75, 0.90))

LBP_POINTS, LBP_RADIUS, LBP_BINS = 8, 1, 10  # uniform LBP: P + 2 = 10 codes
ROI_GRID = 9  # each ROI is split into ROI_GRID x ROI_GRID blocks, one histogram per block
SMOOTH = 0.04  # Gaussian pre-smoothing sigma, as a fraction of the inter-eye distance
_FALLBACK_EYE_DISTANCE = 0.26  # inter-eye distance / frame width assumed without landmarks


def roi_boxes(shape: tuple, landmarks: np.ndarray | None) -> list[tuple[int, int, int, int]]:
    """Three ROIs (x0, y0, x1, y1) in pixels: left eye and brow, right eye and brow, mouth.

    With d the distance between the eyes: each eye box spans 0.9 d across, from 0.75 d above
    the eye (the brow) to 0.3 d below it; the mouth box spans the mouth corners widened by
    0.3 d on each side, from 0.4 d above to 0.5 d below the corners' mean height.  Without
    landmarks the fixed fractions :data:`FALLBACK_ROIS` of the frame are used.  Boxes are
    clipped to the frame.
    """
    h, w = shape[:2]
    if landmarks is None:
        boxes = [(x0 * w, y0 * h, x1 * w, y1 * h) for x0, y0, x1, y1 in FALLBACK_ROIS]
    else:
        left_eye, right_eye, _, mouth_l, mouth_r = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
        d = eye_distance(shape, landmarks)
        boxes = [
            (ex - 0.45 * d, ey - 0.75 * d, ex + 0.45 * d, ey + 0.3 * d)
            for ex, ey in (left_eye, right_eye)
        ]
        my = (mouth_l[1] + mouth_r[1]) / 2
        mx0, mx1 = min(mouth_l[0], mouth_r[0]), max(mouth_l[0], mouth_r[0])
        boxes.append((mx0 - 0.3 * d, my - 0.4 * d, mx1 + 0.3 * d, my + 0.5 * d))
    out = []
    for x0, y0, x1, y1 in boxes:
        x0, y0 = int(np.clip(round(x0), 0, w - 1)), int(np.clip(round(y0), 0, h - 1))
        x1, y1 = int(np.clip(round(x1), x0 + 1, w)), int(np.clip(round(y1), y0 + 1, h))
        out.append((x0, y0, x1, y1))
    return out


def motion_px(flow: np.ndarray, landmarks: np.ndarray | None = None) -> float:
    """How much moved, in pixels: the mean flow magnitude |V| (eq. 2) over the ROIs of
    :func:`roi_boxes` (both eyes with their brows, and the mouth with both corners: where the
    four regions of section 3.1 lie), their pixels pooled.  ``flow`` is (H, W, 2) as
    :func:`optical_flow` gives it; ``landmarks`` the face's five MTCNN points in the same
    pixels (None: the fixed :data:`FALLBACK_ROIS`)."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must have shape (H, W, 2), got {flow.shape}")
    speed = np.hypot(flow[..., 0], flow[..., 1])
    pooled = np.concatenate([speed[y0:y1, x0:x1].ravel()
                             for x0, y0, x1, y1 in roi_boxes(flow.shape, landmarks)])
    return float(pooled.mean())


def eye_distance(shape: tuple, landmarks: np.ndarray | None) -> float:
    """Distance between the eyes in pixels; 0.26 of the frame width without landmarks."""
    if landmarks is None:
        return _FALLBACK_EYE_DISTANCE * shape[1]
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    return max(float(np.hypot(*(pts[1] - pts[0]))), 4.0)


def _lbp_features(gray: np.ndarray, boxes, sigma: float) -> list[np.ndarray]:
    """Per ROI: the ROI_GRID x ROI_GRID blocks' 10-bin uniform-LBP histograms, concatenated."""
    from skimage.feature import local_binary_pattern

    if sigma > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), sigma)
    features = []
    for x0, y0, x1, y1 in boxes:
        # LBP over the ROI plus one pixel of context, so border pixels see real neighbours
        cx0, cy0 = max(0, x0 - 1), max(0, y0 - 1)
        patch = gray[cy0 : y1 + 1, cx0 : x1 + 1]
        codes = local_binary_pattern(patch, LBP_POINTS, LBP_RADIUS, method="uniform")
        codes = codes[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0].astype(np.int64)
        hists = [
            np.bincount(block.ravel(), minlength=LBP_BINS)[:LBP_BINS]
            for band in np.array_split(codes, ROI_GRID, axis=0)
            for block in np.array_split(band, ROI_GRID, axis=1)
        ]
        features.append(np.concatenate(hists).astype(np.float64))
    return features


def _correlation(h1: np.ndarray, h2: np.ndarray) -> float:
    """Eq. 1: sum(h1 h2) / sqrt(sum(h1^2) sum(h2^2)); 1 when either histogram is empty."""
    denom = float(np.sqrt(np.dot(h1, h1) * np.dot(h2, h2)))
    return float(np.dot(h1, h2) / denom) if denom > 0 else 1.0


def _gray_frames(frames) -> list[np.ndarray]:
    """The frames as grey images of one size (at least one frame)."""
    grays = [_to_gray(f, f"frame {i}") for i, f in enumerate(frames)]
    if not grays:
        raise ValueError("apex spotting needs at least one frame")
    shape = grays[0].shape
    for i, g in enumerate(grays):
        if g.shape != shape:
            raise ValueError(f"frame {i} has size {g.shape}, frame 0 has {shape}")
    return grays


def apex_differences(frames, landmarks: np.ndarray | None = None) -> np.ndarray:
    """Per frame, the summed ROI feature difference to frame 0 (the onset), float64 (n,).

    difference_k = sum over the three ROIs of (1 - d_k), where d_k is the correlation of
    eq. 1 between the ROI's LBP features in frame k and in the onset; entry 0 is 0.  ROIs
    come from ``landmarks`` (see :func:`roi_boxes`).
    """
    grays = _gray_frames(frames)
    shape = grays[0].shape
    boxes = roi_boxes(shape, landmarks)
    sigma = SMOOTH * eye_distance(shape, landmarks)
    reference = _lbp_features(grays[0], boxes, sigma)
    diffs = np.zeros(len(grays), dtype=np.float64)
    for k in range(1, len(grays)):
        features = _lbp_features(grays[k], boxes, sigma)
        diffs[k] = sum(1.0 - _correlation(a, b) for a, b in zip(reference, features))
    return diffs


def flow_differences(
    frames, landmarks: np.ndarray | None = None, method: str = "farneback"
) -> np.ndarray:
    """Per frame, the summed mean optical-flow magnitude from frame 0 in the ROIs, float64 (n,).

    difference_k = sum over the three ROIs (:func:`roi_boxes`) of the mean of |V| inside the
    ROI, V the flow from the onset to frame k (eq. 2, :func:`optical_flow` with ``method``);
    entry 0 is 0.  The flow is computed on the ROIs' bounding box widened by half the
    inter-eye distance (context for the flow window), not on the whole frame.  Unlike the LBP
    difference it grows in proportion to the displacement, in pixels.
    """
    grays = _gray_frames(frames)
    shape = grays[0].shape
    boxes = roi_boxes(shape, landmarks)
    margin = int(round(0.5 * eye_distance(shape, landmarks)))
    cx0 = max(0, min(b[0] for b in boxes) - margin)
    cy0 = max(0, min(b[1] for b in boxes) - margin)
    cx1 = min(shape[1], max(b[2] for b in boxes) + margin)
    cy1 = min(shape[0], max(b[3] for b in boxes) + margin)
    onset = grays[0][cy0:cy1, cx0:cx1]
    diffs = np.zeros(len(grays), dtype=np.float64)
    for k in range(1, len(grays)):
        v = optical_flow(onset, grays[k][cy0:cy1, cx0:cx1], method)
        speed = np.hypot(v[..., 0], v[..., 1])
        rois = (speed[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0] for x0, y0, x1, y1 in boxes)
        diffs[k] = sum(float(roi.mean()) for roi in rois)
    return diffs


def divide_and_conquer(differences: np.ndarray, parts: int = 2) -> int:
    """Divide-and-conquer search for the apex in a per-frame difference curve.

    The search interval starts as frames 1..n-1 (frame 0 is the onset).  It is split into
    ``parts`` contiguous sub-intervals of (near) equal length, and the one with the greatest
    mean difference is kept (the greatest summed difference when the lengths are equal; the
    mean keeps an odd split from favouring its longer part); ties go to the earlier
    sub-interval.  This repeats until the interval is a single frame, whose index is
    returned.  A sequence of one frame returns 0.
    """
    diffs = np.asarray(differences, dtype=np.float64)
    n = len(diffs)
    if n <= 1:
        return 0
    if parts < 2:
        raise ValueError(f"parts must be at least 2, got {parts}")
    lo, hi = 1, n  # half-open interval [lo, hi)
    while hi - lo > 1:
        k = min(parts, hi - lo)
        edges = np.linspace(lo, hi, k + 1).round().astype(int)
        means = [diffs[a:b].mean() for a, b in zip(edges[:-1], edges[1:])]
        best = int(np.argmax(means))  # the first of equal maxima
        lo, hi = int(edges[best]), int(edges[best + 1])
    return lo


def spot_apex(
    frames, landmarks: np.ndarray | None = None, detector=None, method: str = "lbp"
) -> int:
    """Index of the apex frame of a sequence (paper 3.1 eq. 1, section 4.2).

    ``frames`` is a list or array of uint8 grey or BGR frames of one size, frame 0 the onset.
    ``landmarks`` is MTCNN's (5, 2) array (left eye, right eye, nose, mouth left, mouth right
    as (x, y)) on the onset; when None, MTCNN (or ``detector``, see
    :func:`detect_landmarks`) runs on the onset frame, and when it finds no face the fixed
    fractions :data:`FALLBACK_ROIS` of the frame are used.  Both methods look at the same
    three ROIs (left eye and brow, right eye and brow, mouth; :func:`roi_boxes`).

    ``method="lbp"`` (default) -- D&C-RoIs, the spotter the paper names (section 4.2): per
    frame and ROI, uniform LBP histograms (scikit-image ``local_binary_pattern``, P=8, R=1,
    method "uniform", 10 bins); the difference of each frame to the onset as 1 - correlation
    (eq. 1) summed over the ROIs (:func:`apex_differences`); then the divide-and-conquer
    search (:func:`divide_and_conquer`).

    ``method="flow"`` -- the frame whose Farneback flow from the onset (eq. 2, the flow of
    section 4.2) has the greatest mean magnitude in the ROIs (:func:`flow_differences`);
    ties go to the earlier frame.  Eq. 1's "highest rate of difference" with a difference
    that grows in proportion to the motion.

    When each applies (``bench/flow_accuracy.py``, section 4, and ``bench/RESULTS.md``:
    synthetic action-unit sequences of 16-30 frames, noise 1 grey level, motion 0.5-4 px):

    * ``"flow"`` lands within one frame of the apex in >= 92 % of sequences at every motion
      from 0.5 to 4 px, symmetric or fast-rise/slow-decay.  Use it where the motion is above
      about 1 px, the expression decays more slowly than it rises, or the frames are noisy.
      It costs about three times the LBP spotter (one Farneback flow per frame), and any
      motion in the ROIs counts, head movement included.
    * ``"lbp"`` keeps the paper's method.  Its difference is compressed: sensor noise alone
      flips R=1 codes, so frames with under a fifth of the apex motion already score 40-80 %
      of the apex value (1 grey level of noise), and the rest grows less than in proportion
      to the motion.  The curve is thus nearly flat over the frames near the apex, and with a
      slow decay the divide-and-conquer halves drift into the long tail.  It is within 2
      frames in >= 90 % of short (10-16 frame) symmetric sequences at 1.5 px and 0.5 grey
      levels of noise, but within 1 frame in only 27-87 % of the settings above (47-87 %
      symmetric, 27-60 % fast-rise/slow-decay).  It stays the default so that preprocessing
      follows the paper unless ``"flow"`` is asked for.

    Choices that Liong et al. (ACPR 2015) and the paper leave open, as made for ``"lbp"``:

    * ROI sizes relative to the inter-eye distance (:func:`roi_boxes`);
    * frames are smoothed with a Gaussian before LBP, sigma = :data:`SMOOTH` (0.04) times
      the inter-eye distance (2.4 px on a 224 px face), because R=1 codes on smooth skin flip
      with one grey level of sensor noise;
    * each ROI is split into :data:`ROI_GRID` x :data:`ROI_GRID` = 9x9 blocks with one
      10-bin histogram each, concatenated, because a histogram of a whole ROI hardly changes
      under a 1-2 px motion (a histogram only changes where content crosses a block edge);
    * eq. 1 on raw counts of the concatenated histograms (not mean-centred);
    * split rule: halves, compared by mean difference, ties to the earlier half, until one
      frame remains.

    The smoothing, the grid and the split rule were chosen on synthetic sequences (1.5 px
    action-unit motion, 0.5-1 grey level of noise), where they beat coarser grids, less
    smoothing and three-way splits.
    """
    if method not in APEX_METHODS:
        raise ValueError(f"unknown apex spotting method {method!r}; choose one of {APEX_METHODS}")
    frames = list(frames)
    if not frames:
        raise ValueError("apex spotting needs at least one frame")
    if len(frames) == 1:
        return 0
    if landmarks is None:
        landmarks = detect_landmarks(frames[0], detector)
    if method == "flow":
        return 1 + int(np.argmax(flow_differences(frames, landmarks)[1:]))
    return divide_and_conquer(apex_differences(frames, landmarks))
