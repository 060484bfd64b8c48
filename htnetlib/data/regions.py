"""The four facial regions that HTNet sees (paper sections 3.1 and 4.2).

MTCNN (facenet-pytorch) finds five landmarks on the apex face: left eye, right eye, nose,
left mouth corner, right mouth corner, each as (x, y). Four half-size crops of the flow map
around the eyes and the mouth corners are tiled into one mosaic of the flow map's size, which is
the network's input. Two modes:

``official``
    Exactly what the official code does. MTCNN runs on the apex image *resized to 28x28* with
    ``INTER_AREA`` and passed as OpenCV's BGR array; where it finds no face, fixed landmarks
    are used (:data:`FALLBACK_LANDMARKS`); coordinates are clamped to [7, 21] and truncated to
    int; crop k is ``flow[a-7:a+7, b-7:b+7]`` with (a, b) = landmark k as (x, y), so the x
    coordinate indexes *rows*; the mosaic is [[left eye, right eye], [mouth left, mouth right]]
    in MTCNN's order, i.e. landmarks 0, 1 over 3, 4.
``corrected``
    Landmarks found on the full-resolution RGB apex image and scaled to the flow map; crops
    centred at (row = y, col = x), clamped to stay inside the map; the same mosaic order.
``whole``
    No regions: the whole flow map (the input of STSTNet-style models).

Landmarks are cached on disk, keyed by the SHA-256 of the image file and the mode, so MTCNN
runs once per image. A cache file that cannot be read back (truncated, not JSON, entries of the
wrong shape) is derived data: it is set aside as ``<name>.corrupt`` with a warning naming it,
and the landmarks are found again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..config import APEX_FACE_MODELS
from .release import Composite, DataError, read_image

MODES = ("official", "corrected", "whole")
# The official code's landmarks (x, y) on a 28x28 face where MTCNN finds none.
FALLBACK_LANDMARKS = np.array([[9.528073, 11.062551], [21.396168, 10.919773],
                               [15.380184, 17.380562], [10.255435, 22.121233],
                               [20.583706, 22.25584]], dtype=np.float64)
MOSAIC_ORDER = (0, 1, 3, 4)  # left eye, right eye, mouth left, mouth right


# Landmarks cached before MTCNN's output NMS broke score ties by index (flow.face_detector)
# have keys without this suffix, so they are found again rather than reused.
CACHE_SALT = "-ties-by-index"


def cache_dir() -> Path:
    """``$HTNET_CACHE``, else ``~/.cache/htnetlib``."""
    return Path(os.environ.get("HTNET_CACHE") or Path.home() / ".cache" / "htnetlib")


def mtcnn():
    """The process-wide MTCNN detector (:func:`htnetlib.data.flow.face_detector`).

    The official code also sets ``image_size=28, margin=0``; those only shape the face crops
    MTCNN can return, not the boxes and landmarks of ``detect``, which is all that is used.
    """
    from .flow import face_detector

    return face_detector()


def detect_landmarks(image: np.ndarray) -> np.ndarray | None:
    """MTCNN's five landmarks (x, y) of the largest face in ``image``, or None.

    The array goes to MTCNN as given (MTCNN expects RGB; the official mode passes BGR).
    """
    _, _, landmarks = mtcnn().detect(image, landmarks=True)
    if landmarks is None:
        return None
    return np.asarray(landmarks[0], dtype=np.float64)


def detector_input(bgr: np.ndarray, mode: str) -> np.ndarray:
    """What MTCNN is shown: official = the BGR image at 28x28 (INTER_AREA); corrected = RGB."""
    if mode == "official":
        return cv2.resize(bgr, (28, 28), interpolation=cv2.INTER_AREA)
    if mode == "corrected":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    raise ValueError(f"landmarks are found in modes 'official' and 'corrected', not {mode!r}")


def image_landmarks(bgr: np.ndarray, mode: str) -> "Landmarks":
    """Landmarks of one BGR image for ``mode`` (no cache)."""
    img = detector_input(bgr, mode)
    lm = detect_landmarks(img)
    points = np.full((1, 5, 2), np.nan) if lm is None else lm[None]
    return Landmarks(points, np.array([[img.shape[1], img.shape[0]]], dtype=np.float64))


@dataclass
class Landmarks:
    """Landmarks per sample in the detector's pixel frame, and whether MTCNN found a face."""

    points: np.ndarray  # (N, 5, 2) as (x, y); NaN where no face was found
    image_size: np.ndarray  # (N, 2) width, height of the image MTCNN saw

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.points).any(axis=(1, 2))


def _check_cache(known) -> None:
    """ValueError unless ``known`` maps image hashes to {"points": 5x2 or null, "size": 2}."""
    if not isinstance(known, dict):
        raise ValueError(f"holds a JSON {type(known).__name__}, expected an object")
    for key, entry in known.items():
        try:
            points, size = entry["points"], entry["size"]
            ok = (np.asarray(size, dtype=np.float64).shape == (2,)
                  and (points is None or np.asarray(points, dtype=np.float64).shape == (5, 2)))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"entry {key[:12]}... is not {{points: 5x2 or null, size: 2}}")


def read_cache(store: Path) -> dict:
    """The landmark cache ``store`` ({} if there is none).

    A corrupt cache is renamed to ``<name>.corrupt`` with a warning, and {} returned so the
    landmarks are found again; :class:`DataError` naming the file if it cannot be read or moved.
    """
    if not store.is_file():
        return {}
    try:
        known = json.loads(store.read_text())
        _check_cache(known)
        return known
    except OSError as exc:
        why = exc.strerror or exc
        raise DataError(f"{store}: cannot read the landmark cache ({why})") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = str(exc).splitlines()[0]
    aside = store.with_name(store.name + ".corrupt")
    try:
        os.replace(store, aside)
    except FileNotFoundError:
        pass  # another process set it aside first
    except OSError as exc:
        raise DataError(f"{store}: corrupt landmark cache ({reason}) that cannot be moved aside "
                        f"({exc.strerror or exc}); delete it to find the landmarks again") from None
    warnings.warn(f"{store}: corrupt landmark cache ({reason}); moved to {aside.name} and the "
                  "landmarks are found again", stacklevel=3)
    return {}


def find_landmarks(data: Composite, mode: str = "official", *, cache: bool = True,
                   progress: bool = False) -> Landmarks:
    """Landmarks of every apex image of ``data`` for ``mode``, read from or written to the cache."""
    if mode not in ("official", "corrected"):
        raise ValueError(f"landmarks are found in modes 'official' and 'corrected', not {mode!r}")
    store = cache_dir() / f"landmarks-{mode}.json"
    known = read_cache(store) if cache else {}
    points, sizes, changed = [], [], False
    paths = [data.root / p for p in data.table["apex_path"]]
    if progress:
        from tqdm.auto import tqdm
        paths = tqdm(paths, desc=f"MTCNN ({mode})", unit="face")
    for path in paths:
        key = f"{hashlib.sha256(path.read_bytes()).hexdigest()}{CACHE_SALT}"
        if key not in known:
            lm = image_landmarks(read_image(path), mode)
            known[key] = {"points": lm.points[0].tolist() if lm.found[0] else None,
                          "size": lm.image_size[0].tolist()}
            changed = True
        entry = known[key]
        points.append(np.full((5, 2), np.nan) if entry["points"] is None else entry["points"])
        sizes.append(entry["size"])
    if cache and changed:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, store)
    return Landmarks(np.asarray(points, dtype=np.float64).reshape(-1, 5, 2),
                     np.asarray(sizes, dtype=np.float64).reshape(-1, 2))


def crop_centres(landmarks: Landmarks, mode: str, size: int = 28) -> np.ndarray:
    """(N, 4, 2) integer (row, col) centres of the four crops on a ``size`` x ``size`` map."""
    half = size // 4
    points = landmarks.points.copy()
    if mode == "official":
        fallback = FALLBACK_LANDMARKS * size / 28
        points[~landmarks.found] = fallback
        points = np.clip(points, half, size - half).astype(int)  # truncation, as official
        centres = points  # (x, y) used as (row, col): the official code's indexing
    elif mode == "corrected":
        scale = size / landmarks.image_size  # (N, 2): x and y scale to the flow map
        points = points * scale[:, None, :]
        points[~landmarks.found] = FALLBACK_LANDMARKS * size / 28
        points = np.clip(np.rint(points), half, size - half).astype(int)
        centres = points[..., ::-1]  # (row = y, col = x)
    else:
        raise ValueError(f"unknown region mode {mode!r}; expected one of {MODES}")
    return centres[:, MOSAIC_ORDER, :]


def mosaic(flows: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Tile four half-size crops per map into [[c0, c1], [c2, c3]]; (N, S, S, C) -> same shape."""
    n, size = flows.shape[0], flows.shape[1]
    half = size // 4
    out = np.empty_like(flows)
    for i in range(n):
        crops = [flows[i, r - half:r + half, c - half:c + half] for r, c in centres[i]]
        out[i] = np.concatenate([np.concatenate(crops[:2], axis=1),
                                 np.concatenate(crops[2:], axis=1)], axis=0)
    return out


def resize_maps(flows: np.ndarray, size: int) -> np.ndarray:
    """Flow maps (N, S, S, C) resized to ``size`` (INTER_AREA for smaller, INTER_LINEAR for
    larger); unchanged where they already have that size."""
    if size == flows.shape[1]:
        return flows
    interp = cv2.INTER_AREA if size < flows.shape[1] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in flows])


def mirror_landmarks(landmarks: Landmarks) -> Landmarks:
    """The landmarks of the left-right mirrored faces: x -> W - x, and left and right renamed
    (MTCNN names eyes and mouth corners by image side)."""
    points = landmarks.points.copy()
    points[..., 0] = landmarks.image_size[:, None, 0] - points[..., 0]
    return Landmarks(points[:, [1, 0, 2, 4, 3]], landmarks.image_size)


def region_inputs(data: Composite, mode: str = "official", *, size: int = 28,
                  cache: bool = True, mirror: bool = False) -> np.ndarray:
    """The network inputs (N, size, size, 3) uint8 for ``mode``: the mosaic, or the whole map.

    ``size`` other than the release's 28 resizes the flow maps first (:func:`resize_maps`) and
    scales the crops with them (crops of size/2).

    ``mirror`` gives every sample's left-right mirrored face (``Config.mirror``). The mirror is
    taken *before* the four-region mosaic, so a mirrored sample is what the pipeline makes of
    the mirrored face: the flow map's columns are flipped and its u channel negated (channels
    are (strain, v, u); the release min-max stretches each channel to 0..255, so -u is
    255 - u), MTCNN's landmarks are mirrored (:func:`mirror_landmarks`), and the crops and
    mosaic follow as for any face (a face MTCNN missed keeps the fallback landmarks, as the
    mirrored image would). Flipping the finished mosaic instead would swap the left and right
    crops in the ``corrected`` mode, where it agrees, but not in the ``official`` mode, whose
    crops read (x, y) as (row, col): there a mirrored face moves the crops' rows.
    """
    flows = resize_maps(data.flows, size)
    if mirror:
        flows = flows[:, :, ::-1].copy()  # (N, rows, cols, channels): columns flipped
        flows[..., 2] = 255 - flows[..., 2]  # u, the horizontal flow, changes sign
    if mode == "whole":
        return flows
    if size % 4:
        raise ValueError(f"region mosaics need a size divisible by 4, got {size}")
    landmarks = find_landmarks(data, mode, cache=cache)
    if mirror:
        landmarks = mirror_landmarks(landmarks)
    return mosaic(flows, crop_centres(landmarks, mode, size))


def apex_faces(data: Composite, size: int = 28, *, mirror: bool = False) -> np.ndarray:
    """(N, size, size, 1) uint8: every sample's apex face in grey, shrunk to the flow map's
    size with ``INTER_AREA`` (the second stream of notebook 16's two-stream model);
    ``mirror`` flips its columns, as :func:`region_inputs` flips the flow map's."""
    faces = []
    for p in data.table["apex_path"]:
        grey = cv2.cvtColor(read_image(data.root / p), cv2.COLOR_BGR2GRAY)
        faces.append(cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA))
    out = np.stack(faces)[..., None]
    return out[:, :, ::-1].copy() if mirror else out


def network_inputs(data: Composite, config, *, mirror: bool = False) -> np.ndarray:
    """(N, C, S, S) float32 network inputs of every sample for a
    :class:`~htnetlib.config.Config`: its regions mode and image size, times its input scale;
    ``mirror`` gives the mirrored faces (:func:`region_inputs`). C is 3, the flow map's
    channels, or 4 for a model of :data:`~htnetlib.config.APEX_FACE_MODELS`, whose fourth
    channel is the apex face in grey (:func:`apex_faces`). The one function that turns flow
    maps, apex faces and landmarks into what the network reads."""
    x = region_inputs(data, config.regions, size=config.image_size, mirror=mirror)
    if config.model in APEX_FACE_MODELS:
        x = np.concatenate([x, apex_faces(data, config.image_size, mirror=mirror)], axis=-1)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) * config.input_scale
