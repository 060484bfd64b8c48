"""``python -m htnetlib.reproduce --check``: does this machine reproduce the committed outputs?

The notebooks are executed into a temporary folder (figures, tables, findings and timings go
there through ``$HTNET_RESULTS_DIR``; stored runs are read from the repository) and every file
they produce is compared byte for byte with the committed one. A difference is named with its
file and, for a notebook, the cell and the first line that differs; a produced file that is
not committed is named too. Nothing in the repository is written.

``--arithmetic`` runs the kernels with other arithmetic paths, as another CPU would take them:
the variables below are read by the libraries themselves when they start (torch's ATen kernels,
oneDNN and MKL, NumPy's dispatched loops, OpenCV's dispatched code), so one machine can show
what a CPU without AVX-512, or without any vector extension beyond SSE, would print and draw.
"""

from __future__ import annotations

import difflib
import json
import zlib
from pathlib import Path

# Arithmetic paths of another CPU, as environment variables of the notebook kernels.
_NO_AVX512_OPENCV = "AVX512-SKX,AVX512-CLX,AVX512-CNL,AVX512-ICL"
ARITHMETIC = {
    "native": {},
    # an x86-64 CPU with SSE4 only, one thread: no AVX, AVX2, FMA or AVX-512 anywhere
    "baseline-1thread": {
        "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 "
        "AVX512_ICL AVX512_SPR", "OPENCV_CPU_DISABLE": "SSE4.1,SSE4.2,AVX,FP16,AVX2,AVX_VNNI,"
        + _NO_AVX512_OPENCV, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "OPENCV_FOR_THREADS_NUM": "1"},
    # an AVX2 CPU without AVX-512, two threads
    "avx2-2threads": {
        "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL "
        "AVX512_SPR", "OPENCV_CPU_DISABLE": "AVX_VNNI," + _NO_AVX512_OPENCV,
        "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENCV_FOR_THREADS_NUM": "2"},
}


def _cell_text(cell) -> list[str]:
    """A cell's source and outputs as lines, images as their length (enough to tell they
    differ) and text as it is."""
    lines = [f"source: {line}" for line in "".join(cell.get("source", "")).splitlines()]
    for out in cell.get("outputs", []):
        for key, value in sorted(out.get("data", {}).items()):
            text = "".join(value) if isinstance(value, list) else str(value)
            if key.startswith("image/"):
                text = f"<{key}, {len(text)} characters, crc32 {zlib.crc32(text.encode()):08x}>"
            lines += [f"{key}: {line}" for line in text.splitlines()]
        if "text" in out:
            lines += [f"{out.get('name', 'text')}: {line}" for line in
                      "".join(out["text"]).splitlines()]
    return lines


def notebook_differences(committed: Path, produced: Path) -> list[str]:
    """Where two notebook files differ: cell by cell (index, id, first differing line), else
    what outside the cells differs (metadata, key order, the last newline)."""
    a, b = committed.read_bytes(), produced.read_bytes()
    if a == b:
        return []
    try:
        nb_a, nb_b = json.loads(a), json.loads(b)
    except ValueError as exc:
        return [f"not a notebook ({exc})"]
    out = []
    cells_a, cells_b = nb_a.get("cells", []), nb_b.get("cells", [])
    if len(cells_a) != len(cells_b):
        out.append(f"{len(cells_a)} cells committed, {len(cells_b)} produced")
    for i, (ca, cb) in enumerate(zip(cells_a, cells_b)):
        la, lb = _cell_text(ca), _cell_text(cb)
        if ca != cb:
            first = next((f"{x!r} became {y!r}" for x, y in zip(la, lb) if x != y),
                         f"{len(la)} lines became {len(lb)}" if la != lb else
                         "metadata or id differ")
            out.append(f"cell {i} (id {ca.get('id')}): {first}")
    if a.endswith(b"\n") != b.endswith(b"\n"):
        out.append("the final newline differs")
    if not out:
        if nb_a != nb_b:
            keys = sorted(k for k in set(nb_a) | set(nb_b) if nb_a.get(k) != nb_b.get(k))
            out.append(f"notebook-level {', '.join(keys)} differ")
        else:
            out.append("the same content written differently (key order or indentation)")
    return out


def file_differences(committed: Path, produced: Path) -> str | None:
    """Why two files differ (None where they are identical): the first differing line of a
    text file, the size of a binary one."""
    a, b = committed.read_bytes(), produced.read_bytes()
    if a == b:
        return None
    try:
        la, lb = a.decode().splitlines(), b.decode().splitlines()
    except UnicodeDecodeError:
        return f"bytes differ ({len(a)} committed, {len(b)} produced)"
    diff = [d for d in difflib.unified_diff(la, lb, lineterm="", n=0)
            if d[:1] in "+-" and not d.startswith(("+++", "---"))]
    return "; ".join(diff[:2])[:300] or "line endings differ"


def compare(produced: Path, root: Path) -> list[str]:
    """Every difference between the files under ``produced`` (``notebooks/`` and ``results/``
    as the repository lays them out) and the committed files under ``root``, one line each."""
    lines = []
    for path in sorted(p for p in produced.rglob("*") if p.is_file()):
        rel = path.relative_to(produced)
        committed = root / rel
        if not committed.is_file():
            lines.append(f"{rel}: produced but not committed")
        elif rel.suffix == ".ipynb":
            lines += [f"{rel}: {d}" for d in notebook_differences(committed, path)]
        elif (why := file_differences(committed, path)) is not None:
            lines.append(f"{rel}: {why}")
    return lines
