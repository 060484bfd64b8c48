"""Notebook 16's shallow networks (htnetlib.model.shallow) and readouts for every built-in model."""

import dataclasses

import numpy as np
import pytest
import torch

from htnetlib.config import APEX_FACE_MODELS, profile_config
from htnetlib.data.regions import apex_faces, network_inputs
from htnetlib.model import RCN, RecurrentConv, TwoStream, build_model
from htnetlib.training.fold import train_fold


def test_recurrent_layer_shares_its_weights_over_the_steps():
    one, three = RecurrentConv(4, 6, steps=1), RecurrentConv(4, 6, steps=3)
    convs = sum(p.numel() for n, p in one.named_parameters() if "conv" in n)
    assert convs == sum(p.numel() for n, p in three.named_parameters() if "conv" in n)
    assert len(three.norms) == 4 and three(torch.zeros(2, 4, 7, 7)).shape == (2, 6, 7, 7)


@pytest.mark.parametrize("net, channels", [(RCN(), 3), (TwoStream(), 4)])
def test_shallow_networks_map_a_batch_to_three_logits(net, channels):
    out = net.eval()(torch.rand(5, channels, 28, 28))
    assert out.shape == (5, 3) and torch.isfinite(out).all()
    assert sum(p.numel() for p in net.parameters()) < 5000  # shallow by design


def test_two_stream_reads_the_face_channel():
    net = TwoStream().eval()
    x = torch.rand(2, 4, 28, 28)
    y = x.clone()
    y[:, 3] = 0  # another face, the same flow
    assert not torch.allclose(net(x), net(y))


def test_network_inputs_add_the_grey_apex_face_for_the_two_stream_model(synthetic):
    config = profile_config("smoke", "twostream")
    assert config.model in APEX_FACE_MODELS
    x = network_inputs(synthetic, config)
    flow_only = network_inputs(synthetic, dataclasses.replace(config, model="rcn"))
    assert x.shape[1] == 4 and np.array_equal(x[:, :3], flow_only)
    faces = apex_faces(synthetic, config.image_size)
    assert np.allclose(x[:, 3], faces[..., 0] * config.input_scale)
    mirrored = network_inputs(synthetic, config, mirror=True)
    assert np.allclose(mirrored[:, 3], x[:, 3, :, ::-1])
    assert build_model(config)(torch.from_numpy(x[:2])).shape == (2, 3)


@pytest.mark.parametrize("model", ["ststnet", "rcn", "twostream", "logreg"])
def test_readouts_leave_training_untouched_for_every_built_in_model(model):
    config = dataclasses.replace(profile_config("smoke", model), epochs=8)
    rng = np.random.default_rng(0)
    x = rng.random((60, 4 if model in APEX_FACE_MODELS else 3, 28, 28)).astype(np.float32)
    y, xm = rng.integers(0, 3, 60), x[..., ::-1].copy()
    kw = dict(seed=3, device="cpu", x_train_mirror=xm[:50])
    with_readouts = train_fold(dataclasses.replace(config, readouts=True), x[:50], y[:50],
                               x[50:], y[50:], x_test_mirror=xm[50:], **kw)
    without = train_fold(dataclasses.replace(config, readouts=False), x[:50], y[:50], x[50:],
                         y[50:], **kw)
    assert np.array_equal(with_readouts.pred, without.pred)
    assert np.array_equal(with_readouts.prob, without.prob)
    for key in ("prob_mirror", "prob_swa", "prob_swa_mirror"):
        p = getattr(with_readouts, key).astype(np.float32)
        assert p.shape == with_readouts.prob.shape and np.allclose(p.sum(-1), 1, atol=1e-2)
    if model == "logreg":  # one fit: its own average
        assert np.array_equal(with_readouts.prob_swa, with_readouts.prob)
    else:  # the average of the last quarter differs from the final network
        assert not np.array_equal(with_readouts.prob_swa[-1], with_readouts.prob[-1])
        assert np.array_equal(with_readouts.prob_swa[0], with_readouts.prob[0])
