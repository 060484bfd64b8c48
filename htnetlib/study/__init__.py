"""The study: the experiment registry (:mod:`~htnetlib.study.experiments`), the plan of runs
(:mod:`~htnetlib.study.plan`), and the tables, figures, findings and README blocks that the
notebooks make from stored runs."""
