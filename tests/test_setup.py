"""The set-up: dependency lists agree, the two README commands exist, CI calls the test command."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def names(requirements):
    return {re.split(r"[=<>!~\[ ]", r.strip(), maxsplit=1)[0].lower() for r in requirements}


EXTRAS = {"notebooks": {"jupyterlab", "papermill", "nbval", "seaborn", "ipykernel"},
          "cluster": {"submitit"}, "test": {"pytest", "vit-pytorch"},
          "book": {"jupyter-book", "latex2mathml"}}


def environment_pip_lines() -> list[str]:
    pip_lines = []
    in_pip = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.strip() == "- pip:":
            in_pip = True
            continue
        if in_pip and line.strip().startswith("- "):
            pip_lines.append(line.strip()[2:])
    return pip_lines


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [r for extra in project["optional-dependencies"].values()
                                      for r in extra]
    pip_lines = environment_pip_lines()
    installs = [p for p in pip_lines if p.startswith("-e")]
    pip_lines = [p for p in pip_lines if not p.startswith("-e")]
    assert names(pip_lines) == names(deps)
    # pinned versions agree too
    pins = lambda reqs: {r.replace(" ", "") for r in reqs if "==" in r}  # noqa: E731
    assert pins(pip_lines) == pins(deps)
    assert installs == ["-e .[notebooks,cluster,test,book]"]


def test_the_core_install_needs_no_notebook_cluster_or_test_package():
    """jupyterlab, papermill, nbval, seaborn, ipykernel, submitit and pytest are extras; the
    Makefile's venv installs every extra, so make test, reproduce, lab and book have them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = names(project["dependencies"])
    extras = {k: names(v) for k, v in project["optional-dependencies"].items()}
    assert extras == EXTRAS
    assert not core & set().union(*EXTRAS.values())
    assert "pip install -q -e '.[notebooks,cluster,test,book]'" in (ROOT / "Makefile").read_text()


def test_readme_commands_and_ci():
    readme = (ROOT / "README.md").read_text()
    assert "make reproduce" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^reproduce:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "HTNET_DATA" in ci


def test_the_readme_is_a_front_page():
    """At most 200 lines: what the project is, the two commands, the honest headline and its
    comparison, predicting on the shipped frames, where the rest lives (docs/*.md)."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for needed in ("<!-- headline:start -->", "<!-- comparison:start -->", "## Two commands",
                   "--onset examples/onset.png --apex examples/apex.png", "<!-- model:start -->",
                   "## Where the rest lives"):
        assert needed in readme, needed
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)\)", readme))
    assert linked == {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}


def test_console_script_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"htnet": "htnetlib.cli:main"}


NO_EXTRAS = r'''
import importlib.abc, sys
REFUSED = {"jupyterlab", "notebook", "papermill", "nbval", "nbformat", "pytest", "submitit",
           "seaborn"}

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REFUSED:
            raise ModuleNotFoundError(f"No module named {name!r} (refused: not installed)")
        return None

sys.meta_path.insert(0, Refuse())
import json, cv2
from pathlib import Path
import htnetlib.predict, htnetlib.cli
from htnetlib.cli import main
from htnetlib.data import synthetic, write_synthetic_release
for argv in (["--help"], ["predict", "--help"], ["fit", "--help"]):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 0, (argv, code)
tmp = Path(sys.argv[1])
root = write_synthetic_release(tmp / "release")
assert main(["fit", "--profile", "smoke", "--data", str(root), "--out", str(tmp / "m")]) == 0
pair = synthetic.make_pair(2, seed=0)
cv2.imwrite(str(tmp / "a.png"), pair.onset[..., ::-1])
cv2.imwrite(str(tmp / "b.png"), pair.apex[..., ::-1])
assert main(["predict", "--model", str(tmp / "m"), "--onset", str(tmp / "a.png"), "--apex",
             str(tmp / "b.png"), "--json", "--flow-method", "farneback"]) == 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in REFUSED)
assert not loaded, loaded
print("CORE OK")
'''


def test_the_core_imports_fits_and_predicts_without_the_extras(tmp_path):
    """A subprocess where jupyterlab, notebook, papermill, nbval, nbformat, pytest, submitit
    and seaborn cannot be imported: htnetlib.predict and htnetlib.cli import, the help of
    htnet, htnet predict and htnet fit prints, and a smoke model fits and predicts a pair."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", NO_EXTRAS, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "CORE OK" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
