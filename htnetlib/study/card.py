"""MODEL_CARD.md: what a fitted model is, how well its configuration does, what it is not for.

``htnet fit`` writes the card beside model.safetensors and model.json (:mod:`htnetlib.predict`),
atomically; the committed model in ``results/models/`` carries one made by the same function
(:func:`write_card`). The card states:

* the data (the release's fingerprint, samples and class counts) and the configuration;
* the **honest** leave-one-subject-out score of that configuration, seed and data, read from the
  stored run (:func:`htnetlib.training.store.run_id` under ``results/runs``, its metrics.json):
  composite UF1 and UAR of the final epoch (no test label used), with the **oracle** number
  (each subject's best epoch on its own test labels, the paper's protocol) labelled as such;
  where no run is stored the card says so rather than give a number. The fitted model itself
  has no held-out score: it was trained on every sample;
* the calibration, where the folder holds calibration.json (``htnet calibrate``,
  :func:`htnetlib.predict.calibrate`): the temperature, the runs it was fitted on and the ECE
  (and NLL) before and after, every number read from that file (:attr:`Model.calibration`);
  otherwise that the probabilities are not calibrated;
* intended use and limits: lab recordings of 68 subjects in three datasets (SMIC-HS, CASME II,
  SAMM; section 4.1), three classes, posed or elicited expressions; a research tool, not for
  judging anyone's emotions, never without consent.

The card holds nothing that changes between two writes of the same model (no clock), so writing
it again leaves the committed file as it is.

It sits in the study layer: it reads :mod:`htnetlib.predict` and :mod:`htnetlib.training`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import Config
from ..io import ROOT, write_text
from ..predict import CALIBRATION, CARD, Model
from ..training.store import run_id

RUNS = ROOT / "results" / "runs"


def stored_score(model: Model, runs_dir: Path | str = RUNS) -> tuple[str, dict | None]:
    """The stored LOSO run of the model's configuration, seed and data: its id and the
    composite ``{"honest": {"uf1", "uar"}, "oracle": {...}}`` from its metrics.json, or None
    where that run is not stored (or its metrics.json is unreadable)."""
    meta = model.meta
    rid = run_id(Config.from_dict(meta["config"]), meta["seed"], meta["data_fingerprint"],
                 meta.get("profile"))
    try:
        metrics = json.loads((Path(runs_dir) / rid / "metrics.json").read_text())
        score = {p: {k: float(metrics[p]["full"][k]) for k in ("uf1", "uar", "n")}
                 for p in ("honest", "oracle")}
    except (OSError, ValueError, KeyError, TypeError):
        return rid, None
    return rid, score


def calibration_text(model: Model) -> str:
    """The card's calibration section, from the model's calibration.json (:attr:`Model.calibration`,
    read by :meth:`Model.load`): nothing here is typed, every number comes from the file."""
    cal = model.calibration
    if cal is None:
        return ("None: the probabilities `htnet predict` gives are the network's softmax and are "
                "**not calibrated** (0.9 is not right 9 times in 10). `htnet calibrate --model "
                "DIR --runs RUN_DIR ...` fits a temperature on stored LOSO runs of this "
                "configuration.")
    runs = ", ".join(f"`{r}`" for r in cal.get("runs", [])) or "(not recorded)"
    return (f"Temperature scaling (Guo et al. 2017): `htnet predict` answers "
            f"softmax(logits / T) with **T = {cal['temperature']:.4f}** (`{CALIBRATION}`). "
            f"Method: {cal.get('method')}; fitted on {cal.get('samples')} held-out "
            f"final-epoch probabilities of the run(s) {runs}. The model itself was fitted on "
            "every sample, so a new face belongs to none of those held-out subjects.\n\n"
            + out_of_sample_text(cal) +
            "The temperature never changes the predicted class (the argmax), only how sure the "
            "probabilities say it is.")


def out_of_sample_text(cal: dict) -> str:
    """The card's calibration table: before and after T, in-sample and, where calibration.json
    holds them (:func:`htnetlib.evaluation.calibration.out_of_sample`), out of sample."""
    oos = cal.get("out_of_sample") or {}
    cols = [("in-sample (T fitted on these same probabilities)", cal.get("ece_after"),
             cal.get("nll_after"))]
    words = {"by_subject": "each held-out subject, T fitted on the other {others} subjects "
                           "(T {temperature_min:.2f}-{temperature_max:.2f})",
             "by_run": "each run, T fitted on the other runs "
                       "(T {temperature_min:.2f}-{temperature_max:.2f})"}
    for key in ("by_subject", "by_run"):
        if key in oos:
            text = words[key].format(others=oos[key]["groups"] - 1, **oos[key])
            cols.append((f"out of sample: {text}", oos[key]["ece"],
                         oos[key]["nll"]))
    head = "| on those held-out probabilities | before | " + " | ".join(c[0] for c in cols)
    table = (f"{head} |\n|---|---|{'---|' * len(cols)}\n"
             f"| expected calibration error (10 bins) | {cal.get('ece_before')} | "
             + " | ".join(str(c[1]) for c in cols) + " |\n"
             f"| negative log-likelihood | {cal.get('nll_before')} | "
             + " | ".join(str(c[2]) for c in cols) + " |\n\n")
    if "by_subject" in oos:
        b = oos["by_subject"]
        ece_cmp = ("above" if b["ece"] > cal.get("ece_after") else "not above")
        nll_cmp = ("above" if b["nll"] > cal.get("nll_after") else "not above")
        return table + (f"The card's figure is the out-of-sample one by held-out subject, what "
                        f"to expect for people the temperature never saw: **ECE {b['ece']}** "
                        f"after T (from {cal.get('ece_before')} before), {ece_cmp} the in-sample "
                        f"{cal.get('ece_after')}; the NLL, which T minimises, is {b['nll']} out "
                        f"of sample, {nll_cmp} the in-sample {cal.get('nll_after')}. ")
    return table + ("The figures after are in-sample: T was fitted on the same probabilities "
                    "(`htnet calibrate` again adds out-of-sample ones). ")


def card_text(model: Model, runs_dir: Path | str = RUNS) -> str:
    """The Markdown of a model's card (see the module docstring)."""
    meta, config = model.meta, model.config
    rid, score = stored_score(model, runs_dir)
    counts = ", ".join(f"{k} {v}" for k, v in meta.get("class_counts", {}).items())
    training = meta.get("training", {})
    probabilities = ("calibrated by temperature scaling on held-out LOSO predictions of this "
                     "configuration (above): on these three lab datasets, not on other cameras "
                     "or people" if model.calibration is not None
                     else "the network's softmax and are **not calibrated**")
    if score is None:
        result = (f"No leave-one-subject-out run of this configuration, seed and data is stored "
                  f"(`results/runs/{rid}` is missing), so there is no held-out score to give. "
                  f"`htnet train --profile {meta.get('profile')} --seed {meta['seed']}` makes "
                  "one (the same configuration; add the `--set` options it differs by).")
    else:
        h, o = score["honest"], score["oracle"]
        result = (f"Leave-one-subject-out on the same data, configuration and seed (run "
                  f"`{rid}`, {int(h['n'])} samples, composite of SMIC-HS, CASME II and SAMM):\n\n"
                  f"| protocol | UF1 | UAR |\n|---|---|---|\n"
                  f"| **honest** (final epoch, no test label used) | {h['uf1']:.4f} | "
                  f"{h['uar']:.4f} |\n"
                  f"| oracle (each subject's best epoch on its own test labels, as the "
                  f"official code; optimistic, not an estimate) | {o['uf1']:.4f} | "
                  f"{o['uar']:.4f} |\n\n"
                  "The honest row is what to expect on unseen people of the same kind of "
                  "recording. This model was fitted on every sample, so it has no held-out "
                  "score of its own.")
    return f"""# Model card: {Path(model.path).name if model.path else 'HTNet model'}

{config.model} (profile `{meta.get('profile')}`, seed {meta['seed']}) fitted by `htnet fit` on every
sample of the release, final epoch of {training.get('epochs')} (no test label chose anything).
Weights: `model.safetensors`, SHA-256 `{meta['weights'].get('sha256')}`.

## Data

{meta.get('n_samples')} samples ({counts}), data fingerprint `{meta['data_fingerprint']}`
({meta.get('data_manifest', 'manifest not checked')}). The official release is the composite
benchmark of HTNet (section 4.1) in preprocessed form: 442 samples of 68 subjects from
SMIC-HS, CASME II and SAMM, 28x28 TV-L1 optical-flow maps (u, v, strain) and apex faces.

## Configuration

```json
{json.dumps(config.to_dict(), indent=2, sort_keys=True)}
```

Input: {meta['input'].get('map_size')}x{meta['input'].get('map_size')} maps, channels
{', '.join(meta['input'].get('channels', []))}, regions `{config.regions}`; see model.json.

## How well this configuration does

{result}

## Calibration

{calibration_text(model)}

## Intended use and limits

- Research on micro-expression recognition: comparing methods, studying what the network
  reads. Not a product.
- Trained on laboratory recordings of 68 subjects in three datasets: frontal faces, controlled
  light, high-speed cameras, volunteers recruited by three university labs. Expect it to do worse
  on other people, cameras and settings.
- Three classes only (negative, positive, surprise); the expressions were posed or elicited
  by videos in a lab, and labelled from action units and self-reports.
- Not for judging anyone's emotions, honesty, health or suitability (hiring, policing,
  border control, education, insurance), and not on anyone's face without their consent.
- The probabilities are {probabilities}.
  `htnet predict` answers "no motion" where the frames barely move (`motion_px` below the
  flow method's threshold): a min-max normalised map of noise still gets a class.
"""


def write_card(model: Model, runs_dir: Path | str = RUNS) -> Path:
    """Write ``MODEL_CARD.md`` into the model's folder (atomically); returns its path."""
    if model.path is None:
        raise ValueError("the model is not saved: save it before writing its card")
    path = Path(model.path) / CARD
    write_text(path, card_text(model, runs_dir))
    return path
