"""The reader's JupyterLab, in a real browser: JupyterLab headless on localhost, Debian's
Chromium driven by Playwright, notebook 01 (a copy with small parameters) run top to
bottom through the Run menu, then saved. Checks: no cell errors, the figures render as
images, the saved notebook holds the outputs, and nothing was requested from the internet.

Skipped (saying why) where Chromium or Playwright is missing: `make browser-deps`."""
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from qnnpipeline import paths
from support import mnist_mirror

sys.path.insert(0, str(paths.root() / "book"))
import browser  # noqa: E402  (book/browser.py: system Chromium, internet blocked)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NAME = "01_binarization"
SMALL = {"hidden": 16, "depth": 1, "n_train": 300, "n_val": 100, "n_test": 100, "epochs": 1,
         "n_seeds": 1, "mc_points": 21, "mc_draws": 100, "threads": 1}


def require_browser():
    if not browser.chromium_path():
        pytest.skip("no chromium on PATH: `make browser-deps` (Debian's chromium, needs root)")
    pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[book]'")


def small_copy(folder: Path) -> Path:
    """notebooks/NAME.ipynb with SMALL appended to its parameter cell, as a reader would edit it."""
    nb = json.loads((paths.notebooks() / f"{NAME}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["source"] = "".join(cell["source"]).rstrip("\n") + "\n# small run for the browser test\n" + \
        "".join(f"{key} = {value!r}\n" for key, value in SMALL.items())
    path = folder / f"{NAME}.ipynb"
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab on 127.0.0.1 with a random port and token, serving tmp_path/work."""
    require_browser()
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    port, token = free_port(), secrets.token_hex(16)
    # every cell in the page (JupyterLab 4 renders only the visible ones by default), the
    # notebook's kernel started without asking, and no prompt about news from the internet
    settings = home / "settings" / "@jupyterlab"
    for extension, name, values in (("notebook-extension", "tracker",
                                     {"windowingMode": "none", "autoStartDefaultKernel": True}),
                                    ("apputils-extension", "notification", {"fetchNews": "false"})):
        (settings / extension).mkdir(parents=True, exist_ok=True)
        (settings / extension / f"{name}.jupyterlab-settings").write_text(json.dumps(values))
    env = dict(os.environ, HOME=str(home), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTERLAB_WORKSPACES_DIR=str(home / "ws"),
               QNN_PROJECT_DIR=str(paths.root()), QNN_RESULTS_DIR=str(tmp_path / "results"),
               QNN_DATA_DIR=str(tmp_path / "data"), QNN_DATA_MIRROR=str(mnist_mirror()))
    env.pop(paths.PIPELINE_RUN, None)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly"] + (["--allow-root"] if os.geteuid() == 0 else [])
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "jupyterlab.log").read_text()[-3000:]
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        yield url, token, work
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_notebook_runs_in_jupyterlab_in_a_real_browser(jupyterlab, tmp_path):
    url, token, work = jupyterlab
    notebook = small_copy(work)
    with browser.offline_page(viewport=(1400, 1000)) as (page, blocked, failed):
        page.set_default_timeout(60_000)
        page.goto(f"{url}/lab/tree/{notebook.name}?token={token}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        select = page.get_by_role("button", name="Select", exact=True)
        if select.is_visible():  # kernel dialog of JupyterLab versions that still ask
            select.click()
        # the status bar says "<kernel> | Idle" once the kernel is up (run-all before is lost)
        page.get_by_text(re.compile(r"\| Idle$")).wait_for(timeout=90_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        n_code = sum(cell["cell_type"] == "code" for cell in json.loads(notebook.read_text())["cells"])
        page.screenshot(path=str(tmp_path / "started.png"))
        # done when every code cell shows an execution count: "[12]:", not "[ ]:" or "[*]:"
        try:
            page.wait_for_function(
                """n => { const p = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
                          return p.length === n && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }""",
                arg=n_code, timeout=150_000)
        finally:
            page.screenshot(path=str(tmp_path / "ran.png"))
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error'], "
                              ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, errors.first.inner_text()[:3000]
        images = page.locator(".jp-RenderedImage img")
        assert images.count() >= 3  # notebook 01 draws three figures
        for i in range(images.count()):
            images.nth(i).scroll_into_view_if_needed()
            assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 100"), f"image {i} broken"
        images.nth(images.count() - 1).screenshot(path=str(tmp_path / "figure.png"))
        page.locator(".jp-Notebook").first.click()  # focus, as a reader's click would
        page.keyboard.press("Control+s")
        page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')", timeout=30_000)
        for _ in range(60):  # the server has written the file
            if all(c.get("execution_count") for c in json.loads(notebook.read_text())["cells"]
                   if c["cell_type"] == "code"):
                break
            time.sleep(0.5)
        assert not blocked, f"requests to the internet: {blocked[:5]}"
        assert not failed, f"failed local requests: {failed[:5]}"

    saved = json.loads(notebook.read_text())
    code = [cell for cell in saved["cells"] if cell["cell_type"] == "code"]
    assert len(code) == n_code and all(cell["execution_count"] for cell in code)
    outputs = [output for cell in code for output in cell["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
    assert "Interactive run" not in json.dumps(outputs)  # QNN_RESULTS_DIR set: no scratch notice
    metrics = json.loads((tmp_path / "results" / "metrics" / f"{NAME}.json").read_text())
    assert metrics["epochs"] == 1 and metrics["seeds"] == 1
    if os.environ.get("QNN_KEEP_SCREENSHOTS"):
        shutil.copy(tmp_path / "figure.png", os.environ["QNN_KEEP_SCREENSHOTS"])
