"""Building a network from a configuration, and reading its size and shape.

:func:`build_model` maps a :class:`htnetlib.config.Config` to its network: HTNet (sections 3.2
and 3.3, :mod:`htnetlib.model.htnet`), STSTNet (a Table 2 baseline,
:mod:`htnetlib.model.baselines`), or a user's own model named ``package.module:factory``.
:func:`architecture` reads HTNet level by level (notebook 03); :func:`parameter_count` counts
a configuration's parameters without allocating its weights (Table 5, the plan's estimates).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config
from .baselines import STSTNet
from .htnet import HTNet

def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(config) -> nn.Module:
    """The network a :class:`htnetlib.config.Config` names: HTNet or STSTNet."""
    if config.model == "htnet":
        return HTNet(image_size=config.image_size, patch_size=config.patch_size, num_classes=3,
                     dim=config.dim, heads=config.heads, num_hierarchies=config.num_hierarchies,
                     block_repeats=config.block_repeats, mlp_mult=config.mlp_mult,
                     dropout=config.dropout)
    if config.model == "ststnet":
        return STSTNet(dropout=0.5 if config.dropout == 0 else config.dropout)
    raise ValueError(f"unknown model {config.model!r} (htnet or ststnet; logreg has no network)")


def architecture(model: HTNet, image_size: int) -> list[dict]:
    """HTNet level by level, read from the model's own modules and a shape-only forward pass
    (meta tensors): blocks, tokens per block, width, heads and their widths, layers, parameters
    and the map each level hands on. Drives notebook 03's table and figure."""
    if not next(model.parameters()).is_meta:  # shapes only: never touch the caller's weights
        import copy

        model = copy.deepcopy(model).to("meta")
    x = torch.empty(1, 3, image_size, image_size, device="meta")
    _, levels = model.forward_features(x, return_levels=True)
    rows = []
    for (transformer, aggregate), lv in zip(model.layers, levels):
        attn = transformer.layers[0][0].fn
        width = lv["blocks"].shape[1]
        inner = attn.to_qkv.weight.shape[0] // 3
        rows.append({"blocks": f"{lv['blocks_per_side']}x{lv['blocks_per_side']}",
                     "tokens per block": lv["blocks"].shape[2] * lv["blocks"].shape[3],
                     "width": width, "heads": attn.heads, "head width": inner // attn.heads,
                     "attention width": inner, "q, k, v channels": 3 * inner,
                     "layers": len(transformer.layers),
                     "transformer parameters": count_parameters(transformer),
                     "aggregation": "none (top)" if isinstance(aggregate, nn.Identity) else
                     "3x3 conv, LayerNorm, 3x3 max-pool /2",
                     "aggregation parameters": count_parameters(aggregate),
                     "map handed on": tuple(lv["aggregated"].shape[1:])})
    return rows



def parameter_count(config: Config) -> int:
    """Trainable parameters of ``config``'s network, counted without allocating its weights."""
    with torch.device("meta"):
        model = build_model(config)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

