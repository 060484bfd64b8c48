"""htnetlib: a thin, tested reproduction of HTNet (Wang et al., Neurocomputing 2024).

Layers, each importing only from those above it in this list:

* ``config``, ``paper``, ``errors``, ``io``: the configuration and its profiles; the paper's
  numbers; errors and exit codes; atomic writes and provenance.
* ``data``: the release (section 4.1), optical flow, strain and apex spotting (section 3.1),
  the four facial regions (sections 3.1, 4.2), synthetic faces, raw-data preprocessing.
* ``model``: HTNet (sections 3.2-3.3), the Table 2 baselines, building a network.
* ``evaluation``: UF1 and UAR (equations 8-9), selection rules, the leak test.
* ``training``: the fold loop, the grouped trainer, the run store, LOSO (section 4.2), nested
  selection and leave one dataset out.
* ``predict``: fit one model on every sample and predict from frames.
* ``study``: the experiment registry, the plan, tables, figures and README blocks.
* ``cli``: the ``htnet`` command, ``htnet grid`` and ``make reproduce``.

Importing ``htnetlib`` imports nothing heavy; ``from htnetlib.model import HTNet`` gives the
network.
"""

__version__ = "0.2.0"


def __getattr__(name: str):
    """``htnetlib.leak_test``: the amplified leak test of :mod:`htnetlib.evaluation.leak`,
    imported on first use (``import htnetlib`` stays light)."""
    if name == "leak_test":
        from .evaluation.leak import leak_test
        return leak_test
    raise AttributeError(f"module 'htnetlib' has no attribute {name!r}")
