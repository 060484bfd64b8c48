"""One fold of leave-one-subject-out training (paper section 4.2): the one training loop.

:func:`train_fold` trains a fresh network on the training samples of one fold (Adam,
cross-entropy with eq. 7's optional class weights, the official code's unshuffled batches of raw
0..255 inputs) and predicts the test samples after **every** epoch, so one run yields both
protocols of :mod:`htnetlib.evaluation.metrics`. Without test samples it is the fit of
:func:`htnetlib.predict.fit`; the grouped trainer (:mod:`htnetlib.training.parallel`) computes the
same thing for many folds at once (tested equal).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.optim import swa_utils

from ..config import LATER_FIELDS, SWA_FRACTION, Config, FoldResult
from ..errors import TrainingError
from ..evaluation.selection import fraction_of_epochs
from ..model import build_model


def pick_device(preferred: str | None = None) -> torch.device:
    """``preferred`` if given, else cuda, then mps, then cpu."""
    if preferred:
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def class_weights(config: Config, y_train: np.ndarray, classes: int = 3) -> np.ndarray | None:
    """Per-class loss weights: eq. 7's sample weights w_i (section 3.4) by class.

    ``balanced`` gives class c the weight n / (classes * n_c) on the fold's training labels, so
    every class carries the same total weight; ``none`` (the official code passes no weights)
    returns None, every sample weighing 1.
    """
    if config.class_weights == "none":
        return None
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=classes)
    return np.where(counts > 0, len(y_train) / (classes * np.maximum(counts, 1)), 0.0)


def later_fields(config: Config) -> list[str]:
    """The fields of :data:`LATER_FIELDS` that ``config`` sets away from their defaults."""
    return [k for k, default in LATER_FIELDS.items() if getattr(config, k) != default]


def fold_seed(seed: int, fold: int) -> int:
    return seed * 1000 + fold


def train_network(config: Config, x_train: np.ndarray, y_train: np.ndarray, *, seed: int,
                  device: torch.device | str, name: str = "fit", progress: bool = False,
                  x_train_mirror: np.ndarray | None = None, after_epoch=None
                  ) -> tuple[nn.Module, dict]:
    """The one training loop: a fresh network trained on ``(x_train, y_train)``.

    Seeded by ``seed`` (torch's initialisation, then a numpy generator for label permutation,
    batch order and mirroring, in that order); Adam at ``config.lr``, cross-entropy with eq. 7's
    class weights (:func:`class_weights`), the official code's unshuffled batches unless
    ``config.shuffle``, an optional cosine schedule. ``x_train_mirror`` (the mirrored inputs,
    :func:`htnetlib.data.regions.network_inputs` with ``mirror=True``) is needed when
    ``config.mirror``: each epoch every training sample is shown mirrored with chance 1/2.
    ``after_epoch(epoch, model)`` is called after every epoch (after the schedule's step).

    Returns the network after the final epoch, in eval mode, and ``{"train_loss",
    "train_acc"}`` (one value per epoch) with the loop's ``seconds``.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if config.permute_labels:
        y_train = rng.permutation(y_train)
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    weight = class_weights(config, y_train)
    loss_fn = nn.CrossEntropyLoss(
        weight=None if weight is None else torch.tensor(weight, dtype=torch.float32, device=device))
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
                if config.lr_schedule == "cosine" else None)
    if config.mirror and (x_train_mirror is None or x_train_mirror.shape != x_train.shape):
        raise ValueError(f"{name}: mirror=true needs x_train_mirror of shape {x_train.shape}")
    xmr = torch.from_numpy(x_train_mirror).to(device) if config.mirror else None
    xtr = torch.from_numpy(x_train).to(device)
    ytr = torch.from_numpy(np.array(y_train, dtype=np.int64)).to(device)  # a writable copy
    n, bs = len(xtr), config.batch_size
    train_loss = np.empty(config.epochs)
    train_acc = np.empty(config.epochs)
    epochs = range(config.epochs)
    if progress:
        from tqdm.auto import tqdm
        epochs = tqdm(epochs, desc=name, unit="epoch", leave=False)
    start = time.perf_counter()
    for epoch in epochs:
        model.train()
        order = rng.permutation(n) if config.shuffle else np.arange(n)
        xep = xtr
        if xmr is not None:  # each sample mirrored with chance 1/2 this epoch
            flip = torch.from_numpy(rng.random(n) < 0.5).to(device)
            xep = torch.where(flip[:, None, None, None], xmr, xtr)
        total, correct = 0.0, 0
        for lo in range(0, n, bs):
            idx = torch.from_numpy(order[lo:lo + bs]).to(device)
            xb, yb = xep[idx], ytr[idx]
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)  # (B, 3)
            loss = loss_fn(logits, yb)
            if not torch.isfinite(loss):
                raise TrainingError(f"{name}: loss is {loss.item()} at epoch {epoch + 1}")
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
        train_loss[epoch], train_acc[epoch] = total / n, correct / n
        if schedule is not None:
            schedule.step()
        if after_epoch is not None:
            after_epoch(epoch, model)
    seconds = time.perf_counter() - start
    return model.eval(), {"train_loss": train_loss, "train_acc": train_acc, "seconds": seconds}


def train_fold(config: Config, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
               y_test: np.ndarray, *, seed: int, device: torch.device, name: str = "fold",
               progress: bool = False, x_train_mirror: np.ndarray | None = None,
               x_test_mirror: np.ndarray | None = None) -> FoldResult:
    """Train a fresh model on one fold (:func:`train_network`) and predict the test samples
    after every epoch (class and softmax probabilities, float16); logistic regression is one
    fit (:func:`htnetlib.model.logreg_fold`).

    With ``config.readouts`` three more readouts of the same training are stored, each after
    every epoch: the probabilities of the mirrored test faces ``x_test_mirror`` (test-time
    augmentation: the mean of ``prob`` and ``prob_mirror`` is the augmented prediction), and
    those of the weight average (stochastic weight averaging, ``torch.optim.swa_utils
    .AveragedModel``: the mean of the weights after each epoch from the last
    :data:`~htnetlib.config.SWA_FRACTION` of epochs on; before that, the model itself) on the
    faces and on their mirror. The average is a copy beside the trained network, so training
    and ``pred``/``prob`` are those of the same run without readouts. HTNet normalises with
    LayerNorm only, so its average needs no batch-norm update; a network with BatchNorm
    (STSTNet, notebook 16's shallow networks) recomputes the average's batch statistics on the
    training inputs after each update (``swa_utils.update_bn``, in the average's own copy).
    Logistic regression stores its one fit's probabilities of the mirrored faces, and its
    "weight average" is the fit itself.
    """
    if config.model == "logreg":
        from ..model import logreg_fold
        if config.readouts and (x_test_mirror is None or x_test_mirror.shape != x_test.shape):
            raise ValueError(f"{name}: readouts=true needs x_test_mirror of shape "
                             f"{x_test.shape}")
        return logreg_fold(x_train, y_train, x_test, y_test, seed=seed,
                           x_test_mirror=x_test_mirror if config.readouts else None)
    device = torch.device(device)
    xte = torch.from_numpy(x_test).to(device)
    yte = np.asarray(y_test)
    pred = np.empty((config.epochs, len(xte)), dtype=np.int8)
    prob = np.empty((config.epochs, len(xte), 3), dtype=np.float16)
    test_acc = np.empty(config.epochs)
    extra: dict[str, np.ndarray] = {}
    if config.readouts:
        if x_test_mirror is None or x_test_mirror.shape != x_test.shape:
            raise ValueError(f"{name}: readouts=true needs x_test_mirror of shape "
                             f"{x_test.shape}")
        xtm = torch.from_numpy(x_test_mirror).to(device)
        extra = {k: np.empty_like(prob) for k in ("prob_mirror", "prob_swa", "prob_swa_mirror")}
        swa_from = config.epochs - fraction_of_epochs(config.epochs, SWA_FRACTION)
    average = None
    if config.readouts:
        with torch.device("meta"):
            has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                 for m in build_model(config).modules())
    else:
        has_batch_norm = False
    xtr_train = torch.from_numpy(x_train).to(device) if has_batch_norm else None  # the AveragedModel, once the last quarter begins

    def softmax(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(x).float(), 1)

    def predict_test(epoch: int, model: nn.Module) -> None:
        nonlocal average
        model.eval()
        with torch.no_grad():
            out = model(xte)
            pred[epoch] = out.argmax(1).cpu().numpy()
            prob[epoch] = torch.softmax(out.float(), 1).cpu().numpy()
            if config.readouts:
                extra["prob_mirror"][epoch] = softmax(model, xtm).cpu().numpy()
                if epoch >= swa_from:
                    if average is None:
                        average = swa_utils.AveragedModel(model)
                    average.update_parameters(model)  # the first call copies
                    if has_batch_norm:  # the average's own batch statistics, on the training
                        # set; its dropout draws from a forked generator, so training is untouched
                        with torch.random.fork_rng(devices=[device] if device.type == "cuda"
                                                   else []):
                            swa_utils.update_bn([xtr_train[lo:lo + config.batch_size] for lo in
                                                 range(0, len(xtr_train), config.batch_size)],
                                                average)
                    average.eval()
                    extra["prob_swa"][epoch] = softmax(average, xte).cpu().numpy()
                    extra["prob_swa_mirror"][epoch] = softmax(average, xtm).cpu().numpy()
                else:
                    extra["prob_swa"][epoch] = prob[epoch]
                    extra["prob_swa_mirror"][epoch] = extra["prob_mirror"][epoch]
        test_acc[epoch] = float((pred[epoch] == yte).mean())

    model, curves = train_network(config, x_train, y_train, seed=seed, device=device, name=name,
                                  progress=progress, x_train_mirror=x_train_mirror,
                                  after_epoch=predict_test)
    with torch.no_grad():
        logits = model(xte).float().cpu().numpy()  # (n_test, 3) after the final epoch
    return FoldResult(pred, curves["train_loss"], curves["train_acc"], test_acc,
                      curves["seconds"], logits, prob, **extra)
