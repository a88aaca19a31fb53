"""The job pages in the distribution's headless Chromium: the chart and its tables.

The planned history of ``test_jobs`` is served over loopback by the real
application. With JavaScript, the chart must draw exactly one point per run
that has a duration; without it, the same figures must be readable in the
tables. Screenshots go to test-artifacts/jobs/.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.browser import CHROMIUM, CHROMIUM_ARGS, DEADLINE_MS, NEEDS_CHROMIUM
from tests.test_jobs import (
    RARE_RUNS,
    expected_rows,
    insert_builds,
    insert_runs,
    is_failure,
    make_client,
    plan_history,
    record,
)

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "jobs"
# What the page's chart has drawn: per dataset, the points with a position.
DRAWN_POINTS = """() => {
  const chart = Chart.getChart(document.getElementById("durations-chart"));
  return chart.data.datasets.map((dataset, index) => ({
    label: dataset.label,
    type: dataset.type,
    drawn: chart.getDatasetMeta(index).data.filter(
      (point) => Number.isFinite(point.x) && Number.isFinite(point.y) && !point.skip
    ).length,
  }));
}"""

pytestmark = NEEDS_CHROMIUM


@pytest.fixture(scope="module")
def history():
    return plan_history()


@pytest.fixture(scope="module")
def site(tmp_path_factory, history):
    """The planned history served by the application on a loopback port."""
    from recorder.migrate import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'zuul-status.sqlite'}"
    upgrade(url)
    record(url, history)
    insert_builds(url, "busy-job", [60.0 + (i * 7919) % 3000 for i in range(6_000)])
    insert_runs(url, "rare", RARE_RUNS, snapshot=False)
    server = make_server("127.0.0.1", 0, make_client(url).application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
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


def open_page(browser, javascript: bool):
    context = browser.new_context(
        java_script_enabled=javascript, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(DEADLINE_MS)
    page = context.new_page()
    page.problems = []
    page.on("console", lambda message: complain(page, message))
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    return page


def complain(page, message) -> None:
    """Note console errors, but not the favicon the site does not have."""
    if message.type == "error" and not message.location.get("url", "").endswith(
        "/favicon.ico"
    ):
        page.problems.append(message.text)


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_chart_draws_one_point_per_run_with_a_duration(site, browser, history):
    page = open_page(browser, javascript=True)
    page.goto(f"{site}/jobs/tempest-full?range=week")

    page.locator("#job-charts").wait_for(state="visible")
    page.wait_for_function("() => Chart.getChart('durations-chart') !== undefined")
    drawn = {entry["label"]: entry["drawn"] for entry in page.evaluate(DRAWN_POINTS)}

    timed = [b for b in history.of_job("tempest-full") if b.duration_s is not None]
    assert drawn["success"] == sum(b.attempt.result == "SUCCESS" for b in timed) == 7
    assert drawn["failure"] == sum(is_failure(b.attempt.result) for b in timed) == 3
    assert drawn["other results"] == 0
    # The runs span a day and a half: one median, p90 and p95 per hour that
    # had a timed run.
    hours = {b.end.replace(minute=0, second=0, microsecond=0) for b in timed}
    lines = [drawn[f"{name} per hour"] for name in ("median", "p90", "p95")]
    assert lines == [len(hours)] * 3
    assert page.problems == []  # no script error, no CSP refusal
    screenshot(page, "tempest-full-js")
    page.context.close()


def test_a_downsampled_chart_draws_exactly_the_points_the_page_sent(site, browser):
    page = open_page(browser, javascript=True)
    page.goto(f"{site}/jobs/busy-job?range=all")
    sent = json.loads(page.locator("#job-chart-data").text_content())
    assert sent["sampled"] is True

    page.wait_for_function("() => Chart.getChart('durations-chart') !== undefined")
    drawn = {entry["label"]: entry["drawn"] for entry in page.evaluate(DRAWN_POINTS)}

    assert drawn["success"] == len(sent["points"]["success"])
    assert drawn["failure"] == len(sent["points"]["failure"])
    runs_chart = page.evaluate(
        "() => Chart.getChart('runs-chart').getDatasetMeta(0).data.length"
    )
    assert runs_chart == len(sent["periods"])
    assert page.problems == []
    screenshot(page, "busy-job-js")
    page.context.close()


def test_without_javascript_the_tables_carry_the_figures(site, browser, history):
    page = open_page(browser, javascript=False)
    page.goto(f"{site}/jobs?range=week")
    screenshot(page, "jobs-no-js")

    page.get_by_role("link", name="tempest-full", exact=True).click()
    page.wait_for_url(re.compile(r"/jobs/tempest-full\?range=week$"))

    assert page.locator("#job-charts").is_hidden()
    runs = page.locator(".job-runs tbody tr")
    assert runs.count() == len(history.of_job("tempest-full"))
    assert runs.first.locator("b").inner_text() == "running"
    # Newest hour first, only hours with runs, each with its finished runs
    # beside the failed ones.
    periods = [
        row.split("\t")
        for row in page.locator(".job-periods tbody tr").all_inner_texts()
    ]
    runs_of_job = [
        (b.end or b.last_seen, b.attempt.result) for b in history.of_job("tempest-full")
    ]
    expected = [
        [f"{datetime.fromisoformat(start):%Y-%m-%d %H:%M} UTC", *counts]
        for start, *counts in expected_rows("hour", runs_of_job)
    ]
    assert [cells[:5] for cells in periods] == expected
    assert all(cells[1] != "0" for cells in periods)
    summary = page.locator(".job-summary").inner_text()
    assert "30.0 %" in summary
    screenshot(page, "tempest-full-no-js")
    page.context.close()


RUNS_CHART = """() => {
  const chart = Chart.getChart("runs-chart");
  const x = chart.scales.x;
  const sent = JSON.parse(document.getElementById("job-chart-data").textContent);
  const tooltip = chart.options.plugins.tooltip.callbacks;
  return {
    bars: chart.getDatasetMeta(0).data.map((bar, index) => ({
      left: bar.x - bar.width / 2,
      right: bar.x + bar.width / 2,
      from: x.getPixelForValue(sent.periods[index].t),
      to: x.getPixelForValue(sent.periods[index].end),
    })),
    runs: chart.data.datasets[0].data.map((point) => point.y),
    segments: chart.getDatasetMeta(1).dataset.segments.length,
    title: tooltip.title([{ dataIndex: 0 }]),
    rate: tooltip.label({ dataIndex: 0, datasetIndex: 1 }),
  };
}"""


def test_the_runs_chart_puts_each_period_with_runs_where_it_falls_in_time(
    site, browser
):
    page = open_page(browser, javascript=True)
    page.goto(f"{site}/jobs/rare?range=all")
    sent = json.loads(page.locator("#job-chart-data").text_content())
    page.wait_for_function("() => Chart.getChart('runs-chart') !== undefined")

    chart = page.evaluate(RUNS_CHART)

    # Runs in two quarters of 2015 and one of 2026: three bars, not 45.
    assert sent["period"] == "quarter"
    assert chart["runs"] == [entry["runs"] for entry in sent["periods"]] == [3, 1, 3]
    for bar in chart["bars"]:
        assert bar["from"] - 0.5 <= bar["left"] < bar["right"] <= bar["to"] + 0.5
    # The years without runs are a gap on the time axis, not squeezed out.
    first, second, last = chart["bars"]
    assert last["from"] - second["to"] > 20 * (second["to"] - second["from"])
    # Nor does the failure rate line run across the gaps.
    assert chart["segments"] == 3
    assert chart["title"] == "quarter from 2015-04-01 UTC"
    assert chart["rate"] == "failure rate: 50.0 % (1 failed of 2 finished)"
    assert page.problems == []
    screenshot(page, "rare-job-js")
    page.context.close()
