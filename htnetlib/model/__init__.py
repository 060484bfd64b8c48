"""The networks: HTNet (paper sections 3.2-3.3), the Table 2 baselines, notebook 16's shallow networks, and how a configuration
builds one, a user's own network included (:mod:`htnetlib.model.build`)."""

from .baselines import STSTNet, logreg_fold
from .shallow import RCN, RecurrentConv, TwoStream
from .build import (architecture, build_model, build_user_model, check_user_model,
                    count_parameters, load_factory, parameter_count)
from .htnet import (Aggregate, Attention, FeedForward, HTNet, LayerNorm, PointwiseConv, PreNorm,
                    Transformer, pointwise)

__all__ = ["HTNet", "STSTNet", "RCN", "RecurrentConv", "TwoStream", "logreg_fold", "build_model", "build_user_model",
           "check_user_model", "load_factory", "count_parameters", "parameter_count",
           "architecture", "Attention", "Aggregate", "FeedForward", "LayerNorm", "PointwiseConv",
           "PreNorm", "Transformer", "pointwise"]
