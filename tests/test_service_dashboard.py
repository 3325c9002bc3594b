"""The dashboard in real headless Chromium (Debian's package; no browser is downloaded):
connect with the key, follow a running job live, open its report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .service_helpers import KEY, demo_agents, scripted, serve, service_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed"),
]
sync_api = pytest.importorskip("playwright.sync_api")


def test_dashboard_follows_a_running_job_and_shows_its_report(tmp_path: Path) -> None:
    agents = demo_agents(delay=0.4)
    with serve(service_config(tmp_path, max_workers=2), scripted(agents)) as service, \
            service.client() as http, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(service.url + "/")
        page.fill("#key", "wrong-key-123")
        page.click("#connect")
        page.wait_for_selector("#error:has-text('Missing or wrong API key')")

        job_id = http.post("/api/v1/orchestrate", json={"request": "Build a shop"}).json()[
            "job_id"]
        page.fill("#key", KEY)
        page.click("#connect")
        # the list is re-drawn every tick: click through a locator, which finds the row anew
        page.locator(f"tr.job[data-job='{job_id}']").click()
        page.wait_for_selector("#job-status:has-text('running')")
        # tasks and the timeline fill in while the job runs
        page.wait_for_selector("#tasks tr[data-task='TASK-001']")
        page.wait_for_selector("#timeline svg g.bar")
        page.wait_for_function("document.getElementById('events').textContent.includes("
                               "'model_call')")
        page.wait_for_selector("#job-status:has-text('completed')", timeout=90_000)
        page.wait_for_selector("#tasks tr[data-task='TASK-101']")  # the child's tasks, nested
        assert "recursive_success" in page.inner_text("#tasks")
        assert page.inner_text("#job-cost") == "$0.0000"
        assert int(page.inner_text("#job-calls")) > 0
        assert page.locator("#timeline svg g.bar").count() == 3
        page.click("#load-report")
        page.wait_for_selector("#report:has-text('Which worker created which file')")
        assert "services/auth.py" in page.inner_text("#report")
        child = page.locator("tr.job", has_text="↳")
        assert child.count() == 1
        browser.close()
