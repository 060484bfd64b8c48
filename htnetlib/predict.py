"""From two frames to a prediction: fit one HTNet on the whole release, store it, predict.

``htnet fit`` trains **one** network on every sample of the release with a profile's fixed schedule
(section 4.2's learning rate and epochs as the profile scales them; Adam and cross-entropy as the
official code). The final epoch is kept: there is no held-out subject, so no test label can choose
an epoch. It is the loop of :func:`htnetlib.training.fold.train_fold` without a test fold
(:func:`train_network`; a test checks that both give the same network). The model folder holds::

    model.safetensors   the weights (safetensors, never pickle)
    model.json          configuration, profile, seed, data fingerprint, class names, the input
                        convention, the weights' SHA-256, library versions, git commit
    MODEL_CARD.md       written by ``htnet fit`` (:mod:`htnetlib.study.card`): data, configuration,
                        the stored LOSO score of that configuration, intended use and limits
    calibration.json    (optional) written by ``htnet calibrate`` (:func:`calibrate`): the
                        temperature, the runs it was fitted on, ECE and NLL before and after

The weights are written first and model.json last, each atomically; model.json records the
weights' SHA-256, so a folder whose two files do not belong together is refused on loading.
Fitted models are derived from the licensed release: they live outside the repository's tracked
files (default ``.cache/models/<profile>-s<seed>-<fingerprint>``, git-ignored).

``htnet predict`` and :class:`Model` take the path of section 3.1 with the library's own steps:

1. MTCNN face crop of onset and apex, 224x224 (:func:`htnetlib.data.flow.crop_face`, as
   ``htnet preprocess`` does);
2. optical flow from onset to apex (eq. 2) and optical strain (eq. 3). The default is TV-L1,
   the method the release's maps were made with, so the maps the models learn from
   (:func:`htnetlib.data.flow.optical_flow`; Farneback, section 4.2's name, and DIS are offered;
   bench/RESULTS.md measures how far the probabilities move between them);
3. the 28x28 (u, v, strain) map, stored as the release stores it: :func:`htnetlib.data.flow.flow_map`
   reversed to (strain, v, u), the order ``cv2.imread`` gives for the release's PNGs and the
   array the models are trained on;
4. MTCNN landmarks on the apex face and the four regions tiled into a mosaic (sections 3.1 and
   4.2; :mod:`htnetlib.data.regions`), in the regions mode the model was trained with;
5. the network (sections 3.2 and 3.3) on raw 0..255 values times ``input_scale``; softmax.

``--flow MAP.png`` starts at step 3 with a release-style map. The four regions are placed by
landmarks of the *apex face*, which a flow map does not contain, so for a model trained with
regions ``official`` or ``corrected`` ``--flow`` needs ``--apex FACE`` (the apex face the map was
computed from, e.g. the release's ``combined_datasets_whole/<imagename>``); without it the
command stops with a one-line error. Only a ``regions=whole`` model reads a map alone.

**No motion.** Every map is min-max normalised per channel (as the release's are), so the
network sees the *pattern* of motion, never its size: sensor noise between two still frames
becomes a full-contrast map and gets a confident-looking class. :func:`htnetlib.data.flow.motion_px`
measures the size before normalising (mean |V| in px at the 224x224 face, in the eye and mouth
ROIs of :func:`htnetlib.data.flow.roi_boxes`, landmarks found by MTCNN on the apex face); below
:data:`NO_MOTION_PX` of the flow method the answer is "no motion" (``label`` null) unless forced.
A release-style map carries no size, so ``--flow`` answers have ``motion_px`` null.

**The answer** (:meth:`Model.answer`, and ``htnet predict --json``, one object per item):
a dict; ``htnet predict --help`` lists every key and what it holds
(:data:`htnetlib.cli.predict.ANSWER_KEYS`). ``regions_from`` (:data:`REGIONS_FROM`) says whether
the four regions were placed by MTCNN's landmarks or, where it found no face, by fixed ones.

Errors a user can cause are one line: :class:`htnetlib.errors.DataError` for a bad file, image or
model folder (naming it), :class:`htnetlib.config.ConfigError` for bad settings.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .config import PROFILES, Config, check_seed
from .data import LABELS, Composite, sha256
from .data import flow, regions
from .data.frames import (FRAME_SUFFIXES, as_image, check_map, check_picture,  # noqa: F401
                          sequence_files, sequence_pictures, skipped_words)
from .data.preprocess import FACE_SIZE, MAP_SIZE
from .data.regions import network_inputs
from .errors import ConfigError, DataError, RunError
from .evaluation.calibration import (answer_probabilities, model_calibration, pooled_held_out,
                                     softmax, write_calibration)
from .io import (ROOT, atomic_write, device_name, git_commit, read_json, versions,
                 write_folder, write_json)
from .model import build_model
from .training.fold import pick_device, train_network
from .training.store import data_fingerprint

FORMAT = "htnet-model/1"
WEIGHTS, META, CARD, CALIBRATION = ("model.safetensors", "model.json", "MODEL_CARD.md",
                                    "calibration.json")
CHANNELS = ("strain", "v", "u")  # the release PNGs as cv2.imread gives them
REQUIRED = ("format", "config", "profile", "seed", "data_fingerprint", "classes", "input",
            "weights")
DEFAULT_FLOW = "tvl1"  # the release's flow method: the maps the models learn from

#: Below this motion (:func:`htnetlib.data.flow.motion_px`, px at the 224x224 face) a pair is
#: answered "no motion", per flow method. Measured by ``python bench/flow_accuracy.py --only 6``
#: (bench/RESULTS.md, "No motion"): the astronaut face, crop, flow and ROIs as in predict, 6
#: seeds each. Still pairs with sensor noise of 2 grey levels reach at most 0.043 (tvl1), 0.073
#: (farneback), 0.037 (dis) px; the weakest micro-expressions kept, action-unit bumps of
#: 0.5 px peak (noise 1-2), give at least 0.063, 0.086, 0.063 px. Each threshold lies between
#: the two. Bumps of 0.25 px (0.043-0.079) and noise of 3 grey levels (up to 0.107 with
#: farneback) straddle them: such pairs are not told apart from stillness.
NO_MOTION_PX = {"tvl1": 0.05, "farneback": 0.08, "dis": 0.05}


# The fitted models that notebooks show, committed with their SHA-256 (in model.json) so that
# every machine renders the same outputs: training's last float bits differ between CPUs.
STORED_MODELS = ROOT / "results" / "models"


def model_name(profile: str, seed: int, fingerprint: str, config: Config | None = None) -> str:
    """``<profile>-s<seed>-<fingerprint>``, plus a configuration hash where ``config`` differs
    from the profile's: the folder name of a fitted model."""
    name = f"{profile}-s{seed}-{fingerprint}"
    if config is not None and config != PROFILES[profile]:
        blob = json.dumps(config.to_dict(), sort_keys=True).encode()
        name += "-" + hashlib.sha256(blob).hexdigest()[:8]
    return name


def default_model_dir(profile: str, seed: int, fingerprint: str, config: Config | None = None
                      ) -> Path:
    """``<repo>/.cache/models/<model_name>`` (git-ignored: fitted models stay out of the
    repository, except the few a notebook reads from :data:`STORED_MODELS`)."""
    return ROOT / ".cache" / "models" / model_name(profile, seed, fingerprint, config)


# --------------------------------------------------------------------------- fitting


def fit(data: Composite, config: Config, *, seed: int = 0, profile: str | None = None,
        device: str | None = None, progress: bool = False) -> "Model":
    """One network trained on every sample of ``data`` (final epoch), with its model.json."""
    from safetensors import __version__ as safetensors_version

    config.check()
    seed = check_seed(seed)
    if config.model == "logreg":
        raise ConfigError("model=logreg has no network to fit; fit htnet or ststnet")
    x = network_inputs(data, config)
    mirror = network_inputs(data, config, mirror=True) if config.mirror else None
    y = data.table["label"].to_numpy()
    dev = pick_device(device)
    network, curves = train_network(config, x, y, seed=seed, device=dev, progress=progress,
                                    x_train_mirror=mirror)
    history = {"final_train_loss": round(float(curves["train_loss"][-1]), 6),
               "final_train_acc": round(float(curves["train_acc"][-1]), 6),
               "seconds": round(curves["seconds"], 2), "device": device_name(dev)}
    network = network.cpu().eval()
    counts = {LABELS[k]: int((y == k).sum()) for k in LABELS}
    meta = {
        "format": FORMAT, "model": config.model, "profile": profile, "seed": seed,
        "config": config.to_dict(), "data_fingerprint": data_fingerprint(data),
        "data_root": Path(data.root).resolve().name, "data_manifest": data.manifest_status,
        "n_samples": len(y), "class_counts": counts,
        "classes": {str(k): name for k, name in LABELS.items()},
        "input": input_convention(config),
        "training": {"epochs": config.epochs, "schedule": "every sample, final epoch", **history},
        "versions": {**versions(), "safetensors": safetensors_version},
        "git_commit": git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return Model(network, meta)


def input_convention(config: Config) -> dict:
    """What the network reads: model.json's ``input`` block."""
    return {"map_size": MAP_SIZE, "channels": list(CHANNELS),
            "channel_note": "the release PNGs hold (u, v, strain) as RGB; cv2.imread gives "
                            "(strain, v, u), the order the network was trained on",
            "value_range": [0, 255], "input_scale": config.input_scale,
            "regions": config.regions, "image_size": config.image_size,
            "face_size": FACE_SIZE, "landmarks": "MTCNN on the apex face (htnetlib.data.regions)"}


def fitted_model(data: Composite, profile: str, seed: int = 0, *,
                 model_dir: Path | str | None = None, config: Config | None = None,
                 device: str | None = None, refit: bool = False, progress: bool = False
                 ) -> tuple["Model", bool]:
    """The model of ``profile`` (or ``config``) and ``seed`` on ``data``: read from
    ``model_dir`` where a valid one of the same configuration, seed and data is stored there,
    else fitted and saved there. Returns the model and whether it was fitted now."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    seed = check_seed(seed)
    config = (config or PROFILES[profile]).check()
    fingerprint = data_fingerprint(data)
    folder = Path(model_dir) if model_dir else default_model_dir(profile, seed, fingerprint,
                                                                  config)
    check_out_dir(folder)
    if not refit and (folder / META).is_file():
        try:
            model = Model.load(folder)
        except (DataError, ConfigError) as exc:
            warnings.warn(f"{exc}; fitting again", stacklevel=2)
        else:
            meta = model.meta
            differ = [what for what, same in (("configuration", meta["config"] == config.to_dict()),
                                              ("seed", meta["seed"] == seed),
                                              ("data", meta["data_fingerprint"] == fingerprint))
                      if not same]
            if not differ:
                return model, False
            raise ConfigError(f"--out {folder} holds another model ({model.config.model}, profile "
                              f"{meta.get('profile')}, seed {meta['seed']}, data "
                              f"{meta['data_fingerprint']}; {' and '.join(differ)} differ"
                              f"{'s' * (len(differ) == 1)}); --refit replaces it, or choose "
                              "another --out")
    model = fit(data, config, seed=seed, profile=profile, device=device, progress=progress)
    model.save(folder)
    return model, True


def calibrate(model_dir: Path | str, runs: list) -> dict:
    """Write calibration.json (:mod:`htnetlib.evaluation.calibration`): the temperature of the
    model in ``model_dir`` fitted on the pooled final-epoch held-out probabilities and labels of
    ``runs``, loaded LOSO runs of its configuration and data with ``epochs["prob"]``. The model
    (all release samples) meets faces of none of those subjects, as each fold's network met its
    held-out one: every stored held-out probability is legitimate calibration data. RunError
    naming a run that does not fit."""
    model = Model.load(model_dir)
    fingerprint = model.meta["data_fingerprint"]
    prob, y, names, subjects, runs_of = pooled_held_out(runs, model.config.to_dict(),
                                                        fingerprint, groups=True)
    return write_calibration(Path(model_dir) / CALIBRATION, prob, y, subjects=subjects,
                             runs_of=runs_of, runs=names,
                             config=model.meta["config"], data_fingerprint=fingerprint)


def check_out_dir(folder: Path) -> None:
    """ConfigError where ``folder`` is a file, holds files other than a model's, or lies inside
    this repository without being git-ignored (a model derived from the licensed release is
    committed only where a notebook needs it to render the same on every machine:
    :data:`STORED_MODELS`)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} is a file, not a folder")
    if folder.is_dir():
        foreign = [p.name for p in folder.iterdir()
                   if p.name not in (WEIGHTS, META, CARD, CALIBRATION)
                   and not p.name.startswith(".")]
        if foreign:
            raise ConfigError(f"--out {folder} holds other files ({', '.join(foreign[:3])}); "
                              "choose a new or empty folder for the model")
    if _tracked_in_repo(folder) and not folder.resolve().is_relative_to(STORED_MODELS):
        raise ConfigError(f"--out {folder} lies inside the repository and is not git-ignored; a "
                          "fitted model is derived from the licensed release and must stay out "
                          "of it (default: .cache/models/...)")


def _tracked_in_repo(folder: Path) -> bool:
    """Whether ``folder`` lies inside this git checkout where git would not ignore it."""
    path = folder.resolve()
    if not (ROOT / ".git").exists() or not path.is_relative_to(ROOT):
        return False
    try:
        done = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT,
                              capture_output=True)
    except OSError:  # no git: nothing to check against
        return False
    return done.returncode == 1  # 0: ignored, 1: not ignored, 128: git failed


# --------------------------------------------------------------------------- the model


class Model:
    """A fitted network and its model.json (:attr:`meta`): what it reads and how it was made.

    Images are OpenCV arrays (BGR or grey uint8) or file paths. Every ``predict*`` returns the
    network's softmax (negative, positive, surprise; :attr:`calibration` applies only to the
    answers, :func:`make_answer`); with ``return_maps`` also a dict of the intermediate pictures."""

    def __init__(self, network: nn.Module, meta: dict, path: Path | None = None,
                 calibration: dict | None = None):
        self.network = network.eval()
        self.meta = meta
        self.config = Config.from_dict(meta["config"])
        self.path = path
        self.calibration = calibration  # calibration.json (:func:`calibrate`), or None

    @property
    def classes(self) -> list[str]:
        return [self.meta["classes"][str(k)] for k in range(len(self.meta["classes"]))]

    def __repr__(self) -> str:
        return (f"Model({self.path or 'not saved'}: {self.config.model}, profile "
                f"{self.meta.get('profile')}, seed {self.meta['seed']}, regions "
                f"{self.config.regions}, data {self.meta['data_fingerprint']})")

    # ----------------------------------------------------------------------- store

    def save(self, folder: Path | str) -> Path:
        """Write model.safetensors, then model.json (with the weights' SHA-256), into a temporary
        sibling renamed into place (:func:`htnetlib.io.write_folder`): an error (a full disk)
        leaves ``folder`` as it was. This configuration's calibration.json is kept; another's
        (or a damaged one) is left out, with a warning, once the new folder is in place."""
        from safetensors.torch import save

        folder = Path(folder)
        check_out_dir(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        blob = save(state, metadata={"format": "pt"})  # bytes: an OSError names the file
        try:
            calibration, stale = model_calibration(folder / CALIBRATION, self.meta["config"]), None
        except RunError as exc:
            calibration, stale = None, exc

        def fill(tmp: Path) -> None:
            atomic_write(tmp / WEIGHTS, lambda p: p.write_bytes(blob))
            self.meta["weights"] = {"file": WEIGHTS, "sha256": sha256(tmp / WEIGHTS)}
            write_json(tmp / META, self.meta)
            if calibration is not None:
                shutil.copy2(folder / CALIBRATION, tmp / CALIBRATION)

        write_folder(folder, fill)
        if stale is not None:
            warnings.warn(f"{stale}; removed it", stacklevel=2)
        self.path, self.calibration = folder, calibration
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> "Model":
        """Read a model folder, checking everything; one-line errors naming the file:

        DataError for a missing folder or file, model.json that is not JSON or lacks a field,
        weights that safetensors cannot read, weights whose names or shapes do not fit the
        configuration (strict) or whose SHA-256 is not model.json's record, a configuration that
        is invalid or does not build (a damaged file, not a bad setting), or a calibration.json
        that is damaged or of another configuration (RunError)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"{folder}: no such model folder (make one with htnet fit)")
        meta_path, weights_path = folder / META, folder / WEIGHTS
        meta = _read_meta(meta_path)
        config = _meta_config(meta, meta_path)
        try:
            network = build_model(config)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{meta_path}: the configuration does not build ({exc})") from None
        if not weights_path.is_file():
            raise DataError(f"{weights_path}: missing")
        try:
            state = load_file(str(weights_path))
        except Exception as exc:  # safetensors raises SafetensorError, OSError, ...
            why = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise DataError(f"{weights_path}: not a readable safetensors file ({why})") from None
        problem = _state_problem(network, state)
        if problem:
            raise DataError(f"{weights_path}: does not fit the configuration in {META} "
                            f"({problem})")
        if sha256(weights_path) != meta["weights"].get("sha256"):
            raise DataError(f"{weights_path}: SHA-256 differs from the one {META} records "
                            "(the weights were replaced or damaged after fitting)")
        network.load_state_dict(state, strict=True)
        return cls(network, meta, folder, model_calibration(folder / CALIBRATION, meta["config"]))

    # ----------------------------------------------------------------------- predict

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The network's logits (N, 3) of inputs (N, 3, S, S) (:func:`~htnetlib.data.regions.network_inputs`)."""
        with torch.no_grad():
            return self.network(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    def network_input(self, map28, apex=None) -> tuple[np.ndarray, dict]:
        """The (S, S, 3) uint8 picture the network sees for one map, as
        :func:`htnetlib.data.regions.region_inputs` builds it, and the landmarks used."""
        size, mode = self.config.image_size, self.config.regions
        m = check_map(map28)
        if size != MAP_SIZE:
            interp = cv2.INTER_AREA if size < MAP_SIZE else cv2.INTER_LINEAR
            m = cv2.resize(m, (size, size), interpolation=interp)
        if mode == "whole":
            return m, {"landmarks": None, "landmarks_found": None, "centres": None}
        if apex is None:
            raise ConfigError(f"this model crops the map around landmarks of the apex face "
                              f"(regions={mode}); give the apex face the map was computed from "
                              "(--apex FACE), or use a model fitted with --set regions=whole")
        lm = regions.image_landmarks(as_image(apex, "apex face"), mode)
        centres = regions.crop_centres(lm, mode, size)
        picture = regions.mosaic(m[None], centres)[0]
        found = bool(lm.found[0])
        return picture, {"landmarks": lm.points[0] if found else None, "landmarks_found": found,
                         "centres": centres[0]}

    def predict_map(self, map28, apex=None, *, return_maps: bool = False):
        """Probabilities (3,) of a release-style 28x28 map (channels strain, v, u; a path or
        an array). ``apex`` (the apex face) is needed unless the model's regions are whole."""
        picture, extra = self.network_input(map28, apex)
        x = np.ascontiguousarray(picture[None].transpose(0, 3, 1, 2), dtype=np.float32)
        logits = self.logits(x * self.config.input_scale)[0]
        probs = softmax(logits)
        if not return_maps:
            return probs
        return probs, {"map": check_map(map28), "input": picture, "logits": logits, **extra}

    def predict(self, onset, apex, *, return_maps: bool = False,
                flow_method: str = DEFAULT_FLOW):
        """Probabilities (3,) from an onset and an apex frame (section 3.1): face crop, flow,
        strain, the 28x28 map, the four regions, the network. Maps: onset_face, apex_face
        (BGR 224x224), flow (H, W, 2: u, v), strain, motion_px, map (strain, v, u), input,
        landmarks. Lists of frames (or (N, H, W, 3) arrays) give (N, 3):
        :meth:`predict_pairs`."""
        if _is_batch(onset) or _is_batch(apex):
            return self.predict_pairs(onset, apex, return_maps=return_maps,
                                      flow_method=flow_method)
        check_flow_method(flow_method)
        names = [str(f) if isinstance(f, (str, Path)) else w for f, w in
                 ((onset, "onset"), (apex, "apex"))]
        a, b = as_image(onset, names[0]), as_image(apex, names[1])
        if a.shape != b.shape:
            raise DataError(f"{names[1]}: {b.shape[1]}x{b.shape[0]} pixels, but the onset is "
                            f"{a.shape[1]}x{a.shape[0]}")
        check_picture(a, names[0])
        check_picture(b, names[1])
        try:
            onset_face, apex_face = flow.crop_face(a, b, FACE_SIZE)
        except DataError as exc:
            raise DataError(f"{names[0]}: {exc}") from None
        apex_landmarks = flow.detect_landmarks(apex_face)
        if apex_landmarks is None:  # checked like the onset: MTCNN finds no face there
            raise NoApexFace(f"{names[1]}: no face found in the apex frame (within the onset's "
                             "face box)")
        uv = flow.optical_flow(onset_face, apex_face, flow_method)
        motion = flow.motion_px(uv, apex_landmarks)
        map28 = np.ascontiguousarray(flow.flow_to_map(uv, MAP_SIZE)[..., ::-1])
        probs, maps = self.predict_map(map28, apex_face, return_maps=True)
        if not return_maps:
            return probs
        return probs, {"onset_face": onset_face, "apex_face": apex_face, "flow": uv,
                       "strain": flow.optical_strain(uv), "motion_px": motion, **maps}

    def predict_pairs(self, onsets, apexes, *, return_maps: bool = False,
                      flow_method: str = DEFAULT_FLOW):
        """Probabilities (N, 3) of N pairs (sequences of frames or paths, or (N, H, W, 3)
        arrays), one :meth:`predict` each; with ``return_maps`` also the list of maps."""
        onsets, apexes = list(onsets), list(apexes)
        if len(onsets) != len(apexes):
            raise DataError(f"{len(onsets)} onset frame(s) but {len(apexes)} apex frame(s)")
        done = [self.predict(a, b, return_maps=True, flow_method=flow_method)
                for a, b in zip(onsets, apexes)]
        probs = np.array([p for p, _ in done], dtype=np.float64).reshape(len(done), 3)
        return (probs, [m for _, m in done]) if return_maps else probs

    def answer(self, onset, apex, *, flow_method: str = DEFAULT_FLOW,
               force: bool = False) -> dict:
        """The answer to one pair as ``htnet predict --json`` prints it (keys in the module
        docstring): "no motion" (label None) below :data:`NO_MOTION_PX` unless ``force``."""
        start = time.perf_counter()
        probs, maps = self.predict(onset, apex, return_maps=True, flow_method=flow_method)
        files = {k: str(v) for k, v in (("onset", onset), ("apex", apex))
                 if isinstance(v, (str, Path))}
        return make_answer(self, probs, maps, flow_method=flow_method, force=force,
                           seconds=time.perf_counter() - start, input="pair", files=files)
    @property
    def identity(self) -> dict:
        """An answer's ``model``: path, profile, seed, data_fingerprint, sha256 (weights)."""
        return {"path": str(self.path) if self.path else None, "profile": self.meta.get(
            "profile"), "seed": self.meta["seed"], "data_fingerprint": self.meta[
            "data_fingerprint"], "sha256": self.meta["weights"].get("sha256")}

    def predict_sequence(self, frames, *, return_maps: bool = False,
                         apex_method: str = "lbp", flow_method: str = DEFAULT_FLOW):
        """Probabilities (3,) of a frame sequence (frame 0 the onset): the apex is spotted by
        :func:`htnetlib.data.flow.spot_apex` (D&C-RoIs, eq. 1, by default), then :meth:`predict`.
        A frame with no picture of a face (:func:`htnetlib.data.frames.picture_problem`), or
        a spotted apex where MTCNN finds none, is skipped with a warning and never the apex.
        Maps also hold ``apex_index`` and ``skipped_frames``."""
        if apex_method not in flow.APEX_METHODS:
            raise ConfigError(f"apex_method={apex_method!r}; choose one of "
                              f"{', '.join(flow.APEX_METHODS)}")
        frames = list(frames)
        images, names, skipped = sequence_pictures(frames)
        while True:
            good = [i for i in range(len(images)) if i not in skipped]
            if len(good) < 2:
                raise DataError(f"{names[0]}: no frame of the sequence but the onset shows a "
                                f"face ({skipped_words(names, skipped)})")
            try:
                apex = good[flow.spot_apex([images[i] for i in good], method=apex_method)]
            except DataError as exc:  # a frame too small for a face: name the sequence's first
                raise DataError(f"{names[0]}: {exc}") from None
            try:
                probs, maps = self.predict(frames[0] if isinstance(frames[0], (str, Path))
                                           else images[0], images[apex], return_maps=True,
                                           flow_method=flow_method)
                break
            except NoApexFace:
                skipped[apex] = "no face found (MTCNN)"  # spot again among the others
        for i in sorted(skipped):
            warnings.warn(f"{names[i]}: skipped, {skipped[i]}", stacklevel=2)
        maps = {"apex_index": apex, "skipped_frames": sorted(skipped), **maps}
        return (probs, maps) if return_maps else probs


class NoApexFace(DataError):
    """MTCNN finds no face in an apex frame (within the onset's face box)."""


def check_flow_method(method: str) -> str:
    """``method`` if :func:`htnetlib.data.flow.optical_flow` offers it, else ConfigError."""
    if method not in flow.FLOW_METHODS:
        raise ConfigError(f"flow_method={method!r}; choose one of {', '.join(flow.FLOW_METHODS)}")
    return method


def _is_batch(frames) -> bool:
    """Whether ``frames`` is several frames: a list or tuple, or an (N, H, W, 3) array."""
    return isinstance(frames, (list, tuple)) or (isinstance(frames, np.ndarray)
                                                 and frames.ndim == 4)


# the answer's regions_from, by landmarks_found (True, False, None: regions=whole)
REGIONS_FROM = {True: "landmarks", False: "fixed fallback", None: "whole map"}


def make_answer(model: Model, probs, maps: dict, *, flow_method: str | None, force: bool,
                seconds: float, **where) -> dict:
    """The answer dict of the module docstring from :meth:`Model.predict`'s probabilities and
    maps; ``where`` adds input, files, apex_frame."""
    motion = maps.get("motion_px")
    threshold = NO_MOTION_PX.get(flow_method) if motion is not None else None
    still = motion is not None and motion < threshold and not force
    return {"label": None if still else model.classes[int(np.argmax(probs))],
           **answer_probabilities(probs, model.classes, model.calibration),
           "no_motion": still, "forced": bool(force), "motion_threshold_px": threshold,
           "motion_px": None if motion is None else round(float(motion), 4),
           "flow_method": flow_method if motion is not None else None,
           "seconds": round(float(seconds), 4), "model": model.identity, **where,
           "landmarks_found": maps.get("landmarks_found"),
           "regions_from": REGIONS_FROM[maps.get("landmarks_found")]}


def _read_meta(path: Path) -> dict:
    """model.json as a dict with every required field; DataError naming the file otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: missing (not a model folder; make one with htnet fit)")
    meta = read_json(path)  # RunError (a DataError): not JSON, not an object
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise DataError(f"{path}: missing field(s) {', '.join(missing)}")
    if meta["format"] != FORMAT:
        raise DataError(f"{path}: format {meta['format']!r}, this version reads {FORMAT!r}")
    if meta["classes"] != {str(k): v for k, v in LABELS.items()}:
        raise DataError(f"{path}: classes {meta['classes']}, expected "
                        f"{ {str(k): v for k, v in LABELS.items()} }")
    if not isinstance(meta["weights"], dict) or not isinstance(meta["input"], dict):
        raise DataError(f"{path}: fields weights and input must be objects")
    return meta


def _meta_config(meta: dict, path: Path) -> Config:
    """The checked configuration of model.json, agreeing with its input convention.

    Every problem is a DataError: the configuration was read from a file, so a bad value is a
    damaged or edited model folder (exit 3), not a bad argument of the user's (exit 2)."""
    try:
        config = Config.from_dict(meta["config"])
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: config is not a configuration ({why})") from None
    try:
        problems = config.problems()
    except (TypeError, ValueError, AttributeError) as exc:  # a field of the wrong type
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: invalid configuration ({why})") from None
    if problems:
        raise DataError(f"{path}: invalid configuration: {'; '.join(problems)}")
    if config.model == "logreg":
        raise DataError(f"{path}: model=logreg has no network")
    expected = input_convention(config)
    for key in ("map_size", "channels", "input_scale", "regions", "image_size"):
        if meta["input"].get(key) != expected[key]:
            raise DataError(f"{path}: input.{key} is {meta['input'].get(key)!r}, expected "
                            f"{expected[key]!r} for this configuration")
    return config


def _state_problem(network: nn.Module, state: dict) -> str | None:
    """What keeps ``state`` from loading strictly into ``network`` (one line), or None."""
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} is {tuple(state[k].shape)}, expected {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    parts = [f"{len(names)} {what}, e.g. {names[0]}" for what, names in (
        ("tensor(s) missing", missing), ("unexpected tensor(s)", unexpected),
        ("shape mismatch(es)", shapes)) if names]
    return "; ".join(parts) or None
