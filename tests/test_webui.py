"""The web UI, served by Flask's test client from a real SQLite file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from markupsafe import escape
from sqlalchemy import update

from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.models import Base, Snapshot
from recorder.settings import Settings, SourceSettings
from recorder.store import get_or_create_source, store_body, store_poll
from tests.conftest import capture_params
from webui import create_app

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TAKEN_AT = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
ZUUL_URL = "https://zuul.example.org/api/tenant/openstack/status"


# --- building databases and status bodies ---------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'zuul-status.sqlite'}"
    engine = make_engine(url, writer=True)
    Base.metadata.create_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def writer(sqlite_url: str):
    engine = make_engine(sqlite_url, writer=True)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def client(sqlite_url: str):
    settings = Settings(
        database_url=sqlite_url,
        sources=(SourceSettings(name="openstack", url=ZUUL_URL),),
    )
    return create_app(settings).test_client()


def store(
    writer, body: bytes, taken_at: datetime = TAKEN_AT, source: str = "openstack"
) -> int:
    """Store one body as a snapshot of ``source``; return the snapshot id."""
    with session_scope(writer) as session:
        source_row = get_or_create_source(session, source, f"https://{source}.test/")
        result = store_body(session, source_row, body, taken_at)
        return result.snapshot_id


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def job(name: str, **fields) -> dict:
    return {"name": name, "voting": True, "result": None, "url": None} | fields


def item(change: str, project: str, jobs: list[dict], **fields) -> dict:
    number = change.split(",")[0]
    return {
        "id": change,
        "project": project,
        "url": f"https://review.example.org/{number}",
        "owner": {"name": "Ann Example"},
        "live": True,
        "enqueue_time": epoch_ms(TAKEN_AT - timedelta(minutes=5)),
        "jobs": jobs,
    } | fields


def pipeline(name: str, *items: dict, description: str = "") -> dict:
    queue = {"name": f"{name}-queue", "window": 0, "heads": [[i] for i in items]}
    return {"name": name, "description": description, "change_queues": [queue]}


def status_body(*pipelines: dict) -> bytes:
    return json.dumps({"zuul_version": "2.5.2", "pipelines": list(pipelines)}).encode()


def small_body(job_name: str = "tox-py311") -> bytes:
    return status_body(
        pipeline("check", item("1001,1", "openstack/nova", [job(job_name)]))
    )


def job_names(node: object) -> set[str]:
    """Every job name in a decoded status document, found without the parser."""
    names: set[str] = set()
    if isinstance(node, dict):
        jobs = node.get("jobs")
        if isinstance(jobs, list):
            names.update(
                j["name"] for j in jobs if isinstance(j, dict) and j.get("name")
            )
        for value in node.values():
            names |= job_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= job_names(value)
    return names


def hrefs(html: str) -> list[str]:
    return re.findall(r'href="([^"]*)"', html)


# --- real captures ----------------------------------------------------------


@pytest.mark.parametrize("capture", capture_params())
def test_every_job_of_a_real_capture_appears_on_the_latest_and_snapshot_pages(
    capture: Path, writer, client
):
    body = capture.read_bytes()
    snapshot_id = store(writer, body)
    expected = {str(escape(name)) for name in job_names(json.loads(body))}

    for url in ("/", f"/snapshots/{snapshot_id}"):
        response = client.get(url)
        assert response.status_code == 200
        html = response.get_data(as_text=True)
        assert not [name for name in expected if name not in html], url


# --- snapshot pages ---------------------------------------------------------


def test_previous_and_next_links_follow_the_source_and_keep_the_filter(writer, client):
    first = store(writer, small_body("a"), TAKEN_AT)
    store(writer, small_body("other"), TAKEN_AT + timedelta(seconds=30), "elsewhere")
    middle = store(writer, small_body("b"), TAKEN_AT + timedelta(minutes=1))
    last = store(writer, small_body("c"), TAKEN_AT + timedelta(minutes=2))

    html = client.get(f"/snapshots/{middle}?q=nova").get_data(as_text=True)

    links = hrefs(html)
    assert f"/snapshots/{first}?source=openstack&amp;q=nova" in links
    assert f"/snapshots/{last}?source=openstack&amp;q=nova" in links
    first_html = client.get(f"/snapshots/{first}").get_data(as_text=True)
    assert 'rel="prev"' not in first_html
    assert f"/snapshots/{middle}?source=openstack" in hrefs(first_html)
    assert 'rel="next"' not in client.get(f"/snapshots/{last}").get_data(as_text=True)


def test_the_latest_view_shows_the_newest_parsed_snapshot_of_the_default_source(
    writer, client
):
    store(writer, small_body("old-job"), TAKEN_AT)
    store(writer, small_body("new-job"), TAKEN_AT + timedelta(minutes=1))
    newest = store(writer, b"<html>proxy error</html>", TAKEN_AT + timedelta(minutes=2))

    html = client.get("/").get_data(as_text=True)

    assert "new-job" in html
    assert "old-job" not in html
    assert f"/snapshots/{newest}?source=openstack" in hrefs(html)
    assert "could not be parsed" in html


def test_the_filter_hides_items_that_do_not_match_and_counts_the_matches(
    writer, client
):
    body = status_body(
        pipeline(
            "check",
            item("1001,1", "openstack/nova", [job("nova-tox")]),
            item("1002,3", "openstack/swift", [job("swift-tox")]),
            item("1003,2", "openstack/neutron", [job("tempest-NOVA-full")]),
        )
    )
    snapshot_id = store(writer, body)

    html = client.get(f"/snapshots/{snapshot_id}?q=Nova").get_data(as_text=True)

    assert "nova-tox" in html
    assert "tempest-NOVA-full" in html
    assert "swift-tox" not in html
    assert "2 of 3 items match" in html
    assert 'value="Nova"' in html
    by_change = client.get("/?q=1002,3").get_data(as_text=True)
    assert "swift-tox" in by_change
    assert "nova-tox" not in by_change


def test_items_that_are_not_live_are_listed_and_counted_apart(writer, client):
    body = status_body(
        pipeline(
            "gate",
            item("2001,1", "openstack/nova", [job("nova-tox")]),
            item("2002,1", "openstack/nova", [], live=False),
            item("2003,1", "openstack/swift", [], live=False),
        ),
        pipeline("check", item("2004,1", "openstack/swift", [job("swift-tox")])),
    )
    snapshot_id = store(writer, body)

    html = client.get(f"/snapshots/{snapshot_id}").get_data(as_text=True)

    assert "<h2>gate <small>1 item and 2 not live</small></h2>" in html
    assert "<h2>check <small>1 item</small></h2>" in html
    assert "2 items and 2 not live;" in html
    assert html.count('<span class="tag">not live</span>') == 2
    # The timeline counts every item listed, live or not.
    assert "gate: at most 3 items" in html


def test_snapshots_at_the_ends_of_the_calendar_still_render(writer, client):
    first = store(writer, small_body("oldest"), datetime(1, 1, 1, tzinfo=UTC))
    last = store(writer, small_body("newest"), datetime.max.replace(tzinfo=UTC))

    # Zones behind and ahead of UTC would take these times past the calendar.
    for zone in ("UTC", "America/New_York", "Pacific/Kiritimati"):
        for url in ("/", f"/snapshots/{first}", f"/snapshots/{last}", "/at/2024-01-01"):
            response = client.get(f"{url}?tz={zone}")
            assert response.status_code == 200, (url, zone)
    oldest = client.get(f"/snapshots/{first}?tz=America/New_York").get_data(
        as_text=True
    )
    assert "oldest" in oldest
    assert "0001-01-01 00:00:00 UTC" in oldest
    assert "newest" in client.get("/").get_data(as_text=True)


def test_item_age_is_counted_from_the_snapshot_time_not_the_readers_clock(
    writer, client
):
    enqueued = epoch_ms(TAKEN_AT - timedelta(hours=1, minutes=2, seconds=3))
    body = status_body(
        pipeline("gate", item("1001,1", "p", [job("j")], enqueue_time=enqueued))
    )
    snapshot_id = store(writer, body)

    html = client.get(f"/snapshots/{snapshot_id}").get_data(as_text=True)

    assert '<span class="age" title="in the queue">1 h 2 min</span>' in html
    assert "2024-05-06 07:08:09 UTC" in html


def test_job_times_that_are_not_known_say_unknown_and_never_zero(writer, client):
    jobs = [
        job("finished-untimed", result="SUCCESS"),
        job("finished-timed", result="FAILURE", elapsed_time=125_000),
        job("running", elapsed_time=45_000, remaining_time=0, estimated_time=30),
    ]
    store(writer, status_body(pipeline("check", item("1001,1", "p", jobs))))

    html = client.get("/").get_data(as_text=True)

    assert "<b>SUCCESS</b><span>unknown</span>" in html
    assert "<b>FAILURE</b><span>2 min</span>" in html
    assert "elapsed 45 s, remaining unknown, est. 30 s" in html
    assert ">0<" not in html


def test_urls_that_are_not_http_are_shown_as_text_never_as_links(writer, client):
    jobs = [
        job("evil-job", url="javascript:alert(1)", report_url="data:text/html,hi"),
        job("relative-job", url="stream/abc?logfile=console.log"),
    ]
    change = item("1001,1", "p", jobs, url="javascript:alert(2)")
    store(writer, status_body(pipeline("check", change)))

    html = client.get("/").get_data(as_text=True)

    assert not [h for h in hrefs(html) if h.startswith(("javascript:", "data:"))]
    assert "<span>evil-job</span>" in html
    assert '<span class="ch">1001,1</span>' in html
    assert "https://zuul.example.org/t/openstack/stream/abc?logfile=console.log" in (
        hrefs(html)
    )


def test_html_in_upstream_values_is_escaped(writer, client):
    evil = "<script>alert('x')</script>"
    change = item("1001,1", evil, [job(evil)], owner={"name": evil})
    store(writer, status_body(pipeline(evil, change, description=evil)))

    html = client.get("/").get_data(as_text=True)

    assert "<script>alert" not in html
    assert str(escape(evil)) in html


def test_a_snapshot_that_could_not_be_parsed_shows_its_error_and_its_neighbours(
    writer, client
):
    before = store(writer, small_body("a"), TAKEN_AT)
    broken = store(writer, b'{"no": "pipelines"}', TAKEN_AT + timedelta(minutes=1))
    after = store(writer, small_body("b"), TAKEN_AT + timedelta(minutes=2))

    response = client.get(f"/snapshots/{broken}")

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "could not be parsed" in html
    assert "no &#39;pipelines&#39; list" in html
    assert f"/snapshots/{before}?source=openstack" in hrefs(html)
    assert f"/snapshots/{after}?source=openstack" in hrefs(html)


def test_pages_need_no_inline_script_or_style_and_load_nothing_from_elsewhere(
    writer, client
):
    store(writer, small_body())

    response = client.get("/")

    html = response.get_data(as_text=True)
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert re.findall(r"<script\b[^>]*>", html) == [
        '<script src="/static/app.js" defer>'
    ]
    assert "<style" not in html
    assert not re.search(r"\s(style|on[a-z]+)=", html)
    resources = re.findall(r'<(?:link|script)\b[^>]*\b(?:href|src)="([^"]*)"', html)
    assert resources
    assert all(resource.startswith("/static/") for resource in resources)


def test_the_auto_refresh_checkbox_is_only_on_the_latest_view(writer, client):
    snapshot_id = store(writer, small_body())

    latest = client.get("/").get_data(as_text=True)
    past = client.get(f"/snapshots/{snapshot_id}").get_data(as_text=True)

    assert 'id="auto-refresh"' in latest
    assert 'id="auto-refresh"' not in past
    assert "app.js" not in past
    assert client.get("/static/app.js").status_code == 200


# --- errors -----------------------------------------------------------------


def test_an_unknown_snapshot_or_source_is_a_404_with_a_specific_message(writer, client):
    snapshot_id = store(writer, small_body())

    missing = client.get("/snapshots/999")
    wrong_source = client.get(f"/snapshots/{snapshot_id}?source=nowhere")
    unknown_source = client.get("/?source=nowhere")

    assert missing.status_code == 404
    assert "no snapshot 999" in missing.get_data(as_text=True)
    assert missing.mimetype == "text/html"
    assert wrong_source.status_code == 404
    assert unknown_source.status_code == 404
    assert "no source named &#39;nowhere&#39;" in unknown_source.get_data(as_text=True)


def test_a_source_without_snapshots_says_how_its_last_poll_went(writer, client):
    polled_at = datetime(2024, 5, 6, 7, 0, 0, tzinfo=UTC)
    with session_scope(writer) as session:
        failing = get_or_create_source(session, "failing", "https://failing.test/")
        get_or_create_source(session, "silent", "https://silent.test/")
        for minutes, reason in ((0, "timed out"), (1, "connection refused")):
            store_poll(
                session,
                failing,
                polled_at + timedelta(minutes=minutes),
                5,
                None,
                error=reason,
            )

    failing_page = client.get("/?source=failing")
    silent_page = client.get("/?source=silent")

    assert failing_page.status_code == 404
    assert (
        "the last poll, at 2024-05-06 07:01:00 UTC, failed: connection refused"
        in failing_page.get_data(as_text=True)
    )
    assert silent_page.status_code == 404
    assert "it has not been polled" in silent_page.get_data(as_text=True)


def test_errors_under_api_are_json(writer, client):
    store(writer, small_body())

    missing = client.get("/api/snapshots/999/raw")
    no_source = client.get("/api/snapshots?source=nowhere")
    bad_limit = client.get("/api/snapshots?limit=lots")

    assert missing.status_code == 404
    assert missing.get_json() == {
        "error": {"status": 404, "message": "no snapshot 999"}
    }
    assert no_source.status_code == 404
    assert no_source.get_json()["error"]["message"] == "no source named 'nowhere'"
    assert bad_limit.status_code == 400
    assert "limit" in bad_limit.get_json()["error"]["message"]


def test_an_empty_database_answers_404_not_500(client):
    response = client.get("/")

    assert response.status_code == 404
    assert "no source has any snapshot yet" in response.get_data(as_text=True)


def test_a_broken_snapshot_body_gives_a_500_page_without_a_traceback(writer, client):
    snapshot_id = store(writer, small_body())
    with session_scope(writer) as session:
        session.execute(
            update(Snapshot)
            .where(Snapshot.id == snapshot_id)
            .values(body=b"junk", sha256="0" * 64)
        )

    response = client.get(f"/snapshots/{snapshot_id}")

    html = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Traceback" not in html
    assert "recorder/" not in html


# --- JSON endpoints ---------------------------------------------------------


def test_raw_returns_the_body_byte_for_byte_as_json(writer, client):
    body = b'{ "pipelines" : [],\n  "zuul_version": "caf\xc3\xa9" }  \n'
    snapshot_id = store(writer, body)

    response = client.get(f"/api/snapshots/{snapshot_id}/raw")

    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.data == body


def test_api_snapshots_lists_newest_first_with_limit_and_offset(writer, client):
    ids = [
        store(writer, small_body(f"job-{n}"), TAKEN_AT + timedelta(minutes=n))
        for n in range(3)
    ]

    everything = client.get("/api/snapshots").get_json()
    page = client.get("/api/snapshots?limit=1&offset=1&source=openstack").get_json()

    assert [entry["id"] for entry in everything] == ids[::-1]
    assert [entry["id"] for entry in page] == [ids[1]]
    assert page[0]["taken_at"] == "2024-05-06T07:09:09Z"
    assert page[0]["source"] == "openstack"


def test_healthz_reports_the_age_and_last_poll_of_each_source(writer, client):
    with session_scope(writer) as session:
        source = get_or_create_source(session, "openstack", ZUUL_URL)
        store_poll(session, source, TAKEN_AT, 120, small_body())
        store_poll(session, source, TAKEN_AT + timedelta(minutes=1), 90, None)

    response = client.get("/healthz")

    health = response.get_json()
    assert response.status_code == 200
    assert health["ok"] is True
    entry = health["sources"]["openstack"]
    assert entry["latest_snapshot_at"] == "2024-05-06T07:08:09Z"
    assert entry["age_s"] > 0
    assert entry["last_poll_outcome"] == "failed"


def test_healthz_is_503_when_the_database_cannot_be_read(tmp_path: Path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'no-tables.sqlite'}")

    response = create_app(settings).test_client().get("/healthz")

    assert response.status_code == 503
    assert response.get_json()["ok"] is False


# --- boundaries -------------------------------------------------------------


def test_importing_the_web_package_does_not_import_requests():
    code = (
        "import sys, webui, webui.views, webui.queries, webui.render; "
        "print('requests' in sys.modules)"
    )
    env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT)}

    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=PROJECT_ROOT,
    )

    assert result.stdout.strip() == "False"
