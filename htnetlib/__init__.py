"""htnetlib: a thin, tested reproduction of HTNet (Wang et al., Neurocomputing 2024).

One module per stage of the paper: ``data`` (release layout, section 4.1), ``flow``
(optical flow, strain, apex spotting, section 3.1), ``regions`` (MTCNN landmarks and the
four facial regions, sections 3.1 and 4.2), ``model`` (HTNet, sections 3.2-3.3), ``train``
(LOSO training, section 4.2) and ``metrics`` (UF1 and UAR, equations 8-9).
"""

__version__ = "0.1.0"
