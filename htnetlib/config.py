"""What a run trains: the configuration, the profiles (paper section 4.2) and their checks.

This module is in the lowest layer: the model, training and command-line layers import it; it
imports only :mod:`htnetlib.errors` of the package.

* :class:`Config` names everything that determines a run's predictions apart from the data and
  the seed. :meth:`Config.problems` lists what is wrong with one (types and ranges), and
  :func:`parse_value` reads a command-line ``KEY=VALUE`` by the field's type, so a bad value is
  one clear line before any run folder exists.
* ``PROFILES`` holds the paper's settings (``paper``), a scaled model for 2 CPU cores (``cpu``)
  and a tiny one for tests (``smoke``); ``BASELINES`` the Table 2 baselines and notebook 16's
  shallow networks per profile.
* :class:`FoldResult` is what training one held-out subject returns.
* A user's own network is a ``model`` of the form ``package.module:factory``
  (:func:`is_user_model`); it trains with the profile's HTNet schedule, and
  :func:`htnetlib.model.build.build_model` imports and calls the factory.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, TrainingError  # noqa: F401 (re-exported)

MODELS = ("htnet", "ststnet", "logreg", "rcn", "twostream")
# The models whose input adds the apex face in grey as a fourth channel (htnetlib.data.regions)
APEX_FACE_MODELS = ("twostream",)
# A user's model: ``package.module:factory``, a callable returning an nn.Module that maps the
# network input (N, 3, S, S) to (N, 3) logits (htnetlib.model.build.build_model).
USER_MODEL = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
REGION_MODES = ("official", "corrected", "whole")  # see htnetlib.data.regions
CLASS_WEIGHTS = ("none", "balanced")  # Config.class_weights (htnetlib.training.fold.class_weights)
LR_SCHEDULES = ("constant", "cosine")  # Config.lr_schedule
# Fields added after runs were stored, with their defaults: Config.to_dict leaves a field out
# at its default, so every run id stored before it existed is unchanged.
LATER_FIELDS = {"class_weights": "none", "mirror": False, "lr_schedule": "constant",
                "readouts": False}
# Config.readouts: the weight average over the last quarter of the epochs (the same epochs the
# "last 25% of epochs" votes take, htnetlib.evaluation.selection)
SWA_FRACTION = 0.25


@dataclass(frozen=True)
class Config:
    """Everything that determines a run's predictions, apart from the data and the seed."""

    model: str = "htnet"
    regions: str = "official"  # official | corrected | whole  (see htnetlib.data.regions)
    image_size: int = 28
    patch_size: int = 7
    dim: int = 256
    heads: int = 3
    num_hierarchies: int = 3
    block_repeats: tuple = (2, 2, 8)
    mlp_mult: int = 4
    dropout: float = 0.0
    epochs: int = 800
    lr: float = 5e-5
    batch_size: int = 256
    shuffle: bool = False  # the official DataLoader keeps the sample order
    input_scale: float = 1.0  # the official code feeds raw 0..255 values
    max_folds: int | None = None  # hold out only the first k subjects (smoke tests)
    permute_labels: bool = False  # null model: training labels permuted within each fold
    # Honest training choices (notebook 12); their defaults are the official code's training.
    class_weights: str = "none"  # none | balanced: eq. 7's sample weights w_i, 1 / class share
    mirror: bool = False  # left-right mirrored training faces, each sample with chance 1/2 per epoch
    lr_schedule: str = "constant"  # constant | cosine: cosine decay to 0 over the epochs
    # Test readouts that leave training untouched (htnetlib.training.fold.train_fold): besides
    # the model's probabilities, those of the mirrored test faces and of the weight average
    readouts: bool = False

    def to_dict(self) -> dict:
        """Every field, except a field of :data:`LATER_FIELDS` at its default value: run ids hash
        this dict, so runs stored before that field existed keep their ids."""
        d = dataclasses.asdict(self)
        d["block_repeats"] = list(self.block_repeats)
        for key, default in LATER_FIELDS.items():
            if d[key] == default:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """A config from :meth:`to_dict`; fields a stored file leaves out take their defaults."""
        d = dict(d)
        if "block_repeats" in d:
            d["block_repeats"] = tuple(d["block_repeats"])
        return cls(**d)

    def stored_dict(self) -> dict:
        """The fields that matter for this model, as a run's config.json stores them.

        The baselines read only a few of HTNet's fields; the others keep their defaults and are
        left out, so a stored baseline config says what the baseline used. The run id is still
        computed from :meth:`to_dict` (every field), so it does not change.
        """
        d = self.to_dict()
        if self.model == "htnet" or is_user_model(self.model):
            return d  # a user's factory receives the whole Config: every field may matter
        keep = USED_FIELDS[self.model]
        return {k: v for k, v in d.items() if k in keep}

    def problems(self) -> list[str]:
        """Every value of the wrong type or out of range, one line each (empty when valid)."""
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = FIELD_KINDS[f.name]
            if not _has_kind(value, kind):
                out.append(f"{f.name}={value!r} is not {_KIND_WORDS[kind]}")
        if out:
            return out
        if self.model not in MODELS and not is_user_model(self.model):
            out.append(f"model={self.model!r} is not one of {', '.join(MODELS)}, nor a "
                       "factory package.module:callable")
        if self.regions not in REGION_MODES:
            out.append(f"regions={self.regions!r} is not one of {', '.join(REGION_MODES)}")
        if self.class_weights not in CLASS_WEIGHTS:
            out.append(f"class_weights={self.class_weights!r} is not one of "
                       f"{', '.join(CLASS_WEIGHTS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            out.append(f"lr_schedule={self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        for name in ("image_size", "patch_size", "dim", "heads", "num_hierarchies", "mlp_mult",
                     "epochs", "batch_size"):
            if getattr(self, name) < 1:
                out.append(f"{name}={getattr(self, name)} must be at least 1")
        if self.max_folds is not None and self.max_folds < 1:
            out.append(f"max_folds={self.max_folds} must be at least 1 (or none for every "
                       "subject)")
        if not 0 <= self.dropout < 1:
            out.append(f"dropout={self.dropout} must lie in [0, 1)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            out.append(f"lr={self.lr} must be a positive number")
        if not (self.input_scale > 0 and math.isfinite(self.input_scale)):
            out.append(f"input_scale={self.input_scale} must be a positive number")
        if any(r < 1 for r in self.block_repeats):
            out.append(f"block_repeats={list(self.block_repeats)}: every level needs at least "
                       "one layer")
        if self.readouts and is_user_model(self.model):
            out.append(f"readouts=true is for the built-in models only (not {self.model})")
        if out or self.model != "htnet":
            return out
        if self.heads > self.dim:
            out.append(f"heads={self.heads} exceeds dim={self.dim} (each head needs a channel)")
        if len(self.block_repeats) != self.num_hierarchies:
            out.append(f"block_repeats={list(self.block_repeats)} needs one entry per level "
                       f"(num_hierarchies={self.num_hierarchies})")
        if self.image_size % self.patch_size:
            out.append(f"image_size={self.image_size} is not a multiple of "
                       f"patch_size={self.patch_size}")
        else:
            grid, blocks = self.image_size // self.patch_size, 2 ** (self.num_hierarchies - 1)
            if grid % blocks:
                out.append(f"a {grid}x{grid} patch grid does not split into the {blocks}x{blocks} "
                           f"blocks of {self.num_hierarchies} levels")
        return out

    def check(self) -> "Config":
        """``self`` if valid, else :class:`ConfigError` with every problem on one line."""
        problems = self.problems()
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return self


# The kind of every field: how a command-line value is read and what a valid one is.
FIELD_KINDS = {"model": "str", "regions": "str", "image_size": "int", "patch_size": "int",
               "dim": "int", "heads": "int", "num_hierarchies": "int", "block_repeats": "ints",
               "mlp_mult": "int", "dropout": "float", "epochs": "int", "lr": "float",
               "batch_size": "int", "shuffle": "bool", "input_scale": "float",
               "max_folds": "int?", "permute_labels": "bool", "class_weights": "str",
               "mirror": "bool", "lr_schedule": "str", "readouts": "bool"}
_KIND_WORDS = {"str": "a string", "int": "a whole number", "float": "a number",
               "bool": "true or false", "ints": "a list of whole numbers such as 2,2,8",
               "int?": "a whole number or none"}
# The fields each baseline reads (htnetlib.model.baselines); HTNet reads every field.
USED_FIELDS = {
    "ststnet": {"model", "regions", "image_size", "dropout", "epochs", "lr", "batch_size",
                "shuffle", "input_scale", "max_folds", "permute_labels", *LATER_FIELDS},
    "logreg": {"model", "regions", "image_size", "epochs", "input_scale", "max_folds",
               "permute_labels", "readouts"},
}
USED_FIELDS["rcn"] = USED_FIELDS["twostream"] = USED_FIELDS["ststnet"]


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _has_kind(value, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return _is_int(value)
    if kind == "int?":
        return value is None or _is_int(value)
    if kind == "float":
        return _is_int(value) or isinstance(value, (float, np.floating))
    if kind == "bool":
        return isinstance(value, (bool, np.bool_))
    if kind == "ints":
        return isinstance(value, tuple) and len(value) > 0 and all(_is_int(v) for v in value)
    raise AssertionError(kind)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_value(key: str, text: str):
    """Read ``text`` as the value of Config field ``key``; :class:`ConfigError` if it can't be."""
    if key not in FIELD_KINDS:
        raise ConfigError(f"unknown config key {key!r}; known: {', '.join(FIELD_KINDS)}")
    kind, raw = FIELD_KINDS[key], text.strip()
    bad = ConfigError(f"{key}={text!r} is not {_KIND_WORDS[kind]}")
    if kind == "str":
        return raw
    if kind == "bool":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise bad
    if kind == "int?" and raw.lower() in ("none", "null", ""):
        return None
    if kind in ("int", "int?"):
        try:
            return int(raw)
        except ValueError:
            raise bad from None
    if kind == "float":
        try:
            value = float(raw)
        except ValueError:
            raise bad from None
        if not math.isfinite(value):
            raise bad
        return value
    # ints: 2,2,8 or [2, 2, 8] or (2, 2, 8)
    parts = [p for p in raw.strip("[]()").replace(" ", "").split(",") if p]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise bad from None
    if not values:
        raise bad
    return values


def apply_overrides(config: Config, pairs: list[str]) -> Config:
    """``config`` with ``KEY=VALUE`` strings applied, typed and checked as a whole."""
    changes = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
        changes[key.strip()] = parse_value(key.strip(), value)
    return dataclasses.replace(config, **changes).check()


PROFILES: dict[str, Config] = {
    # The paper's settings exactly (section 4.2, Table 5's default): for a GPU.
    "paper": Config(),
    # All 68 folds on 2 CPU cores in about 4 minutes (2 worker processes): a narrower,
    # shallower HTNet of the same shape (3 levels, one token per block, official regions) with a
    # larger learning rate and fewer epochs. The README explains the scaling.
    "cpu": Config(dim=32, heads=1, block_repeats=(1, 1, 2), epochs=100, lr=1e-3),
    # A few folds, a tiny model, a few epochs: for tests and the notebooks' smoke run.
    "smoke": Config(dim=8, heads=1, block_repeats=(1, 1, 1), epochs=3, lr=1e-3, max_folds=3),
}

# Baselines of Table 2 on the same folds (htnetlib.model.baselines), per profile. STSTNet sees the
# whole flow map scaled to 0..1: on a GPU with its paper's schedule (Adam 5e-5, 500 epochs); on
# a CPU with a 5x shorter schedule at a 5x larger step. Logistic regression is one fit per fold.
BASELINES: dict[str, dict[str, Config]] = {
    "ststnet": {
        "paper": Config(model="ststnet", regions="whole", epochs=500, lr=5e-5, input_scale=1 / 255),
        "cpu": Config(model="ststnet", regions="whole", epochs=100, lr=2.5e-4, input_scale=1 / 255),
        "smoke": Config(model="ststnet", regions="whole", epochs=3, lr=1e-3, input_scale=1 / 255,
                        max_folds=3),
    },
    "logreg": {p: Config(model="logreg", regions="whole", epochs=1,
                         max_folds=3 if p == "smoke" else None) for p in PROFILES},
}
# Notebook 16's shallow networks (htnetlib.model.shallow) on the whole map scaled to 0..1, trained
# with the honest choices notebook 12 made for HTNet (balanced class weights, mirrored training
# faces, a cosine schedule) and every readout stored; the cpu profile's 100 epochs at Adam 1e-3.
for _name in ("rcn", "twostream"):
    _shallow = Config(model=_name, regions="whole", epochs=100, lr=1e-3, input_scale=1 / 255,
                      class_weights="balanced", mirror=True, lr_schedule="cosine", readouts=True)
    BASELINES[_name] = {"paper": _shallow, "cpu": _shallow,
                        "smoke": dataclasses.replace(_shallow, epochs=3, max_folds=3)}


def is_user_model(model) -> bool:
    """Whether ``model`` has the form of a user's factory, ``package.module:callable`` (the
    format only: the import is checked when the model is built)."""
    return isinstance(model, str) and USER_MODEL.fullmatch(model) is not None


def profile_config(profile: str, model: str = "htnet") -> Config:
    """The configuration a profile trains for ``model``: htnet, ststnet, logreg, or a user's
    factory ``package.module:callable``, which trains with the profile's HTNet schedule
    (epochs, lr, batch_size, regions, image_size, input_scale, ...) and ``model`` replaced."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if model == "htnet":
        return PROFILES[profile]
    if is_user_model(model):
        return dataclasses.replace(PROFILES[profile], model=model)
    if model not in BASELINES:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODELS)} or a "
                          "factory package.module:callable")
    return BASELINES[model][profile]


def check_seed(seed) -> int:
    """A run seed: a whole number from 0 to 2**31 - 1 (numpy and torch both take it)."""
    if not _is_int(seed) or not 0 <= seed < 2**31:
        raise ConfigError(f"seed={seed!r} must be a whole number from 0 to {2**31 - 1}")
    return int(seed)


@dataclass
class FoldResult:
    """One held-out subject's training: predictions after every epoch and the curves."""

    pred: np.ndarray  # (epochs, n_test) predicted class after each epoch
    train_loss: np.ndarray  # (epochs,)
    train_acc: np.ndarray  # (epochs,)
    test_acc: np.ndarray  # (epochs,)
    seconds: float = 0.0
    logits: np.ndarray | None = None  # (n_test, classes) after the final epoch
    prob: np.ndarray | None = None  # (epochs, n_test, classes) softmax after each epoch, float16
    # Config.readouts, each like prob: the mirrored test faces, the weight average (the model
    # itself before the last quarter of epochs begins), and the weight average on the mirror
    prob_mirror: np.ndarray | None = None
    prob_swa: np.ndarray | None = None
    prob_swa_mirror: np.ndarray | None = None
