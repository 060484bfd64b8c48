"""The experiment registry: every configuration the notebooks of a profile train, declared once.

The plan (:mod:`htnetlib.study.plan`), ``make reproduce``, ``htnet grid``, the notebooks and the
provenance tests all read this module, so an experiment added here is planned, submitted,
rendered and recomputed everywhere.

* :data:`TABLE2`: the measured rows of Table 2 (notebooks 05 and 11).
* :data:`ABLATIONS`: the grids of section 4.4 (Table 4, Figures 5 and 6, Table 5; notebooks
  06-09), each scaled by the profile.
* :data:`SELECTION_VARIANTS`: notebook 12's training variants, fixed before any was trained;
  :data:`NESTED_VARIANTS` get the nested rule's inner fits; :data:`HEADLINE` and
  :data:`CONFIRM_SEEDS`: the pre-registered confirmation on fresh seeds.
* :data:`LODO_MODELS`: notebook 13's leave-one-dataset-out models.
* :data:`SHALLOW_MODELS`: notebook 16's shallow networks beside HTNet, and
  :data:`CROSSFIT_CONFIRM_SEEDS`, the seeds of its cross-fitted confirmation.
* :data:`CROP_MODES`: notebook 05's crop modes, official (the profile's default) and corrected,
  each trained with every seed so their accuracy can be compared.
* :func:`experiments`: every job the notebooks of a profile need (LOSO runs, nested inner fits,
  leave-one-dataset-out results), read from the lists above, in notebook order.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .. import paper
from ..config import PROFILES, Config, profile_config

if TYPE_CHECKING:
    import pandas as pd

SEEDS = (0, 1, 2)  # the notebooks' default seeds

# The measured rows of Table 2: (model, changes to the profile's configuration).
TABLE2 = {
    "HTNet": ("htnet", {}),
    "HTNet without regions (whole map)": ("htnet", {"regions": "whole"}),
    "STSTNet": ("ststnet", {}),
    "Logistic regression": ("logreg", {}),
}


# Notebook 05's crop modes: name -> changes to the profile's configuration. The official mode
# reads landmark (x, y) as (row, col) and so misplaces the four regions; the corrected mode
# crops where the landmarks are. Both are trained with every seed, on the same folds.
CROP_MODES = {"official": {}, "corrected": {"regions": "corrected"}}


def crop_config(mode: str, profile: str) -> Config:
    """The configuration of crop mode ``mode`` (:data:`CROP_MODES`) in ``profile``."""
    return dataclasses.replace(profile_config(profile), **CROP_MODES[mode])


def table2_config(name: str, profile: str) -> Config:
    """The configuration of Table 2 row ``name`` (:data:`TABLE2`) in ``profile``."""
    model, changes = TABLE2[name]
    return dataclasses.replace(profile_config(profile, model), **changes)


def table2_seeds(name: str, seeds) -> list[int]:
    """The seeds Table 2 row ``name`` is trained with: logistic regression is deterministic and
    fitted once (seed 0), every other row with every seed."""
    return [0] if TABLE2[name][0] == "logreg" else list(seeds)


# The training variants, fixed before any was trained: name -> changes to the profile's
# configuration (notebook 12 states the plan). Single changes are trained with the first seed,
# the plain model and the two combinations with every seed; the nested rule runs for
# NESTED_VARIANTS (first seed), leave-one-dataset-out for LODO_MODELS.
SELECTION_VARIANTS = {
    "plain": {},
    "class-balanced loss (eq. 7)": {"class_weights": "balanced"},
    "mirror augmentation": {"mirror": True},
    "cosine schedule": {"lr_schedule": "cosine"},
    "all three": {"class_weights": "balanced", "mirror": True, "lr_schedule": "cosine"},
    "all three, whole map": {"regions": "whole", "class_weights": "balanced", "mirror": True,
                             "lr_schedule": "cosine"},
}


EVERY_SEED = ("plain", "all three", "all three, whole map")


NESTED_VARIANTS = ("plain", "all three", "all three, whole map")


# variants whose nested rule runs on every seed, so its rows compare with the seed rules on the
# same seeds (the other variants: the first seed; each run's rules meet on that run's seed)
NESTED_EVERY_SEED = ("all three, whole map",)


def nested_seeds(name: str, seeds) -> list[int]:
    """The seeds whose runs of variant ``name`` get the nested rule's inner fits."""
    return list(seeds) if name in NESTED_EVERY_SEED else list(seeds)[:1]


# The pre-registered confirmation (results/preregistration/, committed before these seeds were
# trained): the honest row chosen on SEEDS, and the plain baseline, on fresh seeds. The first
# confirmation seed of the headline also gets inner fits: its stored probabilities are
# calibrated with a temperature fitted on them.
CONFIRM_SEEDS = (3, 4, 5)
HEADLINE = {"variant": "all three, whole map", "rule": "vote of seeds x last 25% of epochs"}
CONFIRM_VARIANTS = ("plain", HEADLINE["variant"])

# Notebook 15: two of notebook 12's variants trained again with readouts (Config.readouts: the
# mirror and the weight average of the same training) on the choosing seeds, then, after a
# second pre-registration, on fresh seeds (htnetlib.study.readouts)
READOUT_VARIANTS = ("all three, whole map", "all three")
READOUT_CONFIRM_SEEDS = (6, 7, 8)


# Notebook 16: shallow networks beside notebook 15's readout runs, every readout stored
# (htnetlib.study.crossfit): name -> (model, changes to the profile's configuration). Logistic
# regression is one fit per fold whatever the seed, so it is trained with the first seed only.
SHALLOW_MODELS = {"RCN": ("rcn", {}), "two-stream": ("twostream", {}),
                  "STSTNet": ("ststnet", {"readouts": True}),
                  "logistic regression": ("logreg", {"readouts": True})}
# the cross-fitted confirmation's fresh seeds (results/preregistration)
CROSSFIT_CONFIRM_SEEDS = (9, 10, 11)
# the cpu profile's cross-fitted choice on SEEDS (htnetlib.study.crossfit.choose on the
# committed split), made by the pre-registered rule before any run of CROSSFIT_CONFIRM_SEEDS:
# half -> the candidate chosen on it; notebook 16 checks it against the choice it computes
CROSSFIT_CHOSEN: dict | None = {
    "A": {"model": "every model", "readout": "SWA + mirror",
          "rule": "vote of seeds x last 25% of epochs"},
    "B": {"model": "whole map + regions", "readout": "SWA + mirror",
          "rule": "vote of seeds x last 25% of epochs"},
}


def shallow_config(name: str, profile: str) -> Config:
    """Notebook 16's shallow model ``name`` (:data:`SHALLOW_MODELS`) in ``profile``."""
    model, changes = SHALLOW_MODELS[name]
    return dataclasses.replace(profile_config(profile, model), **changes)


def shallow_seeds(name: str, seeds) -> list[int]:
    """The seeds model ``name`` is trained with: the first alone for logistic regression."""
    return list(seeds)[:1] if SHALLOW_MODELS[name][0] == "logreg" else list(seeds)


# Notebook 16's groups of runs (htnetlib.study.crossfit): notebook 15's two HTNet variants with
# readouts and the shallow models; its models pool one or more groups (notebook 15's three
# models, each shallow network alone, and ensembles across architectures)
CROSSFIT_HTNET = {"whole map": "all three, whole map", "regions": "all three"}
CROSSFIT_GROUPS = (*CROSSFIT_HTNET, *SHALLOW_MODELS)
CROSSFIT_MODELS = {
    "whole map": ("whole map",), "regions": ("regions",),
    "whole map + regions": ("whole map", "regions"),
    "RCN": ("RCN",), "two-stream": ("two-stream",), "STSTNet": ("STSTNet",),
    "logistic regression": ("logistic regression",),
    "whole map + regions + RCN": ("whole map", "regions", "RCN"),
    "whole map + regions + two-stream": ("whole map", "regions", "two-stream"),
    "whole map + regions + STSTNet": ("whole map", "regions", "STSTNet"),
    "RCN + two-stream + STSTNet": ("RCN", "two-stream", "STSTNet"),
    "every model": CROSSFIT_GROUPS,
}
# the current headline's model (htnetlib.study.readouts.PRIMARY), the cross-fitted baseline
CROSSFIT_HEADLINE = "whole map + regions"


def group_config(group: str, profile: str) -> Config:
    """The configuration of notebook 16's runs of ``group``."""
    if group in CROSSFIT_HTNET:
        return readout_config(CROSSFIT_HTNET[group], profile)
    return shallow_config(group, profile)


def group_seeds(group: str, seeds) -> list[int]:
    """The seeds of ``group``'s runs: every seed, the first alone for logistic regression."""
    return shallow_seeds(group, seeds) if group in SHALLOW_MODELS else list(seeds)


def runs_used(model: str, seeds) -> int:
    """How many runs notebook 16's ``model`` pools with ``seeds``."""
    return sum(len(group_seeds(g, seeds)) for g in CROSSFIT_MODELS[model])


def needed_groups(chosen: dict[str, dict], baseline: dict) -> tuple[str, ...]:
    """The groups the fresh seeds train: those of both chosen candidates and of the baseline,
    in :data:`CROSSFIT_GROUPS` order."""
    wanted = {g for c in (*chosen.values(), baseline) for g in CROSSFIT_MODELS[c["model"]]}
    return tuple(g for g in CROSSFIT_GROUPS if g in wanted)


def matched_members(n: int, seeds) -> list[tuple[str, int]]:
    """The compute-matched baseline's first ``n`` HTNet runs: whole map and regions of the
    first seed, then of the next, and so on past ``seeds``' last (``seeds`` must be
    consecutive)."""
    first = list(seeds)[0]
    return [(("whole map", "regions")[k % 2], first + k // 2) for k in range(n)]


def confirm_members(chosen: dict[str, dict], seeds) -> list[tuple[str, int]]:
    """Every (group, seed) the fresh seeds train for ``chosen``: the groups of both chosen
    candidates and of the headline (:func:`needed_groups`), then the compute-matched
    headline's HTNet runs not among them (:func:`matched_members`)."""
    out = [(g, s) for g in needed_groups(chosen, {"model": CROSSFIT_HEADLINE})
           for s in group_seeds(g, seeds)]
    n = max(runs_used(c["model"], seeds) for c in chosen.values())
    return out + [m for m in matched_members(n, seeds) if m not in out]


def chosen_note(chosen: dict[str, dict], profile: str, committed: bool) -> str:
    """Whether ``chosen`` (made on the committed split or not) is the choice registered in
    :data:`CROSSFIT_CHOSEN` (the ``cpu`` profile's, on the committed split) before the
    confirming runs of a chosen candidate were trained."""
    registered = CROSSFIT_CHOSEN if profile == "cpu" and committed else None
    if registered is None:
        return ("No choice is registered for these runs (the registry holds the **cpu** "
                "profile's, on the release): the fresh seeds train what the choice made here "
                "needs.")
    if chosen == registered:
        return ("The choice made here is the one registered in "
                "`htnetlib.study.experiments.CROSSFIT_CHOSEN`, committed before any confirming "
                "run of a chosen candidate was trained.")
    return ("**The choice made here differs from the registered one** "
            "(`htnetlib.study.experiments.CROSSFIT_CHOSEN`): the stored runs of seeds 0-2 are "
            "not the ones the choice was made on.")


def readout_config(name: str, profile: str) -> Config:
    """Notebook 12's variant ``name`` in ``profile`` with readouts on."""
    return dataclasses.replace(selection_config(name, profile), readouts=True)


LODO_MODELS = {"HTNet": ("htnet", {}), "HTNet, all three": ("htnet", SELECTION_VARIANTS["all three"]),
               "STSTNet": ("ststnet", {}), "Logistic regression": ("logreg", {})}



def selection_config(name: str, profile: str) -> Config:
    """The configuration of training variant ``name`` (:data:`SELECTION_VARIANTS`) in ``profile``."""
    return dataclasses.replace(profile_config(profile), **SELECTION_VARIANTS[name])


def selection_seeds(name: str, seeds) -> list[int]:
    """The seeds variant ``name`` is trained with: every seed, or the first for a single change."""
    return list(seeds) if name in EVERY_SEED else list(seeds)[:1]


def lodo_config(name: str, profile: str) -> Config:
    """The configuration of leave-one-dataset-out model ``name`` (:data:`LODO_MODELS`)."""
    model, changes = LODO_MODELS[name]
    return dataclasses.replace(profile_config(profile, model), **changes)



# --------------------------------------------------------------------------- section 4.4

PAPER_DEFAULT = PROFILES["paper"]

def _block_size(p: int, base: Config) -> dict:
    return {"patch_size": p, "image_size": 4 * p}


def _dim(d: int, base: Config) -> dict:
    scaled, rest = divmod(d * base.dim, PAPER_DEFAULT.dim)
    if rest or scaled < 1:
        raise ValueError(f"hidden dimension {d} does not scale to an integer width for a "
                         f"default width of {base.dim} (the paper's is {PAPER_DEFAULT.dim})")
    return {"dim": scaled}


def _heads(h: int, base: Config) -> dict:
    return {"heads": h}


def _layers(n: int, base: Config) -> dict:
    if base.block_repeats == PAPER_DEFAULT.block_repeats:
        return {"block_repeats": (2, 2, n)}
    return {"block_repeats": (*base.block_repeats[:2], n // 2)}


@dataclass(frozen=True)
class Ablation:
    """One row of section 4.4: a setting, its grid, and what the paper reports for it."""

    key: str
    item: str  # what it reproduces, for provenance lines
    setting: str  # the varied setting, as a column header
    values: tuple  # the paper's grid
    paper_default: int
    changes: Callable[[int, Config], dict]
    label: Callable[[int], str]
    cited: dict  # grid value -> {group: (UF1, UAR)}; only what the paper states in numbers
    scaling: str  # how a smaller profile maps the grid

    def config(self, value: int, profile: str) -> Config:
        """The configuration of grid point ``value`` under ``profile``."""
        base = profile_config(profile)
        return dataclasses.replace(base, **self.changes(value, base))

    def grid(self, profile: str) -> pd.DataFrame:
        """Grid value, the paper's setting, the profile's setting and whether it is the default."""
        import pandas as pd

        base = profile_config(profile)
        rows = []
        for v in self.values:
            cfg = self.config(v, profile)
            rows.append({self.setting: self.label(v), "paper setting": describe(
                self.config(v, "paper"), self.key), f"{profile} setting": describe(cfg, self.key),
                "default": cfg == base})
        return pd.DataFrame(rows)


def describe(cfg: Config, key: str) -> str:
    if key == "block_size":
        p = cfg.patch_size
        return f"blocks {p}/{2 * p}/{4 * p}, image {cfg.image_size}"
    if key == "dim":
        return f"dim {cfg.dim}"
    if key == "heads":
        return f"heads {cfg.heads} x {cfg.dim // cfg.heads} channels (dim {cfg.dim})"
    return "layers (%d, %d, %d)" % tuple(cfg.block_repeats)


ABLATIONS: dict[str, Ablation] = {
    "block_size": Ablation(
        key="block_size", item="Table 4 (block size)", setting="block size (bottom level)",
        values=(5, 6, 7, 8, 9, 10), paper_default=7, changes=_block_size,
        label=lambda p: f"{p}x{p}", cited=paper.TABLE4,
        scaling="Every profile uses the paper's block sizes P and image size 4P. The release holds "
                "28x28 flow maps only, so the maps are resized to 4P x 4P and the four region "
                "crops (2P x 2P around the landmarks) scale with them; P = 7 is the release's "
                "own size."),
    "dim": Ablation(
        key="dim", item="Figure 5 (hidden dimension)", setting="hidden dimension (paper grid)",
        values=(64, 128, 192, 256, 384, 512), paper_default=256, changes=_dim,
        label=str, cited={256: paper.TABLE2["HTNet"]},
        scaling="A profile scales the hidden dimension by its default width over the paper's "
                "256: the cpu profile (dim 32) divides the grid by 8 (8, 16, 24, 32, 48, 64)."),
    "heads": Ablation(
        key="heads", item="Figure 6 (heads)", setting="heads (bottom level)",
        values=(1, 2, 3, 4, 6, 8), paper_default=3, changes=_heads,
        label=str, cited={3: paper.TABLE2["HTNet"]},
        scaling="Head counts are not scaled: every profile tries 1 to 8 heads at its own width "
                "(level i has heads x 2^(i-1), each head dim/heads wide). The cpu profile's "
                "default is 1 head, so its default is the first grid point, not the paper's 3."),
    "layers": Ablation(
        key="layers", item="Table 5 (transformer layers)",
        setting="transformer layers (paper grid)",
        values=(2, 4, 6, 8, 10, 12), paper_default=8, changes=_layers,
        label=lambda n: f"(2, 2, {n})", cited=paper.TABLE5,
        scaling="The cpu profile's default (1, 1, 2) divides the paper's (2, 2, 8) by (2, 2, 4), "
                "but L/4 is no whole number for L = 2, 6, 10. Smaller profiles therefore keep "
                "their first two levels and use L/2 top-level layers: (1, 1, 1) to (1, 1, 6), the "
                "same six-fold range as the paper's 2 to 12. The cpu default (1, 1, 2) is the "
                "L = 4 grid point."),
}



# --------------------------------------------------------------------------- the registry

# a LOSO run, the nested inner fits of a run, a leave-one-dataset-out result
KINDS = ("loso", "nested", "lodo")


@dataclass(frozen=True)
class Experiment:
    """One job the notebooks need: a LOSO run (:func:`htnetlib.training.loso.run_loso`), the
    nested rule's inner fits of a run (:func:`htnetlib.training.nested.run_nested`, stored in
    ``<run>/inner/``) or a leave-one-dataset-out result
    (:func:`htnetlib.training.lodo.run_lodo`); ``why`` names every notebook that reads it."""

    kind: str
    config: Config
    seed: int
    why: tuple = ()


def experiments(profile: str, seeds=SEEDS, confirm_seeds=CONFIRM_SEEDS,
                readout_confirm_seeds=READOUT_CONFIRM_SEEDS) -> list[Experiment]:
    """Every job the notebooks of ``profile`` need, in notebook order, each once.

    A job several notebooks need (same kind, configuration and seed) is listed where it first
    appears and keeps every reason. Seeds follow the notebooks: Table 2's rows and the seed
    spreads with every seed, logistic regression and single changes with the first (see
    :func:`table2_seeds`, :func:`selection_seeds`), notebook 13's models as it picks them (every
    seed, logistic regression the first only).
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("experiments: no seeds given")
    found: dict[tuple, tuple[Experiment, list]] = {}

    def need(kind: str, config: Config, seed: int, why: str) -> None:
        key = (kind, json.dumps(config.to_dict(), sort_keys=True), int(seed))
        found.setdefault(key, (Experiment(kind, config, int(seed)), []))[1].append(why)

    default = profile_config(profile)
    need("loso", default, seeds[0], "04 training")
    for name in TABLE2:
        cfg = table2_config(name, profile)
        for s in table2_seeds(name, seeds):
            need("loso", cfg, s, f"05 Table 2: {name}")
    for mode in CROP_MODES:
        for s in seeds:
            need("loso", crop_config(mode, profile), s, f"05 crop mode: {mode}")
    for nb, key in (("06", "block_size"), ("07", "dim"), ("08", "heads"), ("09", "layers")):
        ab = ABLATIONS[key]
        for v in ab.values:
            need("loso", ab.config(v, profile), seeds[0], f"{nb} {ab.item}: {ab.label(v)}")
        for s in seeds:
            need("loso", default, s, f"{nb} seed spread")
    need("loso", dataclasses.replace(default, permute_labels=True), 0, "11 null model")
    for s in seeds:
        need("loso", table2_config("STSTNet", profile), s, "11 protocol audit")
    for name in SELECTION_VARIANTS:
        for s in selection_seeds(name, seeds):
            need("loso", selection_config(name, profile), s, f"12 honest selection: {name}")
    for name in CONFIRM_VARIANTS:
        for s in confirm_seeds:
            need("loso", selection_config(name, profile), s, f"12 confirmation: {name}")
    # notebook 15's runs are LOSO runs like the above (the kinds stay in order; 13 has none)
    for name in READOUT_VARIANTS:
        for s in seeds:
            need("loso", readout_config(name, profile), s, f"15 readouts: {name}")
        for s in readout_confirm_seeds:
            need("loso", readout_config(name, profile), s, f"15 second confirmation: {name}")
    for name in SHALLOW_MODELS:
        for s in shallow_seeds(name, seeds):
            need("loso", shallow_config(name, profile), s, f"16 candidates: {name}")
    if CROSSFIT_CHOSEN is not None:
        for g, s in confirm_members(CROSSFIT_CHOSEN, CROSSFIT_CONFIRM_SEEDS):
            need("loso", group_config(g, profile), s, f"16 cross-fitted confirmation: {g}")
    for name in NESTED_VARIANTS:
        for s in nested_seeds(name, seeds):
            need("nested", selection_config(name, profile), s, f"12 nested rule: {name}")
    if confirm_seeds:
        need("nested", selection_config(HEADLINE["variant"], profile), list(confirm_seeds)[0],
             "12 calibration: temperature from inner fits")
    for name, (model, _) in LODO_MODELS.items():
        for s in (seeds[:1] if model == "logreg" else seeds):
            need("lodo", lodo_config(name, profile), s, f"13 leave one dataset out: {name}")
    return [dataclasses.replace(e, why=tuple(why)) for e, why in found.values()]
