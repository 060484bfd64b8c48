"""How long each lab episode (notebooks 01-04) takes to run, with and without the release.

    python bench/lab_timing.py [--write]

Each episode is executed headless by papermill, as a student's "Run all" would run it, once on
the release (``$HTNET_DATA``, stored runs read from results/) and once with ``HTNET_DATA`` an
empty folder, on the synthetic cohort, from a cold start: the cohort is written again and the
landmark and trainer caches are empty, so episode 04 trains its lab configuration from scratch.
Outputs go to a temporary folder; nothing in the repository changes. ``--write`` puts the table
into bench/RESULTS.md under "The lab's episodes" (replacing that section).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from htnetlib.cli.reproduce import NOTEBOOKS, execute  # noqa: E402
from htnetlib.study import lab  # noqa: E402

SECTION = "## The lab's episodes"


def run(stem: str, env: dict, out: Path) -> float:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        start = time.perf_counter()
        execute(NOTEBOOKS / f"{stem}.ipynb", out / f"{stem}.ipynb", {}, cwd=NOTEBOOKS)
        return time.perf_counter() - start
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    release = os.environ.get("HTNET_DATA")
    if not release or not lab.has_release(release):
        print("lab_timing: HTNET_DATA must name the release (to time both ways)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "empty").mkdir()
        shutil.rmtree(lab.LAB_FOLDER / "cohort", ignore_errors=True)
        for stem in (ep.notebook for ep in lab.SCHEDULE):
            with_s = run(stem, {"HTNET_RESULTS_DIR": str(tmp / "with" / stem)}, tmp)
            cold = {"HTNET_DATA": str(tmp / "empty"), "HTNET_CACHE": str(tmp / "cache"),
                    "HTNET_RESULTS_DIR": str(tmp / "without" / stem)}
            without_s = run(stem, cold, tmp)
            rows.append((stem, with_s, without_s))
            print(f"{stem}: {with_s:.0f} s with the release, {without_s:.0f} s without", flush=True)
    total = sum(r[1] for r in rows), sum(r[2] for r in rows)
    lines = [SECTION, "",
             f"Measured {datetime.now():%Y-%m-%dT%H:%M} by `python bench/lab_timing.py --write` "
             f"({platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}): "
             "each episode executed headless by papermill, with the release (stored runs read) "
             "and without it (the synthetic cohort from a cold start: cohort written, landmarks "
             f"found, episode 04 trains `lab.lab_config('cpu')`, {lab.LAB_EPOCHS} epochs).", "",
             "| episode | with the release (s) | without it (s) |", "|---|---|---|",
             *(f"| {stem} | {w:.0f} | {wo:.0f} |" for stem, w, wo in rows),
             f"| all four | {total[0]:.0f} | {total[1]:.0f} |", ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        path = ROOT / "bench" / "RESULTS.md"
        head, found, rest = path.read_text().partition(SECTION)
        tail = rest[rest.index("\n## ") + 1:] if found and "\n## " in rest else ""
        path.write_text(head.rstrip("\n") + "\n\n" + text + ("\n" + tail if tail else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
