"""Training: the one fold loop (:mod:`~htnetlib.training.fold`), the grouped trainer that runs
many folds at once (:mod:`~htnetlib.training.parallel`) and the measured choice between them
(:mod:`~htnetlib.training.trainer`), the one run store (:mod:`~htnetlib.training.store`), and
the protocols built on them: leave one subject out (:mod:`~htnetlib.training.loso`, section
4.2), nested selection's inner fits (:mod:`~htnetlib.training.nested`) and leave one dataset
out (:mod:`~htnetlib.training.lodo`)."""
