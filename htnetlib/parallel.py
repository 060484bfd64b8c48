"""Fold-parallel LOSO training: many folds as one batched computation (paper section 4.2).

LOSO trains one model per held-out subject. Each model is small next to the per-operation cost
of a framework, so training them one after another spends most of its time on overhead. Here a
*group* of folds is trained at once: the folds' weights are stacked along a leading axis
(``torch.func.stack_module_state``), one forward pass runs every fold's model on its own batch
(``torch.func.vmap`` over ``functional_call``), and one Adam step updates all of them.

It computes what training each fold alone computes:

* every fold has its own initialisation (the same seed as the one-fold trainer), its own
  training set, batch order, held-out subject and optimiser state;
* folds' training sets differ in size by a few samples, so batches are padded to a common
  length and padded samples are masked out of the loss; each fold's loss is the mean over its
  own real samples, and the total is the sum over folds, so each fold's gradient is exactly its
  own;
* Adam is elementwise, so one Adam over the stacked weights is the folds' Adams side by side.

Results agree with :func:`htnetlib.train.train_fold` up to float rounding (tested). Models
with batch statistics (BatchNorm) would see the padding, so only HTNet uses this path.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .config import Config, FoldResult, TrainingError
from .model import build_model


def _pad(arrays: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack arrays of different lengths into (F, length, ...) with a validity mask (F, length)."""
    out = np.zeros((len(arrays), length) + arrays[0].shape[1:], dtype=arrays[0].dtype)
    mask = np.zeros((len(arrays), length), dtype=bool)
    for i, a in enumerate(arrays):
        out[i, :len(a)] = a
        mask[i, :len(a)] = True
    return out, mask


def train_group(config: Config, folds: list[dict], *, device: torch.device,
                progress: bool = False, autocast: bool | None = None) -> list[FoldResult]:
    """Train several folds at once; ``folds`` holds dicts with x_train, y_train, x_test, y_test,
    seed and name (as :func:`htnetlib.train.train_fold` takes them)."""
    if config.model != "htnet":
        raise ValueError(f"fold-parallel training supports HTNet only, not {config.model!r}")
    n_folds, bs = len(folds), config.batch_size
    models = []
    rngs = []
    for f in folds:
        torch.manual_seed(f["seed"])  # the same initialisation as the one-fold trainer
        rngs.append(np.random.default_rng(f["seed"]))
        models.append(build_model(config))
    y_trains = [rng.permutation(f["y_train"]) if config.permute_labels else np.asarray(f["y_train"])
                for f, rng in zip(folds, rngs)]
    params, buffers = stack_module_state(models)  # name -> (F, ...) leaf tensors
    params = {k: v.detach().to(device).requires_grad_() for k, v in params.items()}
    buffers = {k: v.to(device) for k, v in buffers.items()}
    base = copy.deepcopy(models[0]).to("meta")
    del models

    def forward(p, b, x):
        return functional_call(base, (p, b), (x,))

    batched = vmap(forward)
    optimizer = torch.optim.Adam(params.values(), lr=config.lr,
                                 fused=True if device.type == "cuda" else None)
    use_autocast = (device.type == "cuda") if autocast is None else autocast

    n_train = [len(f["x_train"]) for f in folds]
    x_train, _ = _pad([f["x_train"] for f in folds], max(n_train))
    y_train, _ = _pad([y.astype(np.int64) for y in y_trains], max(n_train))
    x_train = torch.from_numpy(x_train).to(device)  # (F, N, 3, S, S)
    y_train = torch.from_numpy(y_train).to(device)
    x_test, test_mask = _pad([f["x_test"] for f in folds], max(len(f["x_test"]) for f in folds))
    x_test = torch.from_numpy(x_test).to(device)
    n_test = [len(f["x_test"]) for f in folds]

    epochs = config.epochs
    pred = np.zeros((epochs, n_folds, x_test.shape[1]), dtype=np.int8)
    loss_hist = np.zeros((epochs, n_folds))
    acc_hist = np.zeros((epochs, n_folds))
    fold_idx = torch.arange(n_folds, device=device)[:, None]
    n_steps = max(-(-n // bs) for n in n_train)
    steps = range(epochs)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc=f"{n_folds} folds at once", unit="epoch", leave=False)
    start = time.perf_counter()
    for epoch in steps:
        # each fold's sample order for this epoch (the official order: unshuffled)
        orders = [rng.permutation(n) if config.shuffle else np.arange(n)
                  for rng, n in zip(rngs, n_train)]
        total = torch.zeros(n_folds, device=device)
        correct = torch.zeros(n_folds, device=device)
        for step in range(n_steps):
            chunks = [o[step * bs:(step + 1) * bs] for o in orders]
            idx, mask = _pad(chunks, max(len(c) for c in chunks))
            idx = torch.from_numpy(idx).to(device)
            mask = torch.from_numpy(mask).to(device)
            xb, yb = x_train[fold_idx, idx], y_train[fold_idx, idx]  # (F, B, ...), (F, B)
            count = mask.sum(1).clamp(min=1)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
                logits = batched(params, buffers, xb)  # (F, B, classes)
            losses = nn.functional.cross_entropy(logits.float().flatten(0, 1), yb.flatten(),
                                                 reduction="none").view(yb.shape)
            per_fold = (losses * mask).sum(1) / count  # each fold's own mean loss
            bad = ~torch.isfinite(per_fold) & (mask.sum(1) > 0)
            if bad.any():
                k = int(bad.nonzero()[0, 0])
                raise TrainingError(f"{folds[k]['name']}: loss is {per_fold[k].item()} "
                                    f"at epoch {epoch + 1}")
            per_fold.sum().backward()
            optimizer.step()
            total += (losses.detach() * mask).sum(1)
            correct += ((logits.detach().argmax(-1) == yb) & mask).sum(1)
        loss_hist[epoch] = (total / torch.tensor(n_train, device=device)).cpu().numpy()
        acc_hist[epoch] = (correct / torch.tensor(n_train, device=device)).cpu().numpy()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                             enabled=use_autocast):
            pred[epoch] = batched(params, buffers, x_test).argmax(-1).cpu().numpy()
    seconds = (time.perf_counter() - start) / n_folds
    with torch.no_grad():
        final_logits = batched(params, buffers, x_test).float().cpu().numpy()
    results = []
    for k, f in enumerate(folds):
        p = pred[:, k, :n_test[k]]
        results.append(FoldResult(
            pred=p, train_loss=loss_hist[:, k], train_acc=acc_hist[:, k],
            test_acc=(p == np.asarray(f["y_test"])).mean(1), seconds=seconds,
            logits=final_logits[k, :n_test[k]]))
    return results


def group_size(config: Config, device: torch.device, n_folds: int) -> int:
    """How many folds to train at once: all of them on a CPU; on a GPU as many as fit.

    Training memory per fold is about 16 bytes per parameter (weights, gradients, two Adam
    moments in float32) plus activations; a quarter of the free memory is kept in reserve.
    """
    if device.type != "cuda":
        return n_folds
    with torch.device("meta"):
        n_params = sum(p.numel() for p in build_model(config).parameters())
    free, _ = torch.cuda.mem_get_info(device)
    per_fold = 16 * n_params + 64 * 2**20
    return max(1, min(n_folds, int(0.75 * free // per_fold)))
