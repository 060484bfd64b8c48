"""The study: the experiment registry (:mod:`~htnetlib.study.experiments`), the plan of runs
(:mod:`~htnetlib.study.plan`), and the tables, figures, findings and README blocks that the
notebooks make from stored runs: one module per topic (:mod:`~htnetlib.study.walkthrough` for
notebooks 01-03, :mod:`~htnetlib.study.training_report` for 04, 05, 10 and 11,
:mod:`~htnetlib.study.ablation` for 06-09, :mod:`~htnetlib.study.selection_report` for 12,
:mod:`~htnetlib.study.lodo_report` for 13, :mod:`~htnetlib.study.frames` for 14), so that each
notebook cell is one or a few calls. Outputs go to :func:`~htnetlib.study.figures.results_dir`,
stored results are read from :func:`~htnetlib.study.figures.stored_dir`."""
