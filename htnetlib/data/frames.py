"""The frames a user gives ``htnet predict``: read, checked to hold a picture, put in order.

An onset must show a face (MTCNN finds it: :func:`htnetlib.data.flow.crop_face`); an apex, or
any frame of a sequence, must too. Before any face detector runs, :func:`picture_problem`
refuses a frame that cannot be a photograph of a face: one of too little contrast (a black, a
white or a single-grey frame, a 16-bit frame decoded to black) or with no spatial structure
(random noise: neighbouring pixels of a photograph are alike, those of noise are not). Both
measures are cheap, and MTCNN's own check follows on the face crop
(:meth:`htnetlib.predict.Model.predict`).
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError
from .preprocess import MAP_SIZE
from .release import read_flow, read_image

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: A frame whose grey values have a standard deviation below this many grey levels holds no
#: picture of a face (a photograph of a face spans tens of grey levels; the synthetic faces
#: of :mod:`htnetlib.data.synthetic` about 60).
MIN_CONTRAST = 4.0
#: A frame whose horizontally neighbouring grey values correlate below this is noise, not a
#: photograph (a face photographed or rendered: above 0.9, sensor noise of a few grey levels
#: included; uniform random noise: about 0).
MIN_STRUCTURE = 0.5
#: MTCNN's smallest face (facenet-pytorch's ``min_face_size``): a smaller frame holds none.
MIN_FACE_SIDE = 20


def as_image(image, what: str) -> np.ndarray:
    """``image`` (a file path, or a uint8 grey or BGR array) as a BGR uint8 array."""
    if isinstance(image, (str, Path)):
        return read_image(image, any_format=True)
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise DataError(f"{what}: image must be uint8, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
    if a.ndim != 3 or a.shape[2] != 3:
        raise DataError(f"{what}: image must be grey (H, W) or BGR (H, W, 3), got {a.shape}")
    return np.ascontiguousarray(a)


def check_map(map28, what: str = "flow map") -> np.ndarray:
    """A flow map as the release stores it: 28x28x3 uint8, channels (strain, v, u)."""
    if isinstance(map28, (str, Path)):
        return read_flow(map28, MAP_SIZE)
    a = np.asarray(map28)
    if a.shape != (MAP_SIZE, MAP_SIZE, 3) or a.dtype != np.uint8:
        raise DataError(f"{what}: {'x'.join(map(str, a.shape))} {a.dtype}, expected "
                        f"{MAP_SIZE}x{MAP_SIZE}x3 uint8 (channels strain, v, u)")
    return a


def sequence_files(folder: Path | str) -> list[Path]:
    """The image files of a frame folder in frame order (numbers in names compared as numbers)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such frame folder")
    files = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()]
    if len(files) < 2:
        raise DataError(f"{folder}: {len(files)} image file(s) ({', '.join(FRAME_SUFFIXES)}); "
                        "a sequence needs at least 2 frames")
    natural = lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]  # noqa: E731
    return sorted(files, key=natural)


def picture_problem(image: np.ndarray) -> str | None:
    """Why a BGR or grey uint8 frame cannot show a face (one line, without the file's name),
    or None: a side below :data:`MIN_FACE_SIDE` pixels, a contrast below :data:`MIN_CONTRAST`
    grey levels, or neighbouring pixels that correlate below :data:`MIN_STRUCTURE` (noise)."""
    a = np.asarray(image)
    h, w = a.shape[:2]
    if min(h, w) < MIN_FACE_SIDE:
        return (f"the frame is {w}x{h} pixels, too small for a face (MTCNN needs at least "
                f"{MIN_FACE_SIDE}x{MIN_FACE_SIDE})")
    grey = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY) if a.ndim == 3 else a
    grey = grey.astype(np.float64)
    contrast = float(grey.std())
    if contrast < MIN_CONTRAST:
        return (f"holds no picture of a face: grey levels {int(grey.min())}..{int(grey.max())}, "
                f"contrast {contrast:.1f} below {MIN_CONTRAST:g}")
    left, right = grey[:, :-1].ravel(), grey[:, 1:].ravel()
    if left.std() == 0 or right.std() == 0:
        return "holds no picture of a face: every row is one grey level"
    structure = float(np.corrcoef(left, right)[0, 1])
    if structure < MIN_STRUCTURE:
        return (f"holds no picture of a face: neighbouring pixels correlate {structure:.2f}, "
                f"below {MIN_STRUCTURE:g} (noise, not a photograph)")
    return None


def check_picture(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` if it can show a face (:func:`picture_problem`), else DataError naming
    ``name`` (the file, or ``apex``/``frame N`` for an array)."""
    problem = picture_problem(image)
    if problem:
        raise DataError(f"{name}: {problem}")
    return image


def sequence_pictures(frames: list) -> tuple[list[np.ndarray], list[str], dict[int, str]]:
    """The frames of a sequence (paths or arrays, frame 0 the onset) as BGR arrays of one size,
    their names (the file, or ``frame N``) and, by index, why a frame after the onset holds no
    picture of a face (:func:`picture_problem`; the apex is never spotted among those).
    DataError for fewer than 2 frames, frames of different sizes, or an onset without a
    picture."""
    images = [as_image(f, f"frame {i}") for i, f in enumerate(frames)]
    if len(images) < 2:
        raise DataError(f"a sequence needs at least 2 frames, got {len(images)}")
    names = [str(f) if isinstance(f, (str, Path)) else f"frame {i}" for i, f in enumerate(frames)]
    for i, img in enumerate(images[1:], 1):
        if img.shape != images[0].shape:
            raise DataError(f"{names[i]}: {img.shape[1]}x{img.shape[0]} pixels, but frame 0 is "
                            f"{images[0].shape[1]}x{images[0].shape[0]}")
    check_picture(images[0], names[0])  # the onset: no other frame can stand in for it
    problems = {i: picture_problem(img) for i, img in enumerate(images[1:], 1)}
    return images, names, {i: why for i, why in problems.items() if why}


def skipped_words(names: list[str], skipped: dict[int, str]) -> str:
    """The skipped frames of a sequence and why, in one line."""
    return "; ".join(f"{names[i]} {why}" for i, why in sorted(skipped.items()))
