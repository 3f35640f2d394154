"""The MLflow UI in a real headless browser, over the store of a real (parallel) sweep.

Needs Debian's ``chromium`` (``make browser-deps``, which ``make test`` runs) and Python Playwright,
driven with ``executable_path`` — nothing is downloaded. The UI is started with
``losslab.ops.ui.ui_command`` on a free loopback port, in its own process group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from losslab.ops.ui import ui_command
from sweep_fixture import EXPERIMENT, LOSSES, SEEDS, quick_sweep  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_NAME_CELL = '[col-id="attributes.`Run Name`"]'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_ui(quick_sweep, tmp_path) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` serving the sweep's store; stopped with its whole process group."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    log = (tmp_path / "ui.log").open("w")
    server = subprocess.Popen(ui_command("127.0.0.1", port, quick_sweep.uri), env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "MLflow UI did not answer /health in 120 s"
                time.sleep(0.3)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def api(base: str, path: str, body: dict | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.mark.slow
def test_mlflow_ui_lists_every_loss_and_shows_the_report(mlflow_ui, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is missing: run `make browser-deps` (make test does it first)")
    from playwright.sync_api import sync_playwright

    experiment_id = api(mlflow_ui, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
                        )["experiment"]["experiment_id"]
    query = {"experiment_ids": [experiment_id], "max_results": 100}
    runs = api(mlflow_ui, "/api/2.0/mlflow/runs/search", query)["runs"]
    parent = next(r for r in runs if {"key": "sweep_role", "value": "parent"} in r["data"]["tags"])
    children = sorted(f"{loss}-s{seed}" for loss in LOSSES for seed in SEEDS)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{mlflow_ui}/#/experiments/{experiment_id}/runs")
            names = page.locator(RUN_NAME_CELL)
            parent_cell = names.filter(has_text=parent["info"]["run_name"]).first
            parent_cell.wait_for()
            parent_cell.locator("button").first.click()  # expand the children nested under the parent
            for child in children:
                names.filter(has_text=child).first.wait_for()
            listed = {line.strip() for text in names.all_inner_texts() for line in text.splitlines()}
            page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)

            page.goto(f"{mlflow_ui}/#/experiments/{experiment_id}/runs/{parent['info']['run_id']}/artifacts")
            page.get_by_text("report", exact=True).first.click()
            page.get_by_text("report.md", exact=True).first.click()
            page.get_by_text("Loss comparison").first.wait_for()
            page.get_by_text("kl == ce here").first.wait_for()
            page.screenshot(path=str(tmp_path / "report.png"))
        finally:
            browser.close()

    assert set(children) <= listed and parent["info"]["run_name"] in listed
    for loss in LOSSES:
        assert any(name.startswith(f"{loss}-s") for name in listed), loss
    assert (tmp_path / "runs.png").stat().st_size > 10_000 and (tmp_path / "report.png").stat().st_size > 10_000
