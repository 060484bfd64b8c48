"""The networks: HTNet (paper sections 3.2-3.3), the Table 2 baselines, and how a configuration
builds one (:mod:`htnetlib.model.build`)."""

from .baselines import STSTNet, logreg_fold
from .build import architecture, build_model, count_parameters, parameter_count
from .htnet import (Aggregate, Attention, FeedForward, HTNet, LayerNorm, PointwiseConv, PreNorm,
                    Transformer, pointwise)

__all__ = ["HTNet", "STSTNet", "logreg_fold", "build_model", "count_parameters",
           "parameter_count", "architecture", "Attention", "Aggregate", "FeedForward",
           "LayerNorm", "PointwiseConv", "PreNorm", "Transformer", "pointwise"]
