import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from htnetlib.training import parallel
from htnetlib import model as model_mod
from htnetlib.training import fold as fold_mod
from htnetlib.model import Attention, PointwiseConv, build_model
from htnetlib.training.parallel import DryRun, dry_run, fold_memory, group_size, initial_state, is_oom, plan_group_size, train_group, train_groups
from htnetlib.config import Config, TrainingError
from htnetlib.training.loso import fold_jobs
from htnetlib.training.fold import train_fold

CFG = Config(dim=8, heads=1, block_repeats=(1, 1, 1), epochs=5, lr=1e-3, batch_size=8)
CPU = torch.device("cpu")
EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7


def folds(data, config, n=4):
    return fold_jobs(data, config, 0, "unused")[:n]


def alone(config, job, dtype=np.float32):
    """The one-fold trainer on ``job``; in float64 the same float32 initial weights are widened
    and the inputs given as float64, so only the arithmetic's precision differs."""
    return train_fold(config, job["x_train"].astype(dtype), job["y_train"],
                      job["x_test"].astype(dtype), job["y_test"], seed=job["seed"], device=CPU)


def rounding_tolerance(single: np.ndarray, reference: np.ndarray) -> float:
    """How far two float32 trainings of the same folds may differ: see the test below."""
    return 4 * np.abs(single - reference).max() + 4 * EPS32 * np.abs(reference).max()


@pytest.mark.parametrize("config", [CFG, dataclasses.replace(CFG, shuffle=True,
                                                              permute_labels=True)],
                         ids=["official-order", "shuffled-permuted"])
def test_grouped_training_equals_one_fold_at_a_time(synthetic, config, monkeypatch):
    """Same seeds: identical per-epoch predictions and training accuracy, and logits and losses
    equal up to float32 rounding, with a tolerance measured on this machine, not fixed.

    The grouped trainer does the one-fold trainer's float32 arithmetic in another order (one
    batched matmul over folds, batches padded and masked, losses summed on the device), so the
    two differ by rounding alone; how much depends on the CPU's kernels (4.9e-6 on a logit of
    -0.12 on an AMD EPYC, 2.8e-6 here, both past a fixed rtol of 1e-5). The scale of float32
    rounding after these 15 Adam steps is measured by training each fold once more in float64
    (same initial weights, data and batches): ``e = max |float32 - float64|`` over the group's
    folds. With g and a the grouped and one-fold results, ``|g - a| <= |g - exact| + |a -
    exact|``; both errors come from the same kind of float32 arithmetic, so each is about
    ``e``, and the bound is ``4 e`` (2 for the two runs, 2 for the spread between two rounding
    sequences), plus 4 float32 ulps of the value for the final rounding of each result, which
    float64 does not see when both float32 runs round alike. Measured: the grouped results
    differ by 0.3 to 0.7 e (logits) and at most 1 e (losses).
    """
    jobs = folds(synthetic, config)
    # uneven training sets: drop a sample from one fold so batches need padding
    jobs[1]["x_train"], jobs[1]["y_train"] = jobs[1]["x_train"][1:], jobs[1]["y_train"][1:]
    grouped = train_group(config, jobs, device=CPU)
    single = [alone(config, job) for job in jobs]
    build = model_mod.build_model
    monkeypatch.setattr(fold_mod, "build_model", lambda c: build(c).double())
    reference = [alone(config, job, np.float64) for job in jobs]
    for g, a in zip(grouped, single):
        np.testing.assert_array_equal(g.pred, a.pred)
        np.testing.assert_array_equal(g.train_acc, a.train_acc)
    for key in ("logits", "train_loss"):
        got, one, ref = (np.concatenate([getattr(r, key).ravel() for r in rs])
                         for rs in (grouped, single, reference))
        tol = rounding_tolerance(one, ref)
        assert np.abs(got - one).max() <= tol, (key, np.abs(got - one).max(), tol)


def test_initial_state_is_build_model_after_the_seed():
    """Folds initialised on threads from private generators hold exactly the one-fold
    trainer's initial weights (one-token and four-token blocks)."""
    seeds = [7, 1003, 5]
    for config in (CFG, dataclasses.replace(CFG, dim=16, heads=2, block_repeats=(2, 1, 3),
                                            image_size=32, patch_size=4)):
        state = initial_state(config, seeds, workers=2)
        for k, seed in enumerate(seeds):
            torch.manual_seed(seed)
            model = build_model(config)
            for name, p in model.named_parameters():
                assert torch.equal(state[name][k], p), (name, seed)


class _Allocations(TorchDispatchMode):
    """Bytes of every new storage the dispatcher allocates (after vmap's batching rules)."""

    def __init__(self):
        super().__init__()
        self.sizes = [0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {t.untyped_storage().data_ptr() for t in pytree.tree_leaves((args, kwargs))
                 if isinstance(t, torch.Tensor)}
        self.sizes += [t.untyped_storage().nbytes() for t in pytree.tree_leaves(out)
                       if isinstance(t, torch.Tensor)
                       and t.untyped_storage().data_ptr() not in given]
        return out


@pytest.mark.parametrize("kind, hw", [("pointwise", (1, 1)), ("pointwise", (2, 3)),
                                      ("attention", (1, 1))])
def test_vmap_over_stacked_weights_is_one_batched_product(kind, hw):
    """vmap over per-fold weights gives each fold's own result, and neither the forward nor the
    backward pass allocates a per-row copy of a weight (as F.linear on a 4-D input did on
    torch 2.11: 8.47 GiB in one layer of the paper model)."""
    n_folds, rows, c = 3, 32, 24
    torch.manual_seed(0)
    if kind == "pointwise":
        make, c_out, weight = (lambda: PointwiseConv(c, 40)), 40, c * 40
    else:
        make, c_out, weight = (lambda: Attention(c, heads=2)), 3 * c, 3 * c * c
    modules = [make() for _ in range(n_folds)]
    params, _ = stack_module_state(modules)
    base = copy.deepcopy(modules[0]).to("meta")
    x = torch.randn(n_folds, rows, c, *hw)
    batched = vmap(lambda p, xb: functional_call(base, p, (xb,)))
    out = batched(params, x)
    for k, m in enumerate(modules):
        torch.testing.assert_close(out[k], m(x[k]), rtol=1e-5, atol=1e-6)
    record = _Allocations()
    with record:
        batched(params, x).square().sum().backward()
    tokens = rows * hw[0] * hw[1]
    largest = 4 * n_folds * max(tokens * max(c, c_out), weight)  # an activation or the weights
    per_row_copy = 4 * n_folds * tokens * c * c
    assert max(record.sizes) <= largest < per_row_copy


def test_grouped_nan_loss_names_fold_and_epoch(synthetic):
    jobs = folds(synthetic, CFG, 3)
    jobs[1]["x_train"] = jobs[1]["x_train"] * np.nan
    with pytest.raises(TrainingError, match=r"fold 2/\d+ \(subject \w+\): loss is nan at epoch 1"):
        train_group(CFG, jobs, device=CPU)


def test_out_of_memory_halves_the_group_and_retries(synthetic, monkeypatch):
    config = dataclasses.replace(CFG, epochs=2)
    jobs = folds(synthetic, config, 5)
    real, sizes = parallel.train_group, []

    def tight(config, group, **kw):
        sizes.append(len(group))
        if len(group) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.47 GiB")
        return real(config, group, **kw)

    monkeypatch.setattr(parallel, "train_group", tight)
    lines = []
    done = list(train_groups(config, jobs, device=CPU, size=4, log=lines.append))
    assert sizes == [4, 2, 2, 1]
    assert lines == ["out of memory training 4 folds at once; retrying with 2"]
    assert [len(g) for g, _ in done] == [2, 2, 1]
    assert [j["seed"] for g, _ in done for j in g] == [j["seed"] for j in jobs]
    # a halved group starts from its slice of the failed group's weights: the same training
    fresh = real(config, jobs[2:4], device=CPU)
    for got, want in zip(done[1][1], fresh):
        np.testing.assert_array_equal(got.pred, want.pred)
        np.testing.assert_array_equal(got.logits, want.logits)


def test_is_oom():
    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))


def test_dry_run_reports_size_and_time_and_shrinks_on_oom(monkeypatch):
    dry = dry_run(CFG, 3, CPU, steps=2)
    assert dry.group_size == 3 and dry.seconds_per_step > 0 and dry.peak_bytes is None
    assert dry.describe().startswith("dry run: 3 folds at once")

    real = parallel._dry_steps

    def tight(config, size, device, steps):
        if size > 1:
            raise RuntimeError("CUDA out of memory")
        return real(config, size, device, steps)

    monkeypatch.setattr(parallel, "_dry_steps", tight)
    lines = []
    assert dry_run(CFG, 5, CPU, steps=1, log=lines.append).group_size == 1
    assert lines == ["dry run: out of memory with 5 folds at once; trying 2",
                     "dry run: out of memory with 2 folds at once; trying 1"]


def test_group_sizes(monkeypatch):
    assert group_size(Config(), CPU, 68) == 68
    monkeypatch.setenv("HTNET_GROUP_SIZE", "5")
    assert plan_group_size(CFG, 68, CPU) == 5
    # on a GPU: as many as fit in 90% of the free memory, spread evenly over the groups
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * 2**30,
                                                                         139 * 2**30))
    gpu = torch.device("cuda")
    assert group_size(Config(), gpu, 68, per_fold_bytes=2 * 2**30) == 34  # 45 fit: 2 x 34
    assert group_size(Config(), gpu, 68, per_fold_bytes=1 * 2**30) == 68
    assert group_size(Config(), gpu, 68, per_fold_bytes=200 * 2**30) == 1


def test_fold_memory_counts_weights_and_activations():
    n_params = 114_429_446  # the paper model
    est = fold_memory(Config())
    activations = est - 18 * n_params
    # a batch of 256 keeps about 1.2 MiB per sample in float32 (measured: 32 GiB for 17 folds)
    assert 0.2 * 2**30 < activations < 0.5 * 2**30
    assert 1.8 * 2**30 < est < 2.4 * 2**30
    assert DryRun(17, 0.1, 32 * 2**30).per_fold_bytes == -(-32 * 2**30 // 17)


@pytest.mark.parametrize("groups", [None, "2"], ids=["one-group", "groups-of-2"])
def test_run_with_grouped_trainer_matches_loop(synthetic, tmp_path, monkeypatch, groups):
    from htnetlib.training.store import load_run
    from htnetlib.training.loso import run_loso

    if groups:
        monkeypatch.setenv("HTNET_GROUP_SIZE", groups)
    cfg = dataclasses.replace(CFG, max_folds=3)
    loop = load_run(run_loso(synthetic, cfg, runs_dir=tmp_path / "a", trainer="loop",
                             progress=False))
    grouped = load_run(run_loso(synthetic, cfg, runs_dir=tmp_path / "b", trainer="grouped",
                                progress=False))
    assert grouped.meta["trainer"] == "grouped"
    np.testing.assert_array_equal(loop.epochs["pred"], grouped.epochs["pred"])
