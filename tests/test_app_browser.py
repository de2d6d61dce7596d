"""The dashboard in a real browser: `streamlit run app.py` in a subprocess, opened in
Debian's headless Chromium through Playwright; waits for the planner, clicks the second
row of the ranked-plan table, and checks that the page switched to that plan.

Needs /usr/bin/chromium (`apt-get install -y chromium`; Playwright's own browser download
does not work here). Set SIMPLAN_SCREENSHOT=1 to also write docs/dashboard.png.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from simplan.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install -y chromium)"),
]
playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    out = open(log, "wb")  # a file, not a pipe nobody reads (a full pipe would stall the server)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start on port {port}: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()


def _wait_idle(page, timeout_s: float = 180) -> None:
    """Until the script run is over (Streamlit shows its status widget while running)."""
    deadline = time.monotonic() + timeout_s
    idle_since = None
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        if running:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 1.5:
            return
        time.sleep(0.25)
    raise AssertionError(f"the app was still running after {timeout_s} s")


def test_select_a_plan_and_screenshot(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox",
                                                                        "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1700})
            page.goto(server)
            page.get_by_text("plans considered").wait_for(timeout=180_000)
            _wait_idle(page)
            assert page.locator('[data-testid="stException"]').count() == 0
            picker = page.get_by_role("combobox", name="Selected plan (or click a row)")
            assert re.match(r"#1 tp", picker.input_value()), picker.input_value()
            step_before = page.locator('[data-testid="stMetric"]').first.inner_text()

            # click the second data row of the ranked-plan table (glide-data-grid draws on a
            # canvas: rows are 35 px under a 35 px header; the first column selects the row)
            table = page.locator('[data-testid="stDataFrame"]').first
            table.scroll_into_view_if_needed()
            box = table.bounding_box()
            page.mouse.click(box["x"] + 18, box["y"] + 35 + 35 + 17)
            deadline = time.monotonic() + 60
            while not picker.input_value().startswith("#2 tp") and time.monotonic() < deadline:
                time.sleep(0.25)
            assert picker.input_value().startswith("#2 tp"), picker.input_value()
            _wait_idle(page)
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.locator('[data-testid="stMetric"]').first.inner_text() != "" and step_before != ""
            page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(timeout=60_000)

            # the downloads: the scenario loads back, the trace is a Chrome trace of that plan
            downloads = {}
            for label in ("Scenario (YAML)", "Chrome trace (JSON)", "megatron config"):
                with page.expect_download(timeout=120_000) as d:
                    page.get_by_role("button", name=label).click()
                path = tmp_path / d.value.suggested_filename
                d.value.save_as(path)
                downloads[label] = path
                _wait_idle(page)
            scenario = load_scenario(downloads["Scenario (YAML)"])
            assert picker.input_value().startswith(f"#2 tp{scenario.plan.tp} pp{scenario.plan.pp} dp{scenario.plan.dp}")
            trace = json.loads(downloads["Chrome trace (JSON)"].read_text())
            stages = {e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "process_name"}
            assert stages == {f"replica 0 stage {i}" for i in range(scenario.plan.pp)}
            assert f"--tensor-model-parallel-size {scenario.plan.tp}" in downloads["megatron config"].read_text()

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("SIMPLAN_SCREENSHOT"):
                (REPO / "docs").mkdir(exist_ok=True)
                page.screenshot(path=str(REPO / "docs" / "dashboard.png"), full_page=False)
        finally:
            browser.close()


def _pick(page, label: str, option: str) -> None:
    """Choose ``option`` in the selectbox labeled ``label`` (a BaseWeb combobox)."""
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()
    _wait_idle(page)


def test_what_if_error_is_plain_text_in_the_browser(server):
    """Several degrees changed in the What-if tab, then a node count they do not divide:
    the error names the widget and shows "tp*pp*cp" as typed (Markdown would italicize it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox",
                                                                        "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1700})
            page.goto(server)
            page.get_by_text("plans considered").wait_for(timeout=180_000)
            _wait_idle(page)
            assert page.get_by_role("heading", level=1, name=re.compile(r"^GPT-3 13B on 32 x a100")).count() == 1
            page.get_by_role("tab", name="What-if").click()
            _wait_idle(page)
            _pick(page, "Tensor parallel (tp)", "8")
            _pick(page, "Pipeline stages (pp)", "4")
            assert page.get_by_role("combobox", name="Data parallel (dp)", exact=True).input_value() == "1"
            assert page.get_by_text("ZeRO stage moved from").count() == 1  # ZeRO needs dp > 1
            nodes = page.get_by_role("spinbutton", name="Nodes (× 8 GPUs)")
            nodes.fill("3")
            nodes.press("Enter")
            _wait_idle(page)
            error = page.locator('[data-testid="stAlertContentError"]')
            assert error.count() == 1
            text = error.inner_text()
            assert text.startswith("Nodes: 3 nodes x 8 GPUs = 24 GPUs"), text
            assert "tp*pp*cp = 8*4*1 = 32" in text, text
            assert error.locator("em").count() == 0
        finally:
            browser.close()
