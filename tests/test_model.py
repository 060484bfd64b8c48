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


def official_keys(depths):
    """The state_dict keys of the official implementation, spelled out from its layout."""
    keys = ["to_patch_embedding.1.weight", "to_patch_embedding.1.bias"]
    for lvl, depth in enumerate(depths):
        p = f"layers.{lvl}.0"
        keys.append(f"{p}.pos_emb")
        for i in range(depth):
            a, f = f"{p}.layers.{i}.0", f"{p}.layers.{i}.1"
            keys += [f"{a}.norm.g", f"{a}.norm.b", f"{a}.fn.to_qkv.weight",
                     f"{a}.fn.to_out.0.weight", f"{a}.fn.to_out.0.bias",
                     f"{f}.norm.g", f"{f}.norm.b", f"{f}.fn.net.0.weight", f"{f}.fn.net.0.bias",
                     f"{f}.fn.net.3.weight", f"{f}.fn.net.3.bias"]
        if lvl < len(depths) - 1:
            keys += [f"layers.{lvl}.1.0.weight", f"layers.{lvl}.1.0.bias",
                     f"layers.{lvl}.1.1.g", f"layers.{lvl}.1.1.b"]
    keys += ["mlp_head.0.g", "mlp_head.0.b", "mlp_head.2.weight", "mlp_head.2.bias"]
    return keys


def test_state_dict_layout_is_the_official_one():
    model = small(block_repeats=(2, 1, 3))
    sd = model.state_dict()
    assert list(sd) == official_keys((2, 1, 3))
    # shapes the official code gives: 1x1 conv kernels, (1, C, 1, 1) norms, 1 token per block
    assert sd["to_patch_embedding.1.weight"].shape == (16, 3 * 49, 1, 1)
    assert sd["layers.0.0.layers.0.0.fn.to_qkv.weight"].shape == (48, 16, 1, 1)
    assert sd["layers.1.1.0.weight"].shape == (64, 32, 3, 3)
    assert sd["layers.2.0.pos_emb"].shape == (1,)
    assert sd["mlp_head.0.g"].shape == (1, 64, 1, 1)
    # a checkpoint in that layout loads strictly into a fresh model and gives the same output
    other = small(block_repeats=(2, 1, 3))
    other.load_state_dict(sd, strict=True)
    x = torch.rand(2, 3, 28, 28) * 255
    assert torch.equal(model.eval()(x), other.eval()(x))


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
    seen = []
    for transformer, _ in model.layers:
        transformer.layers[0][0].fn.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    model(torch.rand(2, 3, 28, 28))
    # (batch x blocks, channels, 1, 1): 16, 4 and 1 blocks per image at the three levels
    assert seen == [(32, 16, 1, 1), (8, 32, 1, 1), (2, 64, 1, 1)]


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
