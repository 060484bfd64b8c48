"""Baselines of Table 2, trained on the same LOSO folds and flow maps as HTNet.

* :class:`STSTNet` (Liong et al., FG 2019): three shallow parallel streams on the whole 28x28x3
  flow map. Each stream is a 3x3 convolution ("same" padding) with 3, 5 or 8 filters, ReLU,
  BatchNorm, 3x3 max-pooling with stride 3 and dropout 0.5; the 16 channels are concatenated,
  average-pooled 2x2 with stride 2 and classified by one fully connected layer (400 -> 3).
  1,683 parameters. The paper trains it with Adam, lr 5e-5, batch 256, 500 epochs.
* :func:`logreg_fold`: logistic regression (scikit-learn) on standardised, flattened flow maps
  with balanced class weights, a floor for what a linear model reads from the same input.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..config import FoldResult


class STSTNet(nn.Module):
    """Shallow triple-stream three-dimensional CNN of Liong et al. (FG 2019)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 3, dropout: float = 0.5):
        super().__init__()

        def stream(width: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(in_channels, width, 3, padding=1),
                nn.ReLU(),
                nn.BatchNorm2d(width),
                nn.MaxPool2d(3, stride=3, padding=1),  # 28 -> 10, as Keras "same" pooling
                nn.Dropout(dropout),
            )

        self.streams = nn.ModuleList([stream(3), stream(5), stream(8)])
        self.pool = nn.AvgPool2d(2, stride=2)  # 10 -> 5
        self.fc = nn.Linear(16 * 5 * 5, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([s(x) for s in self.streams], dim=1)  # (B, 16, 10, 10)
        return self.fc(self.pool(x).flatten(1))  # (B, classes)


def logreg_fold(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                y_test: np.ndarray, *, seed: int, x_test_mirror: np.ndarray | None = None):
    """Fit a balanced logistic regression on one fold; the result has one 'epoch'. With
    ``x_test_mirror`` (``Config.readouts``) the probabilities of the mirrored test faces are
    stored too, and the one fit stands for its own weight average."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    model = make_pipeline(StandardScaler(), LogisticRegression(
        class_weight="balanced", max_iter=2000, random_state=seed))
    model.fit(x_train.reshape(len(x_train), -1), y_train)
    xt = x_test.reshape(len(x_test), -1)
    pred = model.predict(xt).astype(np.int8)
    train_pred = model.predict(x_train.reshape(len(x_train), -1))
    proba = model.predict_proba(xt)
    loss = float(-np.mean(np.log(model.predict_proba(x_train.reshape(len(x_train), -1))
                                 [np.arange(len(y_train)), y_train] + 1e-12)))
    extra = {}
    if x_test_mirror is not None:
        mirror = model.predict_proba(x_test_mirror.reshape(len(x_test_mirror), -1))
        extra = {"prob_mirror": mirror[None].astype(np.float16),
                 "prob_swa": proba[None].astype(np.float16),
                 "prob_swa_mirror": mirror[None].astype(np.float16)}
    return FoldResult(pred=pred[None], train_loss=np.array([loss]),
                      train_acc=np.array([(train_pred == y_train).mean()]),
                      test_acc=np.array([(pred == y_test).mean()]),
                      seconds=time.perf_counter() - start, logits=np.log(proba + 1e-12),
                      prob=proba[None].astype(np.float16), **extra)
