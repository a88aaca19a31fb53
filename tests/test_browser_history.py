"""The history pages in the distribution's headless Chromium, with and without JS.

The planted sequence of ``test_history`` is served over loopback by the real
application; each test drives one path a reader takes (the timeline, the
picker, the filter, a diff, a change story, the zone) and saves a screenshot
of where it ends under test-artifacts/. Every path is taken twice: once with
JavaScript, once without, since every page must work without it.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.browser import CHROMIUM, CHROMIUM_ARGS, DEADLINE_MS, NEEDS_CHROMIUM
from tests.test_history import CHANGE, SOURCE, make_client, record_planted

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "history"

pytestmark = NEEDS_CHROMIUM


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The planted sequence served by the application on a loopback port."""
    from recorder.migrate import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'zuul-status.sqlite'}"
    upgrade(url)
    ids = record_planted(url)
    app = make_client(url).application
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", ids
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture(params=[True, False], ids=["js", "no-js"])
def page(request, browser):
    context = browser.new_context(
        java_script_enabled=request.param, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(DEADLINE_MS)
    page = context.new_page()
    page.javascript = request.param
    yield page
    context.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    suffix = "js" if page.javascript else "no-js"
    path = ARTIFACTS / f"{name}-{suffix}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_a_click_on_the_timeline_opens_the_snapshot_of_that_moment(site, page):
    root, ids = site
    page.goto(f"{root}/snapshots/{ids[0]}?source={SOURCE}")

    column = page.locator("svg a").filter(
        has=page.locator("title", has_text=re.compile(r"^10:05-10:10 .*gate 1"))
    )
    column.click()

    page.wait_for_url(re.compile(rf"/snapshots/{ids[11]}\?source={SOURCE}$"))
    assert page.locator("h1").inner_text().endswith(f"snapshot {ids[11]}")
    assert (
        page.locator(".gaps li.failed")
        .inner_text()
        .startswith("upstream unreachable 10:09, 1 poll failed")
    )
    screenshot(page, "timeline")


def test_the_picker_goes_to_the_snapshot_in_force_at_the_time_chosen(site, page):
    root, ids = site
    page.goto(f"{root}/snapshots/{ids[13]}?source={SOURCE}")

    page.fill('input[name="time"]', "2026-03-04T10:05:10")
    page.click('form.picker button[type="submit"]')

    page.wait_for_url(re.compile(r"/at/2026-03-04T10:05:10Z\?source=demo$"))
    assert page.locator("h1").inner_text().endswith(f"snapshot {ids[3]}")
    assert "In force at 2026-03-04 10:05:10 UTC" in page.locator(".asked").inner_text()
    screenshot(page, "picker")


def test_the_filter_keeps_only_matching_items_and_survives_navigation(site, page):
    root, ids = site
    page.goto(f"{root}/snapshots/{ids[7]}?source={SOURCE}")

    page.fill('input[name="q"]', "planted")
    page.press('input[name="q"]', "Enter")

    page.wait_for_url(re.compile(r"q=planted"))
    count = page.locator(".filter output").inner_text()
    assert re.match(r"1 of \d+ items match", count)
    assert page.locator(".pipeline h2").all_inner_texts() == ["gate 1 item"]
    page.click('a[rel="next"]')
    page.wait_for_url(re.compile(rf"/snapshots/{ids[8]}\?source=demo&q=planted$"))
    screenshot(page, "filter")


def test_a_diff_opened_from_a_snapshot_shows_the_gate_reset(site, page):
    root, ids = site
    page.goto(f"{root}/snapshots/{ids[9]}?source={SOURCE}")

    page.click("a.compare")

    page.wait_for_url(re.compile(rf"/diff/{ids[8]}/{ids[9]}\?source=demo$"))
    resets = page.locator("#resets tr", has_text=CHANGE)
    assert "gate reset: 3 of 3 jobs restarted" in resets.inner_text()
    assert "10 → 5" in page.locator("#windows").inner_text()
    screenshot(page, "diff")

    page.goto(f"{root}/snapshots/{ids[9]}?source={SOURCE}")
    page.fill('input[name="with"]', str(ids[2]))
    page.click('form.compare-with button[type="submit"]')
    page.wait_for_url(re.compile(rf"/diff/{ids[2]}/{ids[9]}\?source=demo$"))
    assert page.locator("#enqueued tr", has_text=CHANGE).count() == 1


def test_the_story_of_a_change_is_one_click_from_its_item(site, page):
    root, ids = site
    page.goto(f"{root}/snapshots/{ids[9]}?source={SOURCE}&q=planted")

    page.click("a.st")

    page.wait_for_url(re.compile(rf"/changes/{CHANGE}\?source=demo$"))
    assert "gate reset: 3 jobs restarted" in page.locator(".events").inner_text()
    assert page.locator("table.story tbody tr").count() == 6
    screenshot(page, "change")


def test_a_chosen_time_zone_is_shown_and_kept(site, page):
    root, ids = site
    page.goto(f"{root}/snapshots/{ids[3]}?source={SOURCE}")

    page.fill('input[name="tz"]', "Europe/Berlin")
    page.click('form.zone button[type="submit"]')

    page.wait_for_url(re.compile(r"tz=Europe%2FBerlin"))
    assert "2026-03-04 11:05:00 CET" in page.locator(".banner").inner_text()
    page.click('a[rel="next"]')
    page.wait_for_url(re.compile(rf"/snapshots/{ids[4]}\?source=demo$"))
    assert "11:05:30 CET" in page.locator(".banner").inner_text()
    screenshot(page, "zone")


def test_auto_refresh_is_offered_only_with_javascript_and_starts_off(site, page):
    root, _ = site
    page.goto(f"{root}/?source={SOURCE}")

    control = page.locator("label.refresh")

    if page.javascript:
        control.wait_for(state="visible")
        assert not page.locator("#auto-refresh").is_checked()
        page.check("#auto-refresh")
        assert page.evaluate("localStorage.getItem('zuul-status.auto-refresh')") == "on"
        page.uncheck("#auto-refresh")
    else:
        assert control.is_hidden()
    screenshot(page, "latest")
