"""Numbers reported in the paper, for side-by-side tables (cited, never measured here).

Each table maps a row name to ``{group: (UF1, UAR)}`` with groups full, smic, casme2, samm;
values are copied from Wang et al., "HTNet for micro-expression recognition",
Neurocomputing 2024.
"""

_T2 = """
LBP-TOP         0.5882 0.5785 0.2000 0.5280 0.7026 0.7429 0.3954 0.4102
Bi-WOOF         0.6296 0.6227 0.5727 0.5829 0.7805 0.8026 0.5211 0.5139
AlexNet         0.6933 0.7154 0.6201 0.6373 0.7994 0.8312 0.6104 0.6642
GoogLeNet       0.5573 0.6049 0.5123 0.5511 0.5989 0.6414 0.5124 0.5992
VGG16           0.6425 0.6516 0.5800 0.5964 0.8166 0.8202 0.4870 0.4793
OFF-ApexNet     0.7196 0.7096 0.6817 0.6695 0.8764 0.8681 0.5409 0.5392
STSTNet         0.7353 0.7605 0.6801 0.7013 0.8382 0.8686 0.6588 0.6810
CapsuleNet      0.6520 0.6506 0.5820 0.5877 0.7068 0.7018 0.6209 0.5989
Dual-Inception  0.7322 0.7278 0.6645 0.6726 0.8621 0.8560 0.5868 0.5663
EMR             0.7885 0.7824 0.7461 0.7530 0.8293 0.8209 0.7754 0.7152
RCN             0.7432 0.7190 0.6326 0.6441 0.8512 0.8123 0.7601 0.6715
FeatRef         0.7838 0.7832 0.7011 0.7083 0.8915 0.8873 0.7372 0.7155
HTNet           0.8603 0.8475 0.8049 0.7905 0.9532 0.9516 0.8131 0.8124
"""

GROUPS = ("full", "smic", "casme2", "samm")


def _parse(text: str) -> dict:
    out = {}
    for line in text.strip().splitlines():
        name, *vals = line.split()
        v = [float(x) for x in vals]
        out[name] = {g: (v[2 * i], v[2 * i + 1]) for i, g in enumerate(GROUPS)}
    return out


TABLE2 = _parse(_T2)  # Table 2: composite benchmark, LOSO, UF1 and UAR
TABLE3 = {"AlexNet": (0.257, 0.2634), "STSTNet": (0.3795, 0.3792), "RCN": (0.3928, 0.3893),
          "FeatRef": (0.3493, 0.3413), "HTNet": (0.5767, 0.5415)}  # CAS(ME)^3 part A

# Section 4.4 ablations. Tables 4 and 5 list, per grid point, Full UF1, Full UAR, SMIC, SAMM and
# CASME II (UF1, UAR); stored here in the order of GROUPS (full, smic, casme2, samm).
_T4 = """
5   0.837  0.8213 0.7556 0.7469 0.9422 0.9308 0.8237 0.8033
6   0.8271 0.8037 0.7394 0.7214 0.9482 0.9317 0.7903 0.775
7   0.8603 0.8475 0.8049 0.7905 0.9532 0.9516 0.8131 0.8124
8   0.85   0.846  0.7833 0.7792 0.964  0.962  0.7909 0.79
9   0.8511 0.8445 0.7753 0.7708 0.9722 0.9658 0.8168 0.8088
10  0.8546 0.8383 0.8008 0.7892 0.957  0.945  0.8068 0.7812
"""
_T5 = """
2   0.8105 0.7848 0.748  0.7363 0.8845 0.8588 0.7984 0.75
4   0.8297 0.8029 0.7247 0.7065 0.9647 0.9554 0.8137 0.7849
6   0.8316 0.8183 0.744  0.734  0.9722 0.9658 0.7732 0.7742
8   0.8603 0.8475 0.8049 0.7905 0.9532 0.9516 0.8131 0.8124
10  0.8464 0.8376 0.76   0.756  0.9492 0.9346 0.8571 0.8453
12  0.8499 0.8207 0.7561 0.7345 0.95   0.9412 0.8682 0.8419
"""
TABLE4 = {int(k): v for k, v in _parse(_T4).items()}  # bottom-level block size P -> scores
TABLE5 = {int(k): v for k, v in _parse(_T5).items()}  # top-level layers L of (2, 2, L) -> scores
# Table 5's "#Params (millions)" row; the values match float32 megabytes (MiB) of the model, not
# the parameter count (notebook 09 computes both), and its training time in seconds.
TABLE5_PARAMS = {2: 149.57, 4: 245.88, 6: 342.20, 8: 438.51, 10: 534.82, 12: 631.13}
TABLE5_SECONDS = {2: 3767, 4: 4836, 6: 5906, 8: 6942, 10: 8085, 12: 9147}
