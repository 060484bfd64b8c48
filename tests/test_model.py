import pytest
import torch
from torch import nn

from htnetlib.model import HTNet, LayerNorm, PointwiseConv, count_parameters


def small(**kw):
    args = dict(image_size=28, patch_size=7, num_classes=3, dim=16, heads=1, num_hierarchies=3,
                block_repeats=(1, 1, 2))
    args.update(kw)
    return HTNet(**args)


@pytest.mark.parametrize("repeats, expected", [((2, 2, 8), 114_429_446), ((2, 2, 10), 139_582_982)])
def test_paper_parameter_counts(repeats, expected):
    model = HTNet(image_size=28, patch_size=7, num_classes=3, dim=256, heads=3,
                  num_hierarchies=3, block_repeats=repeats)
    assert count_parameters(model) == expected


# That official checkpoints load strictly is tested against NesT itself (tests/test_reference.py).


def test_forward_backward_shapes_and_finite():
    model = small()
    x = torch.rand(5, 3, 28, 28) * 255
    out = model(x)
    assert out.shape == (5, 3)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("hw", [(3, 5), (1, 1)], ids=["map", "one-token"])
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_equals_conv2d(hw, bias):
    """A 2-D matrix product over channels, for maps and one-token blocks, forward and backward;
    the input may be a strided view (as after a rearrange)."""
    torch.manual_seed(0)
    fast = PointwiseConv(6, 10, bias=bias)
    ref = nn.Conv2d(6, 10, 1, bias=bias)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(6, 4, *hw).transpose(0, 1).requires_grad_()  # (4, 6, h, w), not contiguous
    y_fast, y_ref = fast(x), ref(x)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y_ref)
    torch.testing.assert_close(torch.autograd.grad(y_fast, (x, fast.weight), g),
                               torch.autograd.grad(y_ref, (x, ref.weight), g),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hw", [(4, 4), (1, 1)], ids=["map", "one-token"])
def test_layernorm_normalises_channels(hw):
    ln = LayerNorm(8)
    with torch.no_grad():
        ln.g.uniform_(0.5, 2)
        ln.b.uniform_(-1, 1)
    x = torch.randn(3, 8, *hw) * 5 + 2
    mean = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    ref = (x - mean) / (var + 1e-5).sqrt() * ln.g + ln.b
    torch.testing.assert_close(ln(x), ref, rtol=1e-5, atol=1e-5)


def test_one_token_per_block():
    """With image 28, patch 7 and 3 levels every block the attention sees is one token."""
    model = small()
    feats, levels = model.forward_features(torch.rand(2, 3, 28, 28), return_levels=True)
    # (batch x blocks, channels, 1, 1): 16, 4 and 1 blocks per image at the three levels
    assert [tuple(lv["blocks"].shape) for lv in levels] == [(32, 16, 1, 1), (8, 32, 1, 1),
                                                            (2, 64, 1, 1)]
    assert [lv["blocks_per_side"] for lv in levels] == [4, 2, 1]
    assert [tuple(lv["aggregated"].shape) for lv in levels] == [(2, 32, 2, 2), (2, 64, 1, 1),
                                                                (2, 64, 1, 1)]
    assert feats is levels[-1]["aggregated"]


def test_forward_is_the_head_on_forward_features():
    model = small().eval()
    x = torch.rand(3, 3, 28, 28) * 255
    with torch.no_grad():
        assert torch.equal(model(x), model.mlp_head(model.forward_features(x)))


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        small(image_size=30)
    with pytest.raises(ValueError, match="block_repeats"):
        small(block_repeats=(1, 1))


def test_one_token_shortcut_is_exact():
    """With one token per block the attention output is the values: the shortcut is exact."""
    from htnetlib.model import Attention

    torch.manual_seed(0)
    attn = Attention(12, heads=3)
    x = torch.randn(5, 12, 1, 1)
    fast = attn(x)
    # the full computation, forced by a 1x2 map whose two tokens are identical copies
    full = attn(torch.cat([x, x], dim=-1))[..., :1]
    torch.testing.assert_close(fast, full, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shortcut", [True, False])
def test_head_count_changes_nothing_but_the_head_width(shortcut, monkeypatch):
    """Every block holds one token, so attention returns its values whatever the head count:
    models whose heads give the same total width (dim // heads * heads) are the same function
    with the same parameters after the same seed (Figure 6's grid at dim 16: 1, 2, 4, 8 heads
    use 16 channels, 3 heads 15 and 6 heads 12)."""
    from htnetlib.model import Attention

    monkeypatch.setattr(Attention, "one_token_shortcut", shortcut)
    x = torch.rand(6, 3, 28, 28) * 255
    out = {}
    for heads in (1, 2, 3, 4, 6, 8):
        torch.manual_seed(0)
        out[heads] = small(heads=heads).eval()(x)
    for heads in (2, 4, 8):
        torch.testing.assert_close(out[heads], out[1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[3], out[1], rtol=1e-3, atol=1e-3)  # 15 channels, not 16
    assert not torch.allclose(out[6], out[3], rtol=1e-3, atol=1e-3)  # 12 channels, not 15


def test_architecture_reads_the_model():
    from htnetlib.model import architecture

    model = small(heads=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    levels = architecture(model, 28)
    assert [lv["blocks"] for lv in levels] == ["4x4", "2x2", "1x1"]
    assert [lv["tokens per block"] for lv in levels] == [1, 1, 1]
    assert [lv["width"] for lv in levels] == [16, 32, 64]
    # 16 // 3 = 5 channels a head: 15 attended channels, 45 for queries, keys and values
    assert (levels[0]["head width"], levels[0]["attention width"],
            levels[0]["q, k, v channels"]) == (5, 15, 45)
    assert sum(lv["transformer parameters"] + lv["aggregation parameters"] for lv in levels) \
        + count_parameters(model.to_patch_embedding) + count_parameters(model.mlp_head) \
        == count_parameters(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
