"""The notebooks open in JupyterLab: a real server, a headless Chromium, the rendered page.

JupyterLab renders notebooks in the browser, so reading the notebook file proves nothing about
what a reader sees. This test starts ``jupyter lab`` on a free port of 127.0.0.1 (a random
token, no browser, ``--allow-root`` for CI machines that run as root) serving ``notebooks/``,
lets a headless Chromium load ``/lab/tree/01_optical_flow.ipynb`` with a virtual-time budget
(Chromium's virtual clock waits for pending network fetches, so the DOM is dumped once the
app has loaded and rendered the notebook), and checks the dumped DOM for the notebook's title
as a rendered heading and the source of its first code cell. The server is always stopped.

It skips, saying why, where no Chromium is installed (``apt-get install chromium`` on Debian;
``.ci/run`` installs it; ``$CHROMIUM`` names another binary). About 15-20 s; at most ~85 s.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOK = "01_optical_flow.ipynb"
BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")
BUDGETS_MS = (30_000, 60_000)  # virtual time; a second, longer try only if the first falls short
DEADLINE_S = 45  # wall clock for the browser; the server gets 25 s to start, 10 s to stop


def browser() -> str | None:
    """``$CHROMIUM``, else the first Chromium found on PATH."""
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named)
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_text(nb: Path) -> tuple[str, str]:
    """The notebook's title (its first heading) and the first line of its first code cell."""
    cells = json.loads(nb.read_text())["cells"]
    source = lambda c: "".join(c["source"])  # noqa: E731
    title = next(line[2:].strip() for c in cells if c["cell_type"] == "markdown"
                 for line in source(c).splitlines() if line.startswith("# "))
    code = next(source(c).splitlines()[0] for c in cells if c["cell_type"] == "code")
    return title, code


def plain(fragment: str, sep: str = " ") -> str:
    """Text of an HTML fragment: tags replaced by ``sep``, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", sep, fragment)).split())


def squeezed(text: str) -> str:
    """``text`` without any white space (the editor splits code into highlighted spans)."""
    return "".join(text.split())


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving notebooks/: yields (base url, token)."""
    pytest.importorskip("jupyterlab")
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ,
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"),  # no user settings or workspaces
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
           "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={NOTEBOOKS}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = (tmp_path / "lab.log").open("wb")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                              cwd=tmp_path, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 25
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}:\n"
                            + (tmp_path / "lab.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("jupyter lab did not answer within 25 s:\n"
                                + (tmp_path / "lab.log").read_text()[-2000:])
                time.sleep(0.3)
        yield base, token
    finally:
        server.send_signal(signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # its own session: the server and kernels
            server.wait(timeout=5)
        log.close()


def dump_dom(chromium: str, url: str, budget_ms: int, profile: Path, timeout: float) -> str:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
           "--window-size=1280,1600", f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
    browser_ = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        out, _ = browser_.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(browser_.pid, signal.SIGKILL)  # the browser and its helper processes
        browser_.communicate()
        return ""
    return out.decode("utf-8", "replace")


@pytest.fixture
def chromium() -> str:
    """The Chromium binary, or a skip that says why (before any server is started)."""
    path = browser()
    if path is None:
        pytest.skip("no Chromium binary (chromium, chromium-headless-shell) on PATH; "
                    "install Debian's 'chromium' package or set $CHROMIUM")
    return path


def test_jupyterlab_renders_the_first_notebook(chromium, lab, tmp_path):
    start = time.monotonic()
    base, token = lab
    title, code = expected_text(NOTEBOOKS / NOTEBOOK)
    url = f"{base}/lab/tree/{NOTEBOOK}?token={token}"
    dom, headings = "", []
    for budget in BUDGETS_MS:
        left = DEADLINE_S - (time.monotonic() - start)
        if left < 10:
            break
        dom = dump_dom(chromium, url, budget, tmp_path / f"chromium-{budget}", left)
        headings = [plain(h) for h in re.findall(r"<h1\b[^>]*>(.*?)</h1>", dom, re.S)]
        if any(title in h for h in headings):
            break
    assert dom, "Chromium returned no DOM"
    assert "jp-LabShell" in dom, "the JupyterLab application did not load"
    assert any(title in h for h in headings), \
        f"no rendered heading {title!r}; headings seen: {headings[:5]}"
    cells = dom.count('class="lm-Widget jp-Cell')
    assert cells >= 3, f"only {cells} notebook cells rendered"
    assert squeezed(code) in squeezed(plain(dom, sep="")), \
        f"the first code cell ({code!r}) is not shown"
