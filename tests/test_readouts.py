"""Config.readouts: test-time mirror and weight-average readouts of one training
(:func:`htnetlib.training.fold.train_fold`), stored beside the run's own predictions."""

import dataclasses

import numpy as np
import pytest
import torch

from htnetlib.config import SWA_FRACTION, Config, ConfigError
from htnetlib.data.regions import network_inputs
from htnetlib.evaluation.selection import fraction_of_epochs
from htnetlib.training import fold, loso
from htnetlib.training.store import load_run, run_id, data_fingerprint

TINY = Config(dim=8, heads=1, block_repeats=(1, 1, 1), epochs=8, lr=1e-3, max_folds=2,
              regions="whole")


def test_readouts_keep_old_run_ids_and_are_for_htnet_only():
    assert "readouts" not in TINY.to_dict()  # the default leaves every stored id unchanged
    assert dataclasses.replace(TINY, readouts=True).to_dict()["readouts"] is True
    with pytest.raises(ConfigError, match="readouts=true is for model=htnet only"):
        Config(model="ststnet", regions="whole", readouts=True).check()


def test_the_readouts_are_the_mirror_and_the_weight_average_of_the_same_training(synthetic):
    config = dataclasses.replace(TINY, readouts=True)
    x = network_inputs(synthetic, config)
    xm = network_inputs(synthetic, config, mirror=True)
    y = synthetic.table["label"].to_numpy()
    test = (synthetic.table["subject"] == synthetic.table["subject"].iloc[0]).to_numpy()
    kw = dict(seed=7, device=torch.device("cpu"))
    res = fold.train_fold(config, x[~test], y[~test], x[test], y[test], x_test_mirror=xm[test],
                          **kw)
    plain = fold.train_fold(TINY, x[~test], y[~test], x[test], y[test], **kw)
    # training is untouched: the run's own readout is that of the run without readouts
    np.testing.assert_array_equal(res.pred, plain.pred)
    np.testing.assert_array_equal(res.prob, plain.prob)

    # the weight average by hand: the mean of the weights after each of the last quarter's epochs
    start = config.epochs - fraction_of_epochs(config.epochs, SWA_FRACTION)
    kept = []
    model, _ = fold.train_network(TINY, x[~test], y[~test], after_epoch=lambda e, m: kept.append(
        {k: v.detach().clone() for k, v in m.state_dict().items()}) if e >= start else None, **kw)
    model.load_state_dict({k: torch.stack([w[k] for w in kept]).mean(0) for k in kept[0]})
    with torch.no_grad():
        for xs, key in ((x[test], "prob_swa"), (xm[test], "prob_swa_mirror")):
            want = torch.softmax(model.eval()(torch.from_numpy(xs)), 1).numpy()
            np.testing.assert_allclose(getattr(res, key)[-1].astype(np.float32), want, atol=2e-3)
    model, _ = fold.train_network(TINY, x[~test], y[~test], **kw)
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(xm[test])), 1).numpy()
    np.testing.assert_allclose(res.prob_mirror[-1].astype(np.float32), want, atol=2e-3)
    assert not np.allclose(res.prob_mirror[-1], res.prob[-1])  # the mirror is another input
    # before the last quarter the average is the model itself
    np.testing.assert_array_equal(res.prob_swa[:start], res.prob[:start])
    np.testing.assert_array_equal(res.prob_swa_mirror[:start], res.prob_mirror[:start])
    assert len(kept) == 2 and not np.array_equal(res.prob_swa[-1], res.prob[-1])


def test_a_run_with_readouts_stores_them_in_prediction_order(synthetic, tmp_path):
    config = dataclasses.replace(TINY, readouts=True)
    run = load_run(loso.run_loso(synthetic, config, seed=1, runs_dir=tmp_path, progress=False,
                                 trainer="loop"))
    base = load_run(loso.run_loso(synthetic, TINY, seed=1, runs_dir=tmp_path, progress=False,
                                  trainer="loop"))
    assert run.path.name == run_id(config, 1, data_fingerprint(synthetic), None)
    np.testing.assert_array_equal(run.epochs["pred"], base.epochs["pred"])
    for key in ("prob_mirror", "prob_swa", "prob_swa_mirror"):
        assert run.epochs[key].shape == run.epochs["prob"].shape
        assert not np.isnan(run.epochs[key].astype(np.float32)).any()
        assert key not in base.epochs
