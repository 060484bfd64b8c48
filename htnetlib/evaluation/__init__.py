"""Evaluation: UF1 and UAR (equations 8-9) under both protocols with subject-bootstrap
intervals (:mod:`~htnetlib.evaluation.metrics`), honest selection rules
(:mod:`~htnetlib.evaluation.selection`) and the leak test (:mod:`~htnetlib.evaluation.leak`)."""
