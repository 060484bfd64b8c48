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


def batch_of_two(config):
    """A shape bug: right for the up-front check's batch of two, wrong for any other batch."""
    size = config.image_size
    return _BatchOfTwo(3 * size * size)


class _BatchOfTwo(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.linear = nn.Linear(features, 3)

    def forward(self, x):
        return self.linear(x.reshape(2, -1))


def no_parameters(config):
    """A network with nothing to train."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def integer_logits(config):
    """A network whose logits are integers."""
    return _IntegerLogits(3 * config.image_size ** 2)


class _IntegerLogits(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.linear = nn.Linear(features, 3)

    def forward(self, x):
        return self.linear(x.flatten(1)).long()


def detached(config):
    """A network whose logits carry no gradient: no backward pass runs through it."""
    return _Detached(3 * config.image_size ** 2)


class _Detached(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.linear = nn.Linear(features, 3)

    def forward(self, x):
        return self.linear(x.flatten(1)).detach()
