"""Training throughput of the LOSO trainer against the straightforward loop, on this machine.

    python bench/train_benchmark.py [--folds 8] [--epochs 40] [--full]
    python bench/train_benchmark.py --gpu [--json bench.json] [--profile paper] [--epochs 10]

In one run, on the same data and the `cpu` profile's model:

* straightforward: one model per fold, one fold after another in one process with torch's
  default threads, batch 256, Adam: the official script's way, with the official kernels
  (1x1 convolutions through the convolution routine, full attention on one-token blocks);
* loop trainer: our default on a CPU (exact kernel savings, one fold per process and core);
* grouped trainer: folds as one batched computation (the GPU path), on the CPU for reference.

Throughput is training samples per second (samples x epochs / wall time). With ``--full`` the
whole `cpu` profile (68 folds) is trained into a temporary folder and its wall time and peak
resident memory are measured. Results go to bench/RESULTS.md.

With ``--gpu`` (``bash bench/gpu.sh bench``, under 2 minutes on one GPU) it compares, on the
first available device and a profile's model (``paper`` by default): the straightforward loop
(one fold, float32, official kernels) against the grouped trainer at the group size a dry run
picks, and projects a whole LOSO's time from both; a JSON summary goes to ``--json``. On a CPU
the same runs with ``--profile smoke`` in seconds (tests).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from htnetlib import model as model_mod
from htnetlib.data import load_composite
from htnetlib.config import PROFILES
from htnetlib.training.jobs import train_jobs
from htnetlib.io import device_name, versions
from htnetlib.training.loso import fold_jobs
from htnetlib.training.fold import pick_device, train_fold

HERE = Path(__file__).resolve().parent


@contextmanager
def official_kernels():
    """The official script's kernels: 1x1 convolutions through the convolution routine and the
    full attention computation on one-token blocks."""
    saved = model_mod.PointwiseConv.forward, model_mod.Attention.one_token_shortcut
    model_mod.PointwiseConv.forward = nn.Conv2d.forward
    model_mod.Attention.one_token_shortcut = False
    try:
        yield
    finally:
        model_mod.PointwiseConv.forward, model_mod.Attention.one_token_shortcut = saved


def straightforward(jobs):
    """One fold after another, official kernels, torch's default thread count."""
    with official_kernels():
        torch.set_num_threads(os.cpu_count() or 1)
        start = time.perf_counter()
        for j in jobs:
            train_fold(j["config"], j["x_train"], j["y_train"], j["x_test"], j["y_test"],
                       seed=j["seed"], device=torch.device("cpu"))
        return time.perf_counter() - start


def ours(jobs, trainer, workers, threads):
    start = time.perf_counter()
    for _ in train_jobs(jobs, trainer, torch.device("cpu"), workers, threads, False):
        pass
    return time.perf_counter() - start


def full_profile(data_root, workers):
    """The whole cpu profile through the CLI; wall time and peak RSS of the process tree."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c",
               "import resource, sys; from htnetlib.cli import main; rc = main(sys.argv[1:]); "
               "self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
               "kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
               "print('PEAK_KB', self_kb, kids_kb); sys.exit(rc)",
               "train", "--profile", "cpu", "--workers", str(workers), "--data", str(data_root),
               "--out", tmp]
        start = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        peak = next(line for line in res.stdout.splitlines() if line.startswith("PEAK_KB"))
        self_kb, kids_kb = map(int, peak.split()[1:])
        return wall, self_kb / 2**20, kids_kb / 2**20


def gpu_bench(data_root, profile: str, epochs: int, straight_epochs: int,
              device: str | None = None) -> dict:
    """Straightforward loop against the grouped trainer on one device; a JSON-ready summary.

    Samples per second count training samples x epochs over the wall time of the epochs. The
    projected LOSO time of the grouped trainer is its dry run, the first group's initial weights
    (later groups' are built while the previous one trains), each group's set-up and the whole
    profile's samples x epochs at the measured rate; the straightforward loop's is the samples x
    epochs at its rate.
    """
    from htnetlib.training.parallel import dry_run, group_size, initial_state, train_group
    from htnetlib.config import profile_config

    dev = pick_device(device)
    cuda = dev.type == "cuda"
    config = profile_config(profile)
    data = load_composite(data_root)
    with tempfile.TemporaryDirectory() as tmp:
        jobs = fold_jobs(data, config, 0, tmp, dev)
    n_folds = len(jobs)

    start = time.perf_counter()
    dry = dry_run(config, group_size(config, dev, n_folds), dev)
    dry_seconds = time.perf_counter() - start
    print(dry.describe(), f"({dry_seconds:.1f} s)", flush=True)

    one = jobs[0]
    with official_kernels():
        def loop(n_epochs):
            return train_fold(dataclasses.replace(config, epochs=n_epochs), one["x_train"],
                              one["y_train"], one["x_test"], one["y_test"], seed=one["seed"],
                              device=dev)
        loop(1)  # warm-up: kernel choice
        straight = loop(straight_epochs)
    straight_rate = len(one["x_train"]) * straight_epochs / straight.seconds
    print(f"straightforward: {straight.seconds / straight_epochs:.3f} s per epoch of one fold, "
          f"{straight_rate:.0f} samples/s", flush=True)

    group = jobs[:dry.group_size]
    start = time.perf_counter()
    state = initial_state(config, [j["seed"] for j in group])
    init_seconds = time.perf_counter() - start
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    results = train_group(dataclasses.replace(config, epochs=epochs), group, device=dev,
                          state=state)
    wall = time.perf_counter() - start
    train_seconds = results[0].seconds * len(group)  # the epochs alone
    grouped_rate = sum(len(j["x_train"]) for j in group) * epochs / train_seconds
    print(f"grouped: {len(group)} folds, {train_seconds / epochs:.3f} s per epoch, "
          f"{grouped_rate:.0f} samples/s; initial weights {init_seconds:.1f} s, set-up "
          f"{wall - train_seconds:.1f} s", flush=True)

    samples = sum(len(j["x_train"]) for j in jobs) * config.epochs
    n_groups = -(-n_folds // len(group))
    projected = dry_seconds + init_seconds + n_groups * (wall - train_seconds) \
        + samples / grouped_rate
    gib = 2 ** 30
    return {
        "measured": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": device_name(dev),
        "gpu": torch.cuda.get_device_name(dev) if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "profile": profile,
        "config": config.to_dict(),
        "n_folds": n_folds,
        "group_size": len(group),
        "groups": n_groups,
        "dry_run": {"group_size": dry.group_size, "seconds_per_step": dry.seconds_per_step,
                    "seconds": dry_seconds,
                    "peak_gib": dry.peak_bytes / gib if dry.peak_bytes else None,
                    "per_fold_gib": dry.per_fold_bytes / gib if dry.per_fold_bytes else None},
        "straightforward": {"folds": 1, "epochs": straight_epochs, "seconds": straight.seconds,
                            "samples_per_s": straight_rate},
        "grouped": {"folds": len(group), "epochs": epochs, "seconds": train_seconds,
                    "initial_weights_seconds": init_seconds,
                    "setup_seconds": wall - train_seconds, "samples_per_s": grouped_rate,
                    "peak_gib": torch.cuda.max_memory_allocated(dev) / gib if cuda else None},
        "speedup": grouped_rate / straight_rate,
        "loso_samples_x_epochs": samples,
        "projected_loso_seconds": projected,
        "projected_straightforward_seconds": samples / straight_rate,
        "target_loso_seconds": 180,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("HTNET_DATA", "data"))
    ap.add_argument("--folds", type=int, default=8)
    ap.add_argument("--epochs", type=int,
                    help="epochs timed (default 40; --gpu: 10 for the grouped trainer)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--full", action="store_true", help="also time the whole cpu profile")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--gpu", action="store_true",
                    help="straightforward loop against the grouped trainer on the first "
                         "available device (bench/gpu.sh bench); writes --json")
    ap.add_argument("--json", default="bench.json", help="--gpu: the summary file")
    ap.add_argument("--profile", default="paper", help="--gpu: the profile's model")
    ap.add_argument("--straight-epochs", type=int, default=5,
                    help="--gpu: epochs timed for the straightforward loop")
    ap.add_argument("--device", help="--gpu: cuda or cpu (default: the first available)")
    args = ap.parse_args()
    if args.gpu:
        summary = gpu_bench(args.data, args.profile, args.epochs or 10, args.straight_epochs,
                            args.device)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"projected LOSO: grouped {summary['projected_loso_seconds']:.0f} s, "
              f"straightforward {summary['projected_straightforward_seconds']:.0f} s "
              f"(speedup {summary['speedup']:.1f}x); written to {args.json}")
        return
    args.epochs = args.epochs or 40

    data = load_composite(args.data)
    config = dataclasses.replace(PROFILES["cpu"], epochs=args.epochs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = fold_jobs(data, config, 0, tmp)[:args.folds]
        samples = sum(len(j["x_train"]) for j in jobs) * args.epochs
        base = straightforward(jobs)
        rows.append(("straightforward loop (official kernels, 1 process, "
                     f"{os.cpu_count()} threads)", base))
        rows.append((f"loop trainer ({args.workers} processes x 1 thread)",
                     ours(jobs, "loop", args.workers, 1)))
        rows.append((f"grouped trainer ({args.folds} folds batched, {os.cpu_count()} threads)",
                     ours(jobs, "grouped", 1, None)))
    lines = [
        "# Training benchmark", "",
        f"Measured {datetime.datetime.now().isoformat(timespec='minutes')} by "
        "`python bench/train_benchmark.py" + (" --full" if args.full else "") + "`.", "",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"{platform.platform()}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        f"- workload: `cpu` profile model, {args.folds} folds x {args.epochs} epochs, "
        f"{samples} training samples in all", "",
        "| trainer | wall time (s) | training samples / s | ratio to straightforward |",
        "|---|---|---|---|",
    ]
    for name, sec in rows:
        lines.append(f"| {name} | {sec:.1f} | {samples / sec:.0f} | {base / sec:.2f} |")
    ratio = base / rows[1][1]
    lines += ["", f"Target: throughput ratio >= 1.5 -> measured {ratio:.2f} "
              f"({'met' if ratio >= 1.5 else 'NOT met'})."]
    if args.full:
        wall, self_gib, kids_gib = full_profile(args.data, args.workers)
        peak = max(self_gib, kids_gib)
        lines += ["", "## The full `cpu` profile (68 folds)", "",
                  f"- wall time: {wall / 60:.1f} min (target <= 15 min: "
                  f"{'met' if wall <= 900 else 'NOT met'})",
                  f"- peak resident memory: main process {self_gib:.2f} GiB, largest worker "
                  f"{kids_gib:.2f} GiB (target <= 4 GB: {'met' if peak <= 4 * 1e9 / 2**30 else 'NOT met'})"]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
