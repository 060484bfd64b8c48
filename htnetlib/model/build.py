"""Building a network from a configuration, and reading its size and shape.

:func:`build_model` maps a :class:`htnetlib.config.Config` to its network: HTNet (sections 3.2
and 3.3, :mod:`htnetlib.model.htnet`), STSTNet (a Table 2 baseline,
:mod:`htnetlib.model.baselines`), notebook 16's RCN-style and two-stream networks
(:mod:`htnetlib.model.shallow`), or a user's own model named ``package.module:factory``.
:func:`architecture` reads HTNet level by level (notebook 03); :func:`parameter_count` counts
a configuration's parameters without allocating its weights (Table 5, the plan's estimates).
"""

from __future__ import annotations

import importlib
import inspect

import torch
from torch import nn

from ..config import Config, is_user_model
from ..errors import ConfigError
from .baselines import STSTNet
from .htnet import HTNet
from .shallow import RCN, TwoStream


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_factory(model: str):
    """The callable a user's model string ``package.module:callable`` names, imported now.

    Every way it can fail is a one-line :class:`ConfigError` naming the string and the reason:
    the format, a module not found (or failing to import), a missing attribute, or an
    attribute that is not callable."""
    if not is_user_model(model):
        raise ConfigError(f"model={model!r} is not a factory of the form package.module:callable")
    module_name, _, attr = model.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(f"model={model!r}: module {module_name!r} not found (is it on "
                              "the Python path?)") from None
        raise ConfigError(f"model={model!r}: importing {module_name} failed: {exc}") from exc
    except Exception as exc:  # a SyntaxError or any error while the module runs
        raise ConfigError(f"model={model!r}: importing {module_name} failed: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not hasattr(module, attr):
        raise ConfigError(f"model={model!r}: module {module_name} has no attribute {attr!r}")
    factory = getattr(module, attr)
    if not callable(factory):
        raise ConfigError(f"model={model!r}: {attr} is not callable (an object of type "
                          f"{type(factory).__name__})")
    return factory


def _takes_config(factory) -> bool:
    """Whether ``factory`` accepts one positional argument (the Config)."""
    try:
        inspect.signature(factory).bind(None)
    except TypeError:
        return False
    except ValueError:  # no signature to read (some builtins): call it without arguments
        return False
    return True


def build_user_model(config: Config) -> nn.Module:
    """A user's network: ``config.model`` = ``package.module:factory``, imported and called.

    The convention: a factory that accepts one argument is called with the :class:`Config`
    (so it can read ``image_size``, ``dropout``, ...); any other is called with no arguments.
    It must return an ``nn.Module`` mapping the network input (N, 3, S, S) float32, S =
    ``config.image_size``, to (N, 3) logits. Failures are one-line :class:`ConfigError` errors."""
    factory = load_factory(config.model)
    try:
        model = factory(config) if _takes_config(factory) else factory()
    except Exception as exc:
        raise ConfigError(f"model={config.model!r}: the factory raised "
                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model={config.model!r}: the factory returned a "
                          f"{type(model).__name__}, not a torch nn.Module")
    return model


def check_user_model(config: Config) -> None:
    """ConfigError unless ``config.model``'s factory builds a network with trainable
    parameters that maps an input (2, 3, S, S) to (2, 3) floating-point logits through which
    a backward pass runs: the check a command runs before any run folder exists."""
    model = build_user_model(config)
    name = f"model={config.model!r}"
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"{name}: the network has no trainable parameters; there is "
                          "nothing to train")
    x = torch.zeros(2, 3, config.image_size, config.image_size)
    try:
        out = model.train()(x)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"{name}: the network fails on an input of shape "
                          f"{tuple(x.shape)}: {type(exc).__name__}: {reason}") from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 3):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{name}: the network maps an input of shape "
                          f"{tuple(x.shape)} to {shape}, not (2, 3) logits")
    if not out.is_floating_point():
        raise ConfigError(f"{name}: the network returns {out.dtype} logits; cross-entropy "
                          "needs floating-point ones")
    try:
        nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"{name}: the backward pass through the network fails: "
                          f"{type(exc).__name__}: {reason}") from exc


def build_model(config) -> nn.Module:
    """The network a :class:`htnetlib.config.Config` names: HTNet, STSTNet, or a user's own
    (``package.module:factory``, :func:`build_user_model`)."""
    if is_user_model(config.model):
        return build_user_model(config)
    if config.model == "htnet":
        return HTNet(image_size=config.image_size, patch_size=config.patch_size, num_classes=3,
                     dim=config.dim, heads=config.heads, num_hierarchies=config.num_hierarchies,
                     block_repeats=config.block_repeats, mlp_mult=config.mlp_mult,
                     dropout=config.dropout)
    if config.model == "ststnet":
        return STSTNet(dropout=0.5 if config.dropout == 0 else config.dropout)
    if config.model == "rcn":
        return RCN(dropout=0.5 if config.dropout == 0 else config.dropout)
    if config.model == "twostream":
        return TwoStream(dropout=0.5 if config.dropout == 0 else config.dropout)
    raise ValueError(f"unknown model {config.model!r} (htnet, ststnet, rcn or twostream; logreg "
                     "has no network)")


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

