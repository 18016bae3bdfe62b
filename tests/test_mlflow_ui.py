"""The MLflow UI in a real browser: from the home page to the finetuning runs' F1.

Starts ``mlflow server`` on 127.0.0.1 over the tiny project's store, then drives headless
Chromium (Debian's ``chromium`` package, through Playwright) as a person would: on the home page
switch to **Model training**, click the finetune experiment, open its **Key metrics** view (which
lmforge saved with the experiment) and find ``best_val_f1`` in the runs table; then expand the
sweep, tick two of its jobs, press Compare, and find the F1 of both runs on the comparison page.
Screenshots of the runs table and the comparison are kept in ``tests/artifacts/`` (git-ignored;
the test prints their paths).

Skips when Chromium or Playwright is missing, unless ``LMFORGE_REQUIRE_BROWSER=1`` (CI), where
it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import stop_server, wait_until_up

pytestmark = [pytest.mark.slow, pytest.mark.ci]

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_browser() -> str:
    """The Chromium executable; else skip (fail under LMFORGE_REQUIRE_BROWSER=1) saying why."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    problem = None if executable else "no Chromium executable on PATH (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "Playwright for Python is not installed (pip install playwright)"
    if problem is None:
        return executable
    if os.environ.get("LMFORGE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{problem}, but LMFORGE_REQUIRE_BROWSER=1 requires the browser test")
    pytest.skip(f"{problem}; set LMFORGE_REQUIRE_BROWSER=1 to fail instead")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(root: Path, port: int, log: Path) -> subprocess.Popen:
    bin_dir = Path(sys.executable).parent
    return subprocess.Popen(
        [
            str(bin_dir / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root}/mlflow.db",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=root,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,  # noqa: SIM115 - child owns it
        start_new_session=True,
    )


def read_metrics_section(page, shot: Path) -> tuple[list[str], list[str]]:
    """The comparison page's Metrics section: one grid of metric names, one of values (a column
    per run). The page renders again when the runs' data arrives (and on its auto-refresh),
    which can detach what was found: look again."""
    from playwright.sync_api import Error

    for attempt in range(5):
        try:
            name = page.get_by_text("best_val_f1", exact=True).first
            name.scroll_into_view_if_needed()
            page.screenshot(path=str(shot))
            section = name.locator("xpath=ancestor::div[contains(@class,'collapse-content-box')][1]")
            grids = section.locator("[role=grid]")
            return grids.nth(0).inner_text().split("\n"), grids.nth(1).inner_text().split("\n")
        except Error:
            if attempt == 4:
                raise
            page.wait_for_timeout(2000)
    raise AssertionError("unreachable")


def test_ui_from_home_page_shows_best_val_f1_and_compares_two_sweep_runs(request, tmp_path: Path) -> None:
    chromium = require_browser()
    root: Path = request.getfixturevalue("swept_project")
    import mlflow
    from playwright.sync_api import sync_playwright

    client = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("basic-finetune")
    children = {
        r.info.run_name: r
        for r in client.search_runs([experiment.experiment_id], "tags.`mlflow.parentRunId` != ''")
    }
    first, second = (next(r for name, r in children.items() if name.startswith(f"#{n} ")) for n in (0, 1))

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "mlflow-server.log"
    server = start_server(root, port, log)
    ARTIFACTS.mkdir(exist_ok=True)
    runs_shot, shot = ARTIFACTS / "mlflow-runs-key-metrics.png", ARTIFACTS / "mlflow-compare.png"
    try:
        wait_until_up(server, f"{base}/health", log, seconds=180)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            # The home page opens on GenAI; lmforge's experiments are model training.
            page.goto(f"{base}/")
            page.get_by_text("Model training", exact=True).first.click()
            page.get_by_role("link", name=experiment.name, exact=True).first.click()
            page.wait_for_url(f"**/experiments/{experiment.experiment_id}/runs**")
            description = page.get_by_text(experiment.tags["mlflow.note.content"]).first
            description.wait_for()
            page.get_by_role("button", name="Views").click()
            page.get_by_text("Key metrics", exact=True).first.click()
            header = page.locator(".ag-header-cell").filter(has_text="best_val_f1").first
            header.wait_for(state="visible")
            page.get_by_role("row").filter(has_text="sweep ").first.wait_for()
            page.screenshot(path=str(runs_shot))
            runs_header = page.locator(".ag-header").inner_text()
            # Sorted by a metric, the table lists the sweep's jobs beside its parent run, best first.
            for run in (first, second):
                row = page.get_by_role("row").filter(has_text=run.info.run_name)
                row.locator("input[type=checkbox].ag-checkbox-input").check()
            page.get_by_role("button", name="Compare").click()
            page.wait_for_url("**/compare-runs**")
            names, values = read_metrics_section(page, shot)
            columns = page.url
            browser.close()
    finally:
        stop_server(server)
    print(f"screenshots: {runs_shot} {shot}")
    assert "best_val_f1" in runs_header.split("\n"), runs_header
    assert runs_shot.stat().st_size > 10_000 and shot.stat().st_size > 10_000
    # Both runs, and best_val_f1's row holds their F1 as the UI rounds it (3 decimals).
    assert first.info.run_id in columns and second.info.run_id in columns
    row = names.index("best_val_f1")
    shown = sorted(float(v) for v in values[2 * row : 2 * row + 2])
    expected = sorted(r.data.metrics["best_val_f1"] for r in (first, second))
    assert shown == pytest.approx(expected, abs=6e-4), (names, values)
