"""Data: the official release (section 4.1), optical flow and apex spotting (section 3.1), the
four facial regions (sections 3.1 and 4.2), synthetic faces and the raw-data pipeline.

* :mod:`~htnetlib.data.release`: load, check and fetch the release; every problem is a
  :class:`~htnetlib.errors.DataError` naming the file.
* :mod:`~htnetlib.data.flow`: optical flow (eq. 2), optical strain (eq. 3), the 28x28 map,
  face crops and apex spotting (eq. 1).
* :mod:`~htnetlib.data.regions`: MTCNN landmarks and the network's input
  (:func:`~htnetlib.data.regions.network_inputs`).
* :mod:`~htnetlib.data.synthetic`: made-up faces and motions for tests and notebooks.
* :mod:`~htnetlib.data.raw`: the raw datasets' readers (frames and annotation tables).
* :mod:`~htnetlib.data.preprocess`: raw datasets into the release layout.
"""

import cv2 as _cv2

from ..errors import DataError

# OpenCV picks its kernels by CPU (SSE4, AVX2, AVX-512): Farneback and DIS flow then differ in
# their last bits from one CPU to another, and so do the figures drawn from them. Its baseline
# code gives the same bits on every x86-64 CPU (tests/test_portable.py checks it under other
# arithmetic paths) at no measured cost (Farneback 9.5 ms per 224x224 pair either way), so
# htnetlib turns the CPU-picked kernels off for the whole process. ``cv2.setUseOptimized(True)``
# after importing htnetlib gives them back.
_cv2.setUseOptimized(False)
from .release import (APEX_DIR, CSV_NAME, DATASET_NAMES, DATASETS, EXPECTED_COUNTS,
                      EXPECTED_SAMPLES, EXPECTED_SUBJECTS, FLOW_DIR, FLOW_SIZE, LABELS, MANIFEST,
                      OFFICIAL_URL, Composite, ReleaseWarning, check_release, default_root,
                      extract_release, fetch, load_composite, read_flow, read_image, read_table,
                      resolve_root, sha256, table1, write_synthetic_release)

__all__ = ["DataError", "ReleaseWarning", "Composite", "load_composite", "check_release",
           "extract_release", "fetch", "read_flow", "read_image", "read_table", "resolve_root",
           "default_root", "sha256", "table1", "write_synthetic_release", "APEX_DIR", "CSV_NAME",
           "DATASET_NAMES", "DATASETS", "EXPECTED_COUNTS", "EXPECTED_SAMPLES",
           "EXPECTED_SUBJECTS", "FLOW_DIR", "FLOW_SIZE", "LABELS", "MANIFEST", "OFFICIAL_URL"]
