"""HTNet, the hierarchical transformer of the paper (sections 3.2 and 3.3, equations 4-6).

The network is a nested hierarchical transformer: the input is cut into P x P patches, the
patch grid is split into 4 x 4, 2 x 2 and finally 1 x 1 blocks; inside every block a stack of
pre-norm transformer layers runs (eq. 4: attention and a feed-forward network, each behind a
residual connection), and between levels *block aggregation* (a 3x3 convolution, a channel
LayerNorm, eq. 6, and a 3x3 max-pool with stride 2) merges four neighbouring blocks into one and
doubles the width. A channel LayerNorm, global average pooling and a linear layer classify.

The module names and parameter shapes follow the official implementation exactly, so a
``state_dict`` saved by the official code loads with ``strict=True``.

Credit: the network is NesT (Zhang et al., "Nested Hierarchical Transformer", AAAI 2022,
arXiv:2105.12723) as implemented in lucidrains' vit-pytorch 0.36.x (``vit_pytorch/nest.py``,
MIT), which the official HTNet code (github.com/wangzhifengharrison/HTNet, ``Model.py``) copies
with the class renamed; the paper is Wang et al., Neurocomputing 602 (2024), arXiv:2307.14637.
This module is a rewrite with the same module names and parameter shapes. Only the computation
differs: 1x1 convolutions are 2-D matrix products (:func:`pointwise`), the channel LayerNorm
uses ``F.layer_norm``, and blocks of one token skip queries and keys (a softmax over one key is
1). ``tests/test_reference.py`` loads a NesT of vit-pytorch 0.36.2 into this class strictly and
checks equal logits: within 1e-12 in float64 and within float32 rounding (5e-6).

Two facts the paper leaves implicit:

* With image 28, patch 7 and 3 hierarchies the patch grid is 4 x 4 and every block at every
  level holds exactly **one token** (``seq_len = (4 // 4) ** 2 = 1``). The attention softmax
  over a single key is 1, so "self-attention" reduces to a linear map of the values; the local
  mixing happens in the aggregation convolutions.
* Table 5's "#Params (millions)" column is about the float32 size in MiB, not a parameter
  count: the (2, 2, 8) model has 114,429,446 parameters, 436.5 MiB in float32 (Table 5: 438.51).
"""

from __future__ import annotations

import torch
from einops import rearrange
from einops.layers.torch import Rearrange, Reduce
import torch.nn.functional as F
from torch import nn



def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
              ) -> torch.Tensor:
    """A 1x1 convolution of a (B, C, H, W) map with an (O, C, 1, 1) or (O, C) kernel.

    Computed as one 2-D matrix product ``(B*H*W, C) @ (C, O)``: under ``torch.func.vmap`` over
    per-fold weights this becomes a single batched matmul on every torch version, whereas
    ``F.linear`` on a 4-D input made some versions copy the weight once per row (8.5 GiB in one
    layer of the paper model with 17 folds). One-token maps (H = W = 1) need no copy at all.
    """
    b, c, h, w = x.shape
    rows = x.reshape(b, c) if h * w == 1 else x.movedim(1, -1).reshape(-1, c)
    y = rows @ weight.reshape(weight.shape[0], c).t()
    if bias is not None:
        y = y + bias
    if h * w == 1:
        return y.reshape(b, -1, 1, 1)
    return y.reshape(b, h, w, -1).movedim(-1, 1)


class LayerNorm(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map (eq. 6), biased variance.

    One-token maps (H = W = 1: every transformer layer and the head of HTNet) are a (B, C)
    matrix and go to ``F.layer_norm`` without a copy. Larger maps (the two aggregations) go
    channels-last first: normalising over dim 1 directly (``var_mean`` and three elementwise
    ops) gives the same values but measured 6 times slower on a CPU, forward and backward.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g, bias = self.g.reshape(c), self.b.reshape(c)
        if h * w == 1:
            return F.layer_norm(x.reshape(b, c), (c,), g, bias, self.eps).reshape(b, c, 1, 1)
        y = F.layer_norm(x.permute(0, 2, 3, 1), (c,), g, bias, self.eps)
        return y.permute(0, 3, 1, 2)


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution computed as a matrix product over channels (:func:`pointwise`).

    The parameters are an ``nn.Conv2d``'s (same names and shapes); only the kernel differs:
    on the small maps of HTNet (one token per block) a matrix product is several times faster
    on a CPU than the convolution routine, with the same result up to float rounding.
    """

    def __init__(self, dim_in: int, dim_out: int, bias: bool = True):
        super().__init__(dim_in, dim_out, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(x, self.weight, self.bias)


class PreNorm(nn.Module):
    """``fn(LN(x))``: the normalised branch of one residual step of eq. 4."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class FeedForward(nn.Module):
    """The FFN of eq. 4 as two 1x1 convolutions with GELU between them."""

    def __init__(self, dim: int, mlp_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        hidden = dim * mlp_mult
        self.net = nn.Sequential(
            PointwiseConv(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            PointwiseConv(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Multi-head scaled dot-product self-attention inside one block (eq. 5).

    The head width is ``dim // heads`` (so 256 with 3 heads uses 3 x 85 = 255 channels),
    as in the official code. ``one_token_shortcut`` skips queries and keys where a block holds
    a single token (exact; switch it off to time or check the full computation).
    """

    one_token_shortcut = True

    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.0):
        super().__init__()
        head_dim = dim // heads
        inner = head_dim * heads
        self.heads = heads
        self.scale = head_dim ** -0.5
        self.attend = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(dropout)
        self.to_qkv = PointwiseConv(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(PointwiseConv(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape  # (B*blocks, C, h, w)
        if self.one_token_shortcut and h * w == 1 and (self.dropout.p == 0 or not self.training):
            # One token per block: the softmax over a single key is exactly 1, so the output
            # is the values alone; queries and keys need not be computed.
            inner = self.to_qkv.weight.shape[0] // 3
            return self.to_out(pointwise(x, self.to_qkv.weight[2 * inner:]))
        q, k, v = (
            rearrange(t, "b (n d) x y -> b n (x y) d", n=self.heads)
            for t in self.to_qkv(x).chunk(3, dim=1)
        )
        attn = self.dropout(self.attend(q @ k.transpose(-1, -2) * self.scale))  # (b, n, t, t)
        out = rearrange(attn @ v, "b n (x y) d -> b (n d) x y", x=h, y=w)
        return self.to_out(out)


class Transformer(nn.Module):
    """``depth`` transformer layers shared by every block of one level (section 3.2)."""

    def __init__(self, dim: int, seq_len: int, depth: int, heads: int, mlp_mult: int,
                 dropout: float = 0.0):
        super().__init__()
        self.pos_emb = nn.Parameter(torch.randn(seq_len))
        self.layers = nn.ModuleList(
            nn.ModuleList([
                PreNorm(dim, Attention(dim, heads=heads, dropout=dropout)),
                PreNorm(dim, FeedForward(dim, mlp_mult, dropout=dropout)),
            ])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = x + rearrange(self.pos_emb[: h * w], "(h w) -> 1 1 h w", h=h, w=w)
        for attn, ff in self.layers:
            x = x + attn(x)
            x = x + ff(x)
        return x


def Aggregate(dim: int, dim_out: int) -> nn.Sequential:  # noqa: N802 (a layer factory)
    """Block aggregation (section 3.3, Fig. 4): 3x3 conv, channel LayerNorm, 3x3 max-pool /2."""
    return nn.Sequential(
        nn.Conv2d(dim, dim_out, 3, padding=1),
        LayerNorm(dim_out),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


class HTNet(nn.Module):
    """Hierarchical Transformer Network for micro-expression recognition.

    Args:
        image_size: side of the square input (28 for the four-region mosaic).
        patch_size: side P of a patch (7 in the paper; Table 4 varies it).
        num_classes: output classes (3: negative, positive, surprise).
        dim: width of the bottom level; level ``i`` (from the bottom) has ``dim * 2**i``.
        heads: heads at the bottom level; level ``i`` has ``heads * 2**i``.
        num_hierarchies: number of levels (3).
        block_repeats: transformer layers per level, bottom first, e.g. (2, 2, 8).
        mlp_mult: FFN expansion factor.
        channels: input channels (u, v, strain).
        dim_head: accepted for signature compatibility with the official code; unused there
            and here (the head width is ``dim // heads``).
        dropout: dropout rate in attention and FFN.
    """

    def __init__(self, *, image_size: int, patch_size: int, num_classes: int, dim: int,
                 heads: int, num_hierarchies: int, block_repeats, mlp_mult: int = 4,
                 channels: int = 3, dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        fmap = image_size // patch_size
        blocks = 2 ** (num_hierarchies - 1)
        if fmap % blocks:
            raise ValueError(f"a {fmap}x{fmap} patch grid cannot be split into {blocks}x{blocks} blocks")
        seq_len = (fmap // blocks) ** 2  # tokens per block, the same at every level
        if isinstance(block_repeats, int):
            block_repeats = (block_repeats,) * num_hierarchies
        if len(block_repeats) != num_hierarchies:
            raise ValueError(f"block_repeats {block_repeats} needs {num_hierarchies} entries")

        widths = [dim * 2 ** i for i in range(num_hierarchies)]
        self.to_patch_embedding = nn.Sequential(
            Rearrange("b c (h p1) (w p2) -> b (p1 p2 c) h w", p1=patch_size, p2=patch_size),
            PointwiseConv(channels * patch_size ** 2, widths[0]),
        )
        self.layers = nn.ModuleList()
        for i, depth in enumerate(block_repeats):
            last = i == num_hierarchies - 1
            self.layers.append(nn.ModuleList([
                Transformer(widths[i], seq_len, depth, heads * 2 ** i, mlp_mult, dropout),
                nn.Identity() if last else Aggregate(widths[i], widths[i + 1]),
            ]))
        self.mlp_head = nn.Sequential(
            LayerNorm(widths[-1]),
            Reduce("b c h w -> b c", "mean"),
            nn.Linear(widths[-1], num_classes),
        )

    def forward_features(self, img: torch.Tensor, return_levels: bool = False):
        """The map before the head, (B, dim * 2**(L-1), h, w); with ``return_levels`` also a
        list with one dict per level: the map its transformer saw (``blocks``: (B * n * n, C,
        h, w), n x n blocks of h x w tokens) and the map after block aggregation
        (``aggregated``: (B, 2C, H/2, W/2), or the same map at the top level)."""
        x = self.to_patch_embedding(img)  # (B, dim, H/P, W/P): one token per patch
        levels = []
        for level, (transformer, aggregate) in enumerate(self.layers):
            n = 2 ** (len(self.layers) - 1 - level)  # blocks per side at this level
            blocks = rearrange(x, "b c (n1 h) (n2 w) -> (b n1 n2) c h w", n1=n, n2=n)
            out = transformer(blocks)  # the same layers run on every block
            x = rearrange(out, "(b n1 n2) c h w -> b c (n1 h) (n2 w)", n1=n, n2=n)
            x = aggregate(x)  # (B, 2C, h/2, w/2), or unchanged at the top
            levels.append({"blocks_per_side": n, "blocks": out, "aggregated": x})
        return (x, levels) if return_levels else x

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.mlp_head(self.forward_features(img))  # (B, num_classes)
