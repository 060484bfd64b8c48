"""Fold-parallel LOSO training: many folds as one batched computation (paper section 4.2).

LOSO trains one model per held-out subject. Each model is small next to the per-operation cost
of a framework, so training them one after another spends most of its time on overhead. Here a
*group* of folds is trained at once: the folds' weights are stacked along a leading axis, one
forward pass runs every fold's model on its own batch (``torch.func.vmap`` over
``functional_call``), and one Adam step updates all of them.

It computes what training each fold alone computes:

* every fold has its own initialisation (the weights :func:`htnetlib.model.build.build_model` gives
  after the one-fold trainer's seed), its own training set, batch order, held-out subject and
  optimiser state;
* folds' training sets differ in size by a few samples, so batches are padded to a common
  length and padded samples are masked out of the loss; each fold's loss is the mean over its
  own real samples, and the total is the sum over folds, so each fold's gradient is exactly its
  own;
* Adam is elementwise, so one Adam over the stacked weights is the folds' Adams side by side.

Results agree with :func:`htnetlib.training.fold.train_fold` up to float rounding (tested). Models
with batch statistics (BatchNorm) would see the padding, so only HTNet uses this path. One
limit: a fold whose training set needs fewer batches than the group's largest still takes an
(empty) Adam step at the extra batch; with batches of 256 every LOSO fold of the release
(403 to 441 training samples) needs two.

On a GPU nothing inside an epoch waits for the device: batch indices go over in one transfer
per epoch, losses, accuracies and predictions stay on the device until the group ends, and the
loss is checked for NaN once per epoch. :func:`train_groups` trains a whole LOSO in groups of
the size :func:`plan_group_size` picks (a short :func:`dry_run` on a GPU), halves the size when
a group runs out of memory, and builds the next group's weights on a background thread.
"""

from __future__ import annotations

import gc
import math
import os
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from ..config import Config, FoldResult
from ..errors import StoreWarning, TrainingError
from ..model import LayerNorm, Transformer, build_model


def _log(message: str) -> None:
    """Tell the user what the trainer decided on its own (a group halved, a dry run's size) as
    a :class:`~htnetlib.errors.StoreWarning`; ``htnet`` shows it as one line."""
    warnings.warn(message, StoreWarning, stacklevel=3)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` says the device ran out of memory (cuBLAS's workspace included)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError)
        and ("out of memory" in str(exc) or "CUBLAS_STATUS_ALLOC_FAILED" in str(exc)))


def free_memory(device: torch.device) -> None:
    """Drop unreachable tensors and, on a GPU, return cached blocks to the driver."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


_BUILD = threading.Lock()


def _model_on(config: Config, device: torch.device | str) -> nn.Module:
    """``build_model(config)`` with its tensors made on ``device`` (``meta``: shapes only).

    ``with torch.device(...)`` saves and restores a process-wide default, so threads take turns.
    """
    with _BUILD, torch.device(device):
        return build_model(config)


# --------------------------------------------------------------------------- initial weights


def _init_fold(base: nn.Module, state: dict, k: int, seed: int) -> None:
    """Write into fold ``k`` of ``state`` the weights ``build_model`` gives after
    ``torch.manual_seed(seed)``.

    The modules are visited in the order ``build_model`` creates them, and each draws what its
    constructor draws (``reset_parameters`` of Conv2d and Linear, ``torch.randn`` of the position
    embedding) from a private generator, so several folds can be initialised at once on threads.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prefix, module in base.named_modules():
            own = {name: state[f"{prefix}.{name}" if prefix else name][k]
                   for name, _ in module.named_parameters(recurse=False)}
            if not own:
                continue
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                weight = own["weight"]
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
                if "bias" in own:
                    fan_in = weight[0].numel()
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                    nn.init.uniform_(own["bias"], -bound, bound, generator=gen)
            elif isinstance(module, Transformer):
                own["pos_emb"].normal_(generator=gen)
            elif isinstance(module, LayerNorm):
                own["g"].fill_(1)
                own["b"].zero_()
            else:
                raise TypeError(f"no seeded initialisation for {type(module).__name__} "
                                f"({prefix or 'the model'})")


def initial_state(config: Config, seeds: list[int], workers: int | None = None
                  ) -> dict[str, torch.Tensor]:
    """The folds' initial weights stacked on a leading axis, as CPU tensors ``name -> (F, ...)``.

    Fold ``k`` holds exactly what ``torch.manual_seed(seeds[k]); build_model(config)`` holds;
    the folds are filled on ``workers`` threads (default: one per core but one, which is left to
    the thread driving the device).
    """
    base = _model_on(config, "meta")
    if any(True for _ in base.buffers()):
        raise ValueError("fold-parallel training needs a model without buffers")
    state = {name: torch.empty((len(seeds),) + tuple(p.shape))
             for name, p in base.named_parameters()}
    workers = max(1, min(len(seeds), workers or (os.cpu_count() or 2) - 1))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda k: _init_fold(base, state, k, seeds[k]), range(len(seeds))))
    return state


# --------------------------------------------------------------------------- one group


class _Group:
    """A group of folds' models as stacked weights on ``device``: one batched forward for all
    folds and one Adam over all of them (bf16 autocast and fused Adam on CUDA)."""

    def __init__(self, config: Config, state: dict[str, torch.Tensor], device: torch.device,
                 autocast: bool | None = None):
        if config.model != "htnet":
            raise ValueError(f"fold-parallel training supports HTNet only, not {config.model!r}")
        if config.dropout:
            raise ValueError("fold-parallel training needs dropout 0: random dropout masks "
                             "cannot match the one-fold trainer's")
        self.base = _model_on(config, "meta")
        self.device = device
        self.params = {k: v.to(device, copy=True).requires_grad_() for k, v in state.items()}
        self.forward = vmap(lambda p, x: functional_call(self.base, p, (x,)))
        self.optimizer = torch.optim.Adam(self.params.values(), lr=config.lr,
                                          fused=True if device.type == "cuda" else None)
        self.autocast = device.type == "cuda" if autocast is None else autocast

    def logits(self, x: torch.Tensor, autocast: bool | None = None) -> torch.Tensor:
        """(F, B, classes) logits of every fold's model on its own inputs (F, B, 3, S, S)."""
        enabled = self.autocast if autocast is None else autocast
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled):
            return self.forward(self.params, x)

    def predict(self, x: torch.Tensor, autocast: bool | None = None) -> torch.Tensor:
        """Logits in eval mode, without a graph."""
        self.base.eval()
        try:
            with torch.no_grad():
                return self.logits(x, autocast)
        finally:
            self.base.train()

    def step(self, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor, count: torch.Tensor):
        """One Adam step of every fold on its own batch; ``mask`` (F, B) marks real samples and
        ``count`` (F,) counts them. Returns each fold's mean loss (F,), the per-sample losses
        (F, B) and the logits (F, B, classes), detached; nothing is copied to the host."""
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.logits(xb)
        losses = nn.functional.cross_entropy(logits.float().flatten(0, 1), yb.flatten(),
                                             reduction="none").view(yb.shape)
        per_fold = (losses * mask).sum(1) / count.clamp(min=1)  # each fold's own mean loss
        per_fold.sum().backward()
        self.optimizer.step()
        return per_fold.detach(), losses.detach(), logits.detach()


def _pad(arrays: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack arrays of different lengths into (F, length, ...) with a validity mask (F, length)."""
    out = np.zeros((len(arrays), length) + arrays[0].shape[1:], dtype=arrays[0].dtype)
    mask = np.zeros((len(arrays), length), dtype=bool)
    for i, a in enumerate(arrays):
        out[i, :len(a)] = a
        mask[i, :len(a)] = True
    return out, mask


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` on ``device``; to a GPU through pinned memory, without waiting for the copy."""
    t = torch.from_numpy(array)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _batches(orders: list[np.ndarray], bs: int, n_steps: int, device: torch.device) -> list:
    """One epoch's batches of every fold: per step ``(idx, mask, count)``, the (F, B) sample
    indices padded to the step's longest batch, the mask of real samples and their number per
    fold. Indices and masks of the whole epoch go to the device in one transfer each."""
    steps = [_pad([o[s * bs:(s + 1) * bs] for o in orders],
                  max(len(o[s * bs:(s + 1) * bs]) for o in orders)) for s in range(n_steps)]
    idx = _to_device(np.concatenate([i.ravel() for i, _ in steps]), device)
    mask = _to_device(np.concatenate([m.ravel() for _, m in steps]), device)
    out, lo = [], 0
    for i, m in steps:
        hi = lo + i.size
        step_mask = mask[lo:hi].view(m.shape)
        out.append((idx[lo:hi].view(i.shape), step_mask, step_mask.sum(1)))
        lo = hi
    return out


def train_group(config: Config, folds: list[dict], *, device: torch.device,
                progress: bool = False, autocast: bool | None = None,
                state: dict[str, torch.Tensor] | None = None) -> list[FoldResult]:
    """Train several folds at once; ``folds`` holds dicts with x_train, y_train, x_test, y_test,
    seed and name (as :func:`htnetlib.training.fold.train_fold` takes them). ``state`` is the folds'
    :func:`initial_state` if already built (it is copied, not changed)."""
    n_folds, bs = len(folds), config.batch_size
    rngs = [np.random.default_rng(f["seed"]) for f in folds]  # the one-fold trainer's streams
    y_trains = [rng.permutation(f["y_train"]) if config.permute_labels else np.asarray(f["y_train"])
                for f, rng in zip(folds, rngs)]
    if state is None:
        state = initial_state(config, [f["seed"] for f in folds])
    group = _Group(config, state, device, autocast)
    del state

    n_train = [len(f["x_train"]) for f in folds]
    n_test = [len(f["x_test"]) for f in folds]
    x_train = torch.from_numpy(_pad([f["x_train"] for f in folds], max(n_train))[0]).to(device)
    y_train = torch.from_numpy(
        _pad([y.astype(np.int64) for y in y_trains], max(n_train))[0]).to(device)
    x_test = torch.from_numpy(_pad([f["x_test"] for f in folds], max(n_test))[0]).to(device)

    epochs = config.epochs
    # per-epoch results stay on the device until the end
    pred = torch.zeros((epochs, n_folds, x_test.shape[1]), dtype=torch.int8, device=device)
    prob = torch.zeros((epochs, n_folds, x_test.shape[1], 3), dtype=torch.float16, device=device)
    loss_sum = torch.zeros((epochs, n_folds), device=device)  # summed over the epoch's samples
    n_correct = torch.zeros((epochs, n_folds), device=device)
    nonfinite = torch.zeros(n_folds, dtype=torch.bool, device=device)
    bad_loss = torch.zeros(n_folds, device=device)
    fold_idx = torch.arange(n_folds, device=device)[:, None]
    n_steps = max(-(-n // bs) for n in n_train)
    # the official order (unshuffled) is the same every epoch: one transfer for the whole run
    fixed = None if config.shuffle else _batches([np.arange(n) for n in n_train], bs, n_steps,
                                                 device)
    steps = range(epochs)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc=f"{n_folds} folds at once", unit="epoch", leave=False)
    start = time.perf_counter()
    for epoch in steps:
        batches = fixed if fixed is not None else _batches(
            [rng.permutation(n) for rng, n in zip(rngs, n_train)], bs, n_steps, device)
        for idx, mask, count in batches:
            xb, yb = x_train[fold_idx, idx], y_train[fold_idx, idx]  # (F, B, ...), (F, B)
            per_fold, losses, logits = group.step(xb, yb, mask, count)
            bad = ~torch.isfinite(per_fold) & (count > 0)
            bad_loss = torch.where(bad & ~nonfinite, per_fold, bad_loss)  # first bad value
            nonfinite |= bad
            loss_sum[epoch] += (losses * mask).sum(1)
            n_correct[epoch] += ((logits.argmax(-1) == yb) & mask).sum(1)
        out = group.predict(x_test)
        pred[epoch] = out.argmax(-1)
        prob[epoch] = torch.softmax(out.float(), -1)
        if nonfinite.any():  # the one wait for the device in an epoch
            k = int(nonfinite.nonzero()[0, 0])
            raise TrainingError(f"{folds[k]['name']}: loss is {bad_loss[k].item()} "
                                f"at epoch {epoch + 1}")
    pred = pred.cpu().numpy()
    prob = prob.cpu().numpy()
    loss_hist = loss_sum.cpu().numpy() / np.array(n_train)  # in float64, as the one-fold trainer
    acc_hist = n_correct.cpu().numpy() / np.array(n_train)
    seconds = (time.perf_counter() - start) / n_folds
    final_logits = group.predict(x_test, autocast=False).float().cpu().numpy()
    results = []
    for k, f in enumerate(folds):
        p = pred[:, k, :n_test[k]]
        results.append(FoldResult(
            pred=p, train_loss=loss_hist[:, k], train_acc=acc_hist[:, k],
            test_acc=(p == np.asarray(f["y_test"])).mean(1), seconds=seconds,
            logits=final_logits[k, :n_test[k]], prob=prob[:, k, :n_test[k]]))
    return results


# --------------------------------------------------------------------------- group sizes


def fold_memory(config: Config) -> int:
    """Estimated GPU bytes one fold takes in training.

    16 bytes per parameter (float32 weight, gradient and two Adam moments), 2 for autocast's
    bfloat16 weight copies, and the activations autograd keeps for a batch of ``batch_size``:
    counted in float32 by a forward pass on the meta device (the difference between batches of
    2 and 1, so weights saved for the backward pass are not counted twice). bf16 autocast keeps
    many of those activations at half size, so this is an upper bound; :func:`dry_run` measures.
    """
    model = _model_on(config, "meta")

    def saved(batch: int) -> int:
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        x = torch.zeros(batch, 3, config.image_size, config.image_size, device="meta")
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
        return total

    n_params = sum(p.numel() for p in model.parameters())
    return 18 * n_params + (saved(2) - saved(1)) * config.batch_size


def group_size(config: Config, device: torch.device, n_folds: int,
               per_fold_bytes: int | None = None) -> int:
    """How many folds to train at once: all of them on a CPU; on a GPU as many as fit in 90% of
    the free memory at ``per_fold_bytes`` each (default :func:`fold_memory`), spread evenly over
    the fewest groups (68 folds of which 57 fit at once train as 2 groups of 34)."""
    if device.type != "cuda":
        return n_folds
    free_memory(device)
    free, _ = torch.cuda.mem_get_info(device)
    fit = max(1, int(0.9 * free // (per_fold_bytes or fold_memory(config))))
    groups = -(-n_folds // fit)
    return -(-n_folds // groups)


@dataclass
class DryRun:
    """What :func:`dry_run` measured."""

    group_size: int  # folds that trained together without running out of memory
    seconds_per_step: float  # one Adam step of the whole group, batch_size samples per fold
    peak_bytes: int | None = None  # torch.cuda.max_memory_allocated during the steps (CUDA)

    @property
    def per_fold_bytes(self) -> int | None:
        return None if self.peak_bytes is None else -(-self.peak_bytes // self.group_size)

    def describe(self) -> str:
        line = (f"dry run: {self.group_size} folds at once, {self.seconds_per_step:.3f} s per "
                "step")
        if self.peak_bytes is not None:
            line += (f", peak {self.peak_bytes / 2**30:.1f} GiB "
                     f"({self.per_fold_bytes / 2**30:.2f} GiB per fold)")
        return line


def _dry_steps(config: Config, size: int, device: torch.device, steps: int) -> DryRun:
    """``steps`` training steps of ``size`` folds on random data; the first one is not timed."""
    free_memory(device)
    model = _model_on(config, device)  # random weights made on the device: fast, irrelevant
    state = {k: v.detach().expand(size, *v.shape) for k, v in model.named_parameters()}
    group = _Group(config, state, device)
    del model, state
    bs, s = config.batch_size, config.image_size
    x = torch.rand(size, bs, 3, s, s, device=device) * 255 * config.input_scale
    y = torch.randint(0, 3, (size, bs), device=device)
    mask = torch.ones(size, bs, dtype=torch.bool, device=device)
    count = mask.sum(1)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    group.step(x, y, mask, count)  # warm-up: kernel choice, Adam state
    sync()
    start = time.perf_counter()
    for _ in range(max(1, steps - 1)):
        group.step(x, y, mask, count)
    sync()
    seconds = (time.perf_counter() - start) / max(1, steps - 1)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    del group, x, y
    free_memory(device)
    return DryRun(size, seconds, peak)


def dry_run(config: Config, n_folds: int, device: torch.device, steps: int = 3,
            log=_log) -> DryRun:
    """Train a group of ``n_folds`` models of ``config`` for a few steps on random data (a batch
    of ``batch_size`` per fold): the group size that fits, halved on each out-of-memory (one
    line on ``log``), the seconds per step and, on CUDA, the peak memory."""
    size = n_folds
    while True:
        try:
            return _dry_steps(config, size, device, steps)
        except RuntimeError as exc:
            if not is_oom(exc) or size == 1:
                raise
        free_memory(device)  # after the except block, which held the failed step's tensors
        size, tried = max(1, size // 2), size
        log(f"dry run: out of memory with {tried} folds at once; trying {size}")


def plan_group_size(config: Config, n_folds: int, device: torch.device, log=_log) -> int:
    """Folds per group for :func:`train_groups`.

    ``$HTNET_GROUP_SIZE`` if set. Else on a CPU all folds (a dry run only if
    ``$HTNET_DRY_RUN`` is set); on a GPU the :func:`group_size` the memory estimate allows,
    tried by a :func:`dry_run` (which shrinks it if it does not fit), then once more at the
    larger size the measured peak memory allows, if any.
    """
    if os.environ.get("HTNET_GROUP_SIZE"):
        return max(1, min(n_folds, int(os.environ["HTNET_GROUP_SIZE"])))
    size = group_size(config, device, n_folds)
    if device.type != "cuda" and not os.environ.get("HTNET_DRY_RUN"):
        return size
    dry = dry_run(config, size, device, log=log)
    log(dry.describe())
    if dry.per_fold_bytes and dry.group_size == size:
        larger = group_size(config, device, n_folds, per_fold_bytes=dry.per_fold_bytes)
        if larger > size:
            dry = max(dry, dry_run(config, larger, device, log=log), key=lambda d: d.group_size)
            log(dry.describe())
    return dry.group_size


# --------------------------------------------------------------------------- a whole LOSO


def train_groups(config: Config, jobs: list[dict], *, device: torch.device,
                 size: int | None = None, progress: bool = False, log=_log):
    """Train ``jobs`` (dicts as :func:`train_group` takes) in groups; yield ``(group, results)``
    as each group finishes.

    ``size`` defaults to :func:`plan_group_size`. While a group trains, the next group's initial
    weights are built on a background thread. A group that runs out of memory is retried at half
    the size, with one line on ``log``; later groups keep the smaller size.
    """
    if not jobs:
        return
    size = size or plan_group_size(config, len(jobs), device, log=log)
    todo = list(jobs)
    prep = ThreadPoolExecutor(1, thread_name_prefix="htnet-init")
    ahead: dict[tuple, Future] = {}  # the seeds of a group -> its initial state

    def state_of(group: list[dict]) -> Future:
        key = tuple(j["seed"] for j in group)
        if key not in ahead:
            ahead[key] = prep.submit(initial_state, config, list(key))
        return ahead[key]

    try:
        while todo:
            group, rest = todo[:size], todo[size:]
            state = state_of(group).result()
            if rest:
                state_of(rest[:size])  # built while this group trains
            try:
                results = train_group(config, group, device=device, progress=progress,
                                      state=state)
            except RuntimeError as exc:
                if not is_oom(exc) or size == 1:
                    raise
            else:
                ahead.pop(tuple(j["seed"] for j in group))
                todo = rest
                yield group, results
                continue
            free_memory(device)  # after the except block, which held the failed group's tensors
            size, tried = max(1, size // 2), size
            log(f"out of memory training {tried} folds at once; retrying with {size}")
            ahead.clear()  # the failed group's weights, cut to the new size, are kept
            for lo in range(0, len(group), size):
                part = Future()
                part.set_result({k: v[lo:lo + size] for k, v in state.items()})
                ahead[tuple(j["seed"] for j in group[lo:lo + size])] = part
    finally:
        prep.shutdown(wait=False, cancel_futures=True)
