"""The package's architecture rules, read from its source with ``ast`` (no module is imported).

Layers, lowest first; a module imports only from its own layer or the layers below it, and the
module import graph (top-level and function-level imports alike) has no cycle:

    1 config, paper, errors, io    2 data    3 model    4 evaluation    5 training
    6 predict    7 study    8 cli, the ``python -m htnetlib.reproduce`` shim, htnetlib/__init__

Besides: no ``_private`` name of another htnetlib module is imported or read as an attribute;
argparse and terminal printing belong to htnetlib/cli/, matplotlib to htnetlib/study/; no module
is longer than 600 lines; ``htnet --help`` imports no torch; ``htnet --version`` names the
package version. Every failure names the file, the line and the rule.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "htnetlib"
MAX_LINES = 600
MAX_NOTEBOOK_CELL_LINES = 15
# the walkthrough notebooks 01-04 compute each idea in plain code before calling the library
# (issue 35): a hand computation with its check against the library needs up to 25 lines
MAX_TEACHING_CELL_LINES, TEACHING_NOTEBOOKS = 25, ("01_", "02_", "03_", "04_")

# The layer of each module, by its dotted name's first part below htnetlib (a prefix match).
LAYERS = {"htnetlib.config": 1, "htnetlib.paper": 1, "htnetlib.errors": 1, "htnetlib.io": 1,
          "htnetlib.data": 2, "htnetlib.model": 3, "htnetlib.evaluation": 4,
          "htnetlib.training": 5, "htnetlib.predict": 6, "htnetlib.study": 7, "htnetlib.cli": 8,
          "htnetlib.reproduce": 8, "htnetlib": 8}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@lru_cache(maxsize=None)
def tree(name: str) -> ast.Module:
    path = modules()[name]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def layer(name: str) -> int | None:
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in LAYERS:
            return LAYERS[".".join(parts[:k])]
    return None


def where(name: str, node: ast.AST | None = None) -> str:
    rel = modules()[name].relative_to(ROOT).as_posix()
    return f"{rel}:{node.lineno}" if node is not None else rel


def is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def resolve(name: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ast.ImportFrom`` of module ``name`` reads from."""
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_package(name) else name.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str) -> list[tuple[ast.AST, str, list[str]]]:
    """Every import of module ``name`` (top-level and inside functions): (node, module, names).

    ``from pkg import sub`` where ``pkg.sub`` is a module of the package counts as an import of
    ``pkg.sub``; ``names`` are the names imported from the module (empty for ``import x``)."""
    out = []
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            out.extend((node, alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = resolve(name, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules():
                    out.append((node, sub, []))
                else:
                    out.append((node, source, [alias.name]))
    return out


def internal(target: str) -> bool:
    return target == "htnetlib" or target.startswith("htnetlib.")


def known(target: str) -> str | None:
    """The package module ``target`` names (or the closest package above it), else None."""
    parts = target.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in modules():
            return ".".join(parts[:k])
    return None


def report(problems: list[str], rule: str) -> None:
    assert not problems, f"{len(problems)} violation(s) of the rule '{rule}':\n" + "\n".join(
        problems)


# --------------------------------------------------------------------------- layers and cycles


def test_every_module_has_a_layer():
    problems = [f"{where(m)}: module {m} belongs to no layer (add it to LAYERS)"
                for m in modules() if layer(m) is None]
    report(problems, "every module belongs to a layer")


def test_imports_only_from_own_layer_or_below():
    rule = "a module imports only from its own layer or the layers below it"
    problems = []
    for m in modules():
        for node, target, _ in imports(m):
            if not internal(target):
                continue
            t = known(target)
            if t is None:
                problems.append(f"{where(m, node)}: imports {target}, which is no module of "
                                "htnetlib")
            elif layer(t) > layer(m):
                problems.append(f"{where(m, node)}: {m} (layer {layer(m)}) imports {t} "
                                f"(layer {layer(t)}): {rule}")
    report(problems, rule)


def test_import_graph_has_no_cycle():
    rule = "the module import graph has no cycle"
    graph: dict[str, dict[str, ast.AST]] = {m: {} for m in modules()}
    for m in modules():
        for node, target, _ in imports(m):
            t = known(target) if internal(target) else None
            if t is not None and t != m:
                graph[m].setdefault(t, node)
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == "open":
                cycle = stack[stack.index(t):] + [t]
                steps = ", ".join(f"{where(a, graph[a][b])} imports {b}"
                                  for a, b in zip(cycle, cycle[1:]))
                cycles.append(f"{' -> '.join(cycle)} ({steps}): {rule}")
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    report(cycles, rule)


# --------------------------------------------------------------------------- private names


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_private_name_of_another_module():
    rule = "no _private name of another htnetlib module is imported or read as an attribute"
    problems = []
    for m in modules():
        bound = {}  # local name -> the htnetlib module it is bound to
        for node, target, names in imports(m):
            if not internal(target):
                continue
            t = known(target) or target
            for n in names:
                if _private(n) and t != m:
                    problems.append(f"{where(m, node)}: imports {n} from {t}: {rule}")
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == target:
                        bound[alias.asname or alias.name.split(".")[0]] = (
                            target if alias.asname else alias.name.split(".")[0])
            else:
                for alias in node.names:
                    if f"{target}" == f"{resolve(m, node)}.{alias.name}":
                        bound[alias.asname or alias.name] = target
        for node in ast.walk(tree(m)):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            base = node.value
            chain = []
            while isinstance(base, ast.Attribute):
                chain.insert(0, base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                owner = ".".join([bound[base.id], *chain])
                if known(owner) == owner and owner != m:
                    problems.append(f"{where(m, node)}: reads {owner}.{node.attr}: {rule}")
    report(problems, rule)


# --------------------------------------------------------------------------- what lives where


def test_argparse_only_in_cli():
    rule = "argparse is imported only in htnetlib/cli/"
    problems = [f"{where(m, node)}: imports {target}: {rule}"
                for m in modules() if layer(m) and not m.startswith("htnetlib.cli")
                for node, target, _ in imports(m) if target.split(".")[0] == "argparse"]
    report(problems, rule)


def test_matplotlib_only_in_study():
    rule = "matplotlib is imported only in htnetlib/study/"
    problems = [f"{where(m, node)}: imports {target}: {rule}"
                for m in modules() if not m.startswith("htnetlib.study")
                for node, target, _ in imports(m) if target.split(".")[0] == "matplotlib"]
    report(problems, rule)


def _printing(node: ast.AST) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    f = node.func
    if isinstance(f, ast.Name) and f.id == "print":
        return "print("
    if (isinstance(f, ast.Attribute) and f.attr == "write" and isinstance(f.value, ast.Attribute)
            and f.value.attr in ("stdout", "stderr") and isinstance(f.value.value, ast.Name)
            and f.value.value.id == "sys"):
        return f"sys.{f.value.attr}.write("
    return None


def test_terminal_printing_only_in_cli():
    rule = ("terminal printing (print, sys.stdout.write, sys.stderr.write) happens only in "
            "htnetlib/cli/ (warnings.warn for warnings, return values for results)")
    problems = [f"{where(m, node)}: {_printing(node)}...): {rule}"
                for m in modules() if not m.startswith("htnetlib.cli")
                for node in ast.walk(tree(m)) if _printing(node)]
    report(problems, rule)


def test_no_module_longer_than_600_lines():
    rule = f"no module has more than {MAX_LINES} lines"
    problems = []
    for m, path in modules().items():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            problems.append(f"{where(m)}:{MAX_LINES + 1}: {n} lines: {rule}")
    report(problems, rule)


# --------------------------------------------------------------------------- the command


def test_help_imports_no_torch():
    rule = "htnet --help imports no torch"
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "htnetlib.cli", "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"htnetlib/cli/app.py: htnet --help failed: {done.stderr[-2000:]}"
    loaded = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
              if line.startswith("import time:") and line.count("|") == 2]
    torch = sorted({m for m in loaded if m == "torch" or m.startswith("torch.")})
    assert not torch, (f"htnetlib/cli/__main__.py:1: python -m htnetlib.cli --help imported "
                       f"{', '.join(torch[:5])}: {rule} (import it inside the command that "
                       "needs it)")


def test_version():
    """The ``htnet`` entry point pyproject.toml declares, run as ``htnet --version``."""
    import tomllib

    import htnetlib

    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["htnet"]
    module, _, func = script.partition(":")
    code = (f"import sys; sys.argv = ['htnet', '--version']; from {module} import {func}; "
            f"sys.exit({func}())")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, (f"pyproject.toml: htnet = {script!r}: htnet --version failed: "
                                  f"{done.stderr[-2000:]}")
    assert done.stdout.strip() == f"htnet {htnetlib.__version__}", (
        f"htnetlib/cli/app.py: htnet --version printed {done.stdout.strip()!r}: it must print "
        f"'htnet {htnetlib.__version__}' (htnetlib/__init__.py __version__)")


# --------------------------------------------------------------------------- notebooks


def test_notebook_code_cells_are_short():
    rule = (f"no notebook code cell is longer than {MAX_NOTEBOOK_CELL_LINES} lines "
            f"({MAX_TEACHING_CELL_LINES} in the walkthrough notebooks 01-04)")
    problems = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        limit = (MAX_TEACHING_CELL_LINES if path.name.startswith(TEACHING_NOTEBOOKS)
                 else MAX_NOTEBOOK_CELL_LINES)
        for i, cell in enumerate(cells):
            source = cell.get("source", "")
            text = "".join(source) if isinstance(source, list) else source
            n = len(text.rstrip("\n").splitlines())
            if cell.get("cell_type") == "code" and n > limit:
                problems.append(f"{path.relative_to(ROOT).as_posix()}: cell {i} has {n} lines: "
                                f"no code cell of this notebook is longer than {limit} lines")
    report(problems, rule)
