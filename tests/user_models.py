"""Model factories for tests/test_user_model.py: ``htnet train --model tests.user_models:tiny``.

A factory takes the :class:`htnetlib.config.Config` (or nothing) and returns an ``nn.Module``
mapping the network input (N, 3, S, S) to (N, 3) logits.
"""

from torch import nn


def tiny(config):
    """A linear classifier on the flattened input: the smallest network htnet can train."""
    size = config.image_size
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 3))


def tiny_without_config():
    """The same network for the default 28x28 input, from a factory that takes no argument."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 28 * 28, 3))


def wrong_shape(config):
    """A network whose output is not (N, 3) logits."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * config.image_size ** 2, 5))


NOT_CALLABLE = 3
