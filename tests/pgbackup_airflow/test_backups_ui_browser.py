"""The Backups page in a real browser (Debian's headless Chromium, driven by Playwright).

Against a real ``airflow standalone`` with the plugin (the API test's environment): log in,
open Backups from Airflow's navigation, see the verified backup with its row counts, filter,
open its detail, press "Restore this" and land on pg_restore_manual's trigger form with this
backup preselected. Screenshots go to docs/screenshots/ (light and dark), to be looked at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from test_backups_ui_api import USERS, BackupsUi, backups_ui_env

pytestmark = [pytest.mark.integration, pytest.mark.airflow_e2e]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No network beyond the page under test, nothing downloaded, no GPU on a headless CI box.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1440, "height": 900}


@pytest.fixture(scope="module")
def backups_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackupsUi]:
    with backups_ui_env(tmp_path_factory.mktemp("backups_ui_browser")) as ui:
        yield ui


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (devtools/system_packages.py)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def log_in(page: Any, url: str, user: str) -> None:
    page.set_default_timeout(60_000)  # a loaded 2-core CI box renders Airflow's bundle slowly
    page.goto(f"{url}/", wait_until="networkidle")
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(USERS[user])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Backups").wait_for()


def shoot(target: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    target.screenshot(path=str(path))
    return path


def test_log_in_browse_filter_detail_and_restore(backups_ui: BackupsUi, browser: Any) -> None:
    made = backups_ui.backup
    context = browser.new_context(viewport=VIEWPORT, color_scheme="light", reduced_motion="reduce")
    page = context.new_page()
    log_in(page, backups_ui.airflow.url, "admin")

    page.get_by_role("link", name="Backups").click()
    page.wait_for_url("**/plugin/backups")
    frame = page.frame_locator("iframe")
    card = frame.get_by_test_id("card-projectx")
    card.wait_for(timeout=30_000)
    assert "within RPO" in card.get_by_test_id("tier-projectx-daily").inner_text()
    assert "passed" in card.inner_text()
    frame.get_by_test_id("backup-row").first.wait_for()
    shoot(page, "backups-overview-light")

    # Filter: this target, verified only -> exactly the real backup, with its rows.
    frame.locator("#f-target").select_option("projectx")
    frame.locator("#f-state").select_option("verified")
    rows = frame.get_by_test_id("backup-row")
    rows.first.wait_for()
    expect(frame.locator("#total")).to_have_text("1 backup")
    assert rows.count() == 1
    total_rows = sum(made.source["row_counts"].values())
    assert f"{total_rows:,}" in rows.first.inner_text()

    rows.first.click()
    counts = frame.get_by_test_id("row-counts")
    counts.wait_for()
    for table, count in made.source["row_counts"].items():
        assert counts.get_by_role("row", name=f"{table} {count:,}").count() == 1, table
    shoot(page, "backups-detail-light")

    frame.get_by_role("button", name="Restore this").click()
    prefill = frame.get_by_test_id("restore-prefill")
    prefill.wait_for(timeout=30_000)
    assert made.backup_id in prefill.inner_text()
    form = frame.locator("#restoreForm")
    assert form.get_by_label("Which backup").input_value() == "exact_id"
    assert form.get_by_label("Backup id").input_value() == made.backup_id
    assert form.get_by_label("Target").input_value() == "projectx"
    assert form.get_by_label("Restore from").input_value() == "s3"
    assert form.get_by_label("Restore into").input_value() == "new_database"
    shoot(page, "backups-restore-form-light")

    # Trigger goes through Airflow's own API with the user's session: a queued run of the DAG
    # (paused here, so nothing restores), its conf exactly the form's.
    form.get_by_role("button", name="Trigger").click()
    triggered = form.get_by_text("Triggered")
    triggered.wait_for()
    run_id = triggered.get_by_role("link").inner_text()
    run = backups_ui.json(f"/api/v2/dags/pg_restore_manual/dagRuns/{run_id}")
    assert run["conf"]["backup_id"] == made.backup_id and run["conf"]["backup"] == "exact_id"
    context.close()


def test_dark_mode_and_reports(backups_ui: BackupsUi, browser: Any) -> None:
    context = browser.new_context(viewport=VIEWPORT, color_scheme="dark", reduced_motion="reduce")
    page = context.new_page()
    log_in(page, backups_ui.airflow.url, "viewer")
    page.get_by_role("link", name="Backups").click()
    frame = page.frame_locator("iframe")
    frame.get_by_test_id("card-projectx").wait_for(timeout=30_000)
    frame.get_by_test_id("backup-row").first.wait_for()
    background = frame.locator("body").evaluate("b => getComputedStyle(b).backgroundColor")
    assert background not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"), background
    shoot(page, "backups-overview-dark")
    # A viewer sees the detail but no restore button.
    frame.get_by_test_id("backup-row").first.click()
    frame.get_by_text("Restoring needs trigger access").wait_for()
    assert frame.get_by_role("button", name="Restore this").count() == 0
    frame.get_by_role("button", name="Close").first.click()
    frame.get_by_role("tab", name="Monthly reports").click()
    report = frame.frame_locator("iframe.report")
    # The sandboxed report loads after its frame exists: wait for its text, not just its body.
    expect(report.locator("body")).to_contain_text("analytics", timeout=30_000)
    page.wait_for_timeout(1500)  # the sandboxed report paints in its own renderer process
    shoot(page, "backups-report-dark")
    context.close()
