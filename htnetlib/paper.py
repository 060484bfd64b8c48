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
