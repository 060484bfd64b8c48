"""Training throughput of the LOSO trainer against the straightforward loop, on this machine.

    python bench/train_benchmark.py [--folds 8] [--epochs 40] [--full]

In one run, on the same data and the `cpu` profile's model:

* straightforward: one model per fold, one fold after another in one process with torch's
  default threads, batch 256, Adam: the official script's way, with the official kernels
  (1x1 convolutions through the convolution routine, full attention on one-token blocks);
* loop trainer: our default on a CPU (exact kernel savings, one fold per process and core);
* grouped trainer: folds as one batched computation (the GPU path), on the CPU for reference.

Throughput is training samples per second (samples x epochs / wall time). With ``--full`` the
whole `cpu` profile (68 folds) is trained into a temporary folder and its wall time and peak
resident memory are measured. Results go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from htnetlib import model as model_mod
from htnetlib.data import load_composite
from htnetlib.train import PROFILES, _train_jobs, fold_jobs, train_fold, versions

HERE = Path(__file__).resolve().parent


def straightforward(jobs):
    """One fold after another, official kernels, torch's default thread count."""
    saved = model_mod.PointwiseConv.forward, model_mod.Attention.one_token_shortcut
    model_mod.PointwiseConv.forward = nn.Conv2d.forward
    model_mod.Attention.one_token_shortcut = False
    try:
        torch.set_num_threads(os.cpu_count() or 1)
        start = time.perf_counter()
        for j in jobs:
            train_fold(j["config"], j["x_train"], j["y_train"], j["x_test"], j["y_test"],
                       seed=j["seed"], device=torch.device("cpu"))
        return time.perf_counter() - start
    finally:
        model_mod.PointwiseConv.forward, model_mod.Attention.one_token_shortcut = saved


def ours(jobs, trainer, workers, threads):
    start = time.perf_counter()
    for _ in _train_jobs(jobs, trainer, torch.device("cpu"), workers, threads, False):
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


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("HTNET_DATA", "data"))
    ap.add_argument("--folds", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--full", action="store_true", help="also time the whole cpu profile")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args()

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
