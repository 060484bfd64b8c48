"""Every network the project trains, forward and backward.

One case per profile (``PROFILES``), per baseline that has a network (``BASELINES``; logistic
regression has none) and per grid point of every ablation (``ABLATIONS``) under the ``cpu`` and
``paper`` profiles. HTNet cases are built at a small width so that all of them run in a few
seconds: a paper-profile configuration has its hidden dimension divided by 8 (the cpu profile's
own scaling: 256 -> 32), which keeps the relations the ablations vary (the dim grid 64..512
becomes 8..64, each head count still fits its width, e.g. 3 heads x 10 channels at dim 32),
and leaves patch size, image size, levels, layers, heads and MLP ratio as they are. cpu and
smoke configurations are already small and run as they are.

Each case checks that the configuration is valid, that a batch of 2 gives (2, 3) finite logits
in training mode at the configuration's input scale, and that after ``loss.backward()`` every
parameter has a finite gradient.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from htnetlib.study.experiments import ABLATIONS
from htnetlib.config import APEX_FACE_MODELS, BASELINES, PROFILES
from htnetlib.model import build_model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these small models gain nothing from more, and on a shared, loaded
    machine OpenMP threads waiting for each other made their operations 30 times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


WIDTH_DIVISOR = {"paper": PROFILES["paper"].dim // PROFILES["cpu"].dim}  # 8; others: 1


def small(config, profile: str):
    """``config`` with its width divided by the profile's divisor (HTNet only)."""
    divisor = WIDTH_DIVISOR.get(profile, 1)
    if config.model != "htnet" or divisor == 1:
        return config
    dim, rest = divmod(config.dim, divisor)
    assert rest == 0 and dim >= config.heads, (
        f"dim {config.dim} does not scale down by {divisor} with {config.heads} heads")
    return dataclasses.replace(config, dim=dim)


def variants() -> list:
    out = []
    for profile, config in PROFILES.items():
        out.append(pytest.param(profile, config, id=f"profile-{profile}"))
    for model, by_profile in BASELINES.items():
        if model == "logreg":  # no network: a scikit-learn fit (test_logreg_has_no_network)
            continue
        for profile, config in by_profile.items():
            out.append(pytest.param(profile, config, id=f"{model}-{profile}"))
    for key, ab in ABLATIONS.items():
        for profile in ("cpu", "paper"):
            for value in ab.values:
                out.append(pytest.param(profile, ab.config(value, profile),
                                        id=f"{key}={value}-{profile}"))
    return out


@pytest.mark.parametrize("profile, config", variants())
def test_variant_forward_backward(profile, config):
    assert config.problems() == [], f"invalid configuration {config}: {config.problems()}"
    config = small(config, profile).check()
    torch.manual_seed(0)
    model = build_model(config).train()
    channels = 4 if config.model in APEX_FACE_MODELS else 3  # flow, strain (+ the apex face)
    x = torch.rand(2, channels, config.image_size, config.image_size) * 255 * config.input_scale
    out = model(x)
    assert out.shape == (2, 3), f"logits of shape {tuple(out.shape)}, expected (2, 3)"
    assert torch.isfinite(out).all(), f"non-finite logits {out}"
    F.cross_entropy(out, torch.tensor([0, 2])).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {len(missing)} parameter(s): {', '.join(missing)}"
    bad = [n for n, p in model.named_parameters()
           if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient for: {', '.join(bad)}"


def test_variant_list_is_complete():
    """Every profile, each baseline network (STSTNet, RCN, two-stream) under each, every
    ablation grid point under cpu and paper (today 3 + 3 x 3 + 4 x 6 x 2 = 60 cases)."""
    ids = [p.id for p in variants()]
    assert len(ids) == len(set(ids))
    n_ablation = sum(len(ab.values) for ab in ABLATIONS.values()) * 2
    networks = sum(len(by_profile) for m, by_profile in BASELINES.items() if m != "logreg")
    assert networks == 3 * len(PROFILES)
    assert len(ids) == len(PROFILES) + networks + n_ablation


@pytest.mark.parametrize("profile", list(BASELINES["logreg"]))
def test_logreg_has_no_network(profile):
    with pytest.raises(ValueError, match="logreg has no network"):
        build_model(BASELINES["logreg"][profile])
