"""The experiment registry (htnetlib.study.experiments.experiments): every job a profile's
notebooks need, once, in notebook order, read by the plan and ``htnet grid``."""

import collections
import dataclasses
import json
import subprocess
import sys

import pytest

from htnetlib.config import profile_config
from htnetlib.study import experiments, plan


@pytest.mark.parametrize("profile", ["cpu", "paper", "smoke"])
def test_the_registry_lists_every_kind_once(profile):
    found = experiments.experiments(profile)
    keys = [(e.kind, json.dumps(e.config.to_dict(), sort_keys=True), e.seed) for e in found]
    assert len(keys) == len(set(keys)), "a job is listed twice"
    assert collections.Counter(e.kind for e in found) == {"loso": 97, "nested": 6, "lodo": 10}
    assert all(e.why for e in found)
    # notebook order: 04's training first, then each kind where its notebook comes
    assert found[0].why[0] == "04 training"
    assert [e.kind for e in found] == sorted((e.kind for e in found),
                                              key=experiments.KINDS.index)
    assert [(e.config, e.seed) for e in found if e.kind == "nested"] == [
        (experiments.selection_config(v, profile), s) for v in experiments.NESTED_VARIANTS
        for s in experiments.nested_seeds(v, experiments.SEEDS)] + [
        (experiments.selection_config(experiments.HEADLINE["variant"], profile),
         experiments.CONFIRM_SEEDS[0])]
    with pytest.raises(dataclasses.FrozenInstanceError):
        found[0].seed = 5


def test_duplicates_merge_keeping_every_reason():
    found = experiments.experiments("cpu")
    default = profile_config("cpu")
    (first,) = [e for e in found if e.kind == "loso" and e.config == default and e.seed == 0]
    for why in ("05 crop mode: official", "04 training", "05 Table 2: HTNet", "06 seed spread", "09 seed spread",
                "12 honest selection: plain", "07 Figure 5 (hidden dimension): 256"):
        assert why in first.why
    # the same configuration and seed of another kind is another job
    (inner,) = [e for e in found if e.kind == "nested" and e.config == default and e.seed == 0]
    assert inner.why == ("12 nested rule: plain",)
    (lodo,) = [e for e in found if e.kind == "lodo" and e.config == default and e.seed == 0]
    assert lodo.why == ("13 leave one dataset out: HTNet",)


def test_both_crop_modes_with_every_seed():
    """Notebook 05 compares the official and the corrected crop mode over every seed."""
    found = experiments.experiments("cpu", seeds=[0, 1, 2])
    for mode in experiments.CROP_MODES:
        runs = [e for e in found if f"05 crop mode: {mode}" in e.why]
        assert [(e.kind, e.config, e.seed) for e in runs] == [
            ("loso", experiments.crop_config(mode, "cpu"), s) for s in (0, 1, 2)]
    assert experiments.crop_config("official", "cpu") == profile_config("cpu")
    assert experiments.crop_config("corrected", "cpu").regions == "corrected"


def test_other_seeds_follow_the_notebooks():
    found = experiments.experiments("smoke", seeds=[4, 7], confirm_seeds=[9])
    assert {e.seed for e in found if e.kind == "nested"} == {4, 7, 9}
    assert {e.seed for e in found if any(w.startswith("12 confirmation") for w in e.why)} == {9}
    assert not [e for e in experiments.experiments("smoke", seeds=[4], confirm_seeds=[])
                if any(w.startswith("12 c") for w in e.why)]
    lodo = [(e.config.model, e.seed) for e in found if e.kind == "lodo"]
    assert lodo.count(("logreg", 4)) == 1 and ("logreg", 7) not in lodo
    assert lodo.count(("ststnet", 7)) == 1
    with pytest.raises(ValueError, match="no seeds"):
        experiments.experiments("smoke", seeds=[])


def test_the_plan_reads_the_registry():
    found = experiments.experiments("paper")
    listed = plan.needed("paper")
    assert [(n.kind, n.config, n.seed, tuple(n.why)) for n in listed] == [
        (e.kind, e.config, e.seed, e.why) for e in found]
    assert plan.needed_runs("paper") + plan.needed_nested("paper") + plan.needed_lodo("paper") \
        == listed


def test_the_registry_imports_no_torch():
    code = ("import sys, htnetlib.study.experiments as e; e.experiments('paper'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
