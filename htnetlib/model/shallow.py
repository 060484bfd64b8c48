"""Shallow networks beside HTNet on the same 28x28 flow maps (notebook 16, beyond the paper).

* :class:`RCN`: a shallow recurrent convolutional network in the style of RCN (Xia et al.,
  "Revealing the invisible with model and data shrinking for composite-database
  micro-expression recognition", IEEE TIP 2020): a convolutional stem and recurrent
  convolutional layers (:class:`RecurrentConv`, one feed-forward and one recurrent 3x3
  convolution whose weights are shared over the unrolled steps), on a shrunken input and with
  few channels, the shrinking that paper found to suit the small composite database.
* :class:`TwoStream`: the flow map and the apex face as two streams fused before the
  classifier. Its input has four channels: the flow map's three and the apex face in grey
  (:func:`htnetlib.data.regions.network_inputs` adds it for ``model=twostream``). Each stream
  is an :class:`RCN` body, the face's narrower.
"""

from __future__ import annotations

import torch
from torch import nn


class RecurrentConv(nn.Module):
    """A recurrent convolutional layer: ``h_0 = relu(bn_0(f(x)))`` and ``h_t = relu(bn_t(f(x) +
    r(h_{t-1})))`` for ``t = 1 .. steps``, ``f`` and ``r`` 3x3 convolutions shared over the steps,
    a BatchNorm per step."""

    def __init__(self, in_channels: int, channels: int, steps: int = 2):
        super().__init__()
        self.forward_conv = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.recurrent_conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norms = nn.ModuleList([nn.BatchNorm2d(channels) for _ in range(steps + 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fx = self.forward_conv(x)
        h = torch.relu(self.norms[0](fx))
        for norm in self.norms[1:]:
            h = torch.relu(norm(fx + self.recurrent_conv(h)))
        return h


class RCN(nn.Module):
    """RCN-style shallow network: the 28x28 map shrunk to 14x14 (2x2 average pooling), a 3x3
    stem with ``channels`` filters, two recurrent convolutional layers separated by 2x2
    max-pooling, global average pooling, dropout and one linear classifier."""

    def __init__(self, in_channels: int = 3, num_classes: int = 3, channels: int = 8,
                 steps: int = 2, dropout: float = 0.5):
        super().__init__()
        self.shrink = nn.AvgPool2d(2)  # 28 -> 14: the data shrinking
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU())
        self.rcl1 = RecurrentConv(channels, channels, steps)
        self.pool = nn.MaxPool2d(2)  # 14 -> 7
        self.rcl2 = RecurrentConv(channels, channels, steps)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.shrink(x))
        return self.head(self.rcl2(self.pool(self.rcl1(x))))


class TwoStream(nn.Module):
    """Flow and apex face fused: input (N, 4, 28, 28), channels 0-2 the flow map and channel 3
    the apex face in grey. The flow goes through an :class:`RCN` body with ``channels``
    filters, the face through a narrower one (``face_channels``); their globally pooled
    features are concatenated, and dropout and one linear layer classify them."""

    FLOW_CHANNELS = 3

    def __init__(self, num_classes: int = 3, channels: int = 8, face_channels: int = 4,
                 steps: int = 2, dropout: float = 0.5):
        super().__init__()
        self.flow = RCN(self.FLOW_CHANNELS, num_classes, channels, steps, dropout)
        self.face = RCN(1, num_classes, face_channels, steps, dropout)
        for stream in (self.flow, self.face):
            stream.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout),
                                  nn.Linear(channels + face_channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flow, face = x[:, :self.FLOW_CHANNELS], x[:, self.FLOW_CHANNELS:]
        return self.head(torch.cat([self.flow(flow), self.face(face)], dim=1))
