"""Looking back: /at, /diff, /changes and the timeline, over planted events.

A generated tenant evolves every 30 seconds (the noise), and one gate item of
our own is planted into each snapshot with known events: it is enqueued at
snapshot 3, a job fails at 7, its jobs restart at 9 (a gate reset, with the
queue's window halved), the poll at 12 fails, all jobs succeed at 13 and the
item leaves at 14. Each event must show up exactly there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.migrate import upgrade
from recorder.parser import parse_document
from recorder.settings import Settings, SourceSettings
from recorder.simulator import StatusEvolver, generate_status
from recorder.store import get_or_create_source, store_poll
from tests.conftest import postgres_url, reset_postgres
from webui import create_app, diff, timeline, zones

# Snapshot 3 is taken on a 5-minute boundary (10:05:00), so that the
# timeline's bins split the sequence exactly before it.
T0 = datetime(2026, 3, 4, 10, 3, 30, tzinfo=UTC)
STEP = timedelta(seconds=30)
POLLS = 15
FAILED_POLL = 12
CHANGE = "4242,7"
SOURCE = "demo"
ZUUL_URL = "https://zuul.example.org/api/tenant/demo/status"
JOBS = ("planted-lint", "planted-unit", "planted-integration")
# For each job, from which poll on it is in which state: (state, uuid, result).
SCRIPT = {
    "planted-lint": [
        (3, "waiting", None, None),
        (4, "running", "lint-1", None),
        (6, "finished", "lint-1", "SUCCESS"),
        (9, "waiting", None, None),
        (10, "running", "lint-2", None),
        (13, "finished", "lint-2", "SUCCESS"),
    ],
    "planted-unit": [
        (3, "waiting", None, None),
        (4, "running", "unit-1", None),
        (7, "finished", "unit-1", "FAILURE"),
        (9, "running", "unit-2", None),
        (13, "finished", "unit-2", "SUCCESS"),
    ],
    "planted-integration": [
        (3, "waiting", None, None),
        (5, "running", "integration-1", None),
        (9, "running", "integration-2", None),
        (13, "finished", "integration-2", "SUCCESS"),
    ],
}


def at(index: int) -> datetime:
    return T0 + index * STEP


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- the planted sequence ---------------------------------------------------


def planted_job(name: str, index: int) -> dict:
    """The job as the script says it stands at poll ``index``."""
    since, state, uuid, result = max(
        (step for step in SCRIPT[name] if step[0] <= index), key=lambda s: s[0]
    )
    started_at = since_start = None
    if uuid is not None:
        # A build starts 10 s before the poll that first sees it running.
        first_running = min(s[0] for s in SCRIPT[name] if s[2] == uuid)
        started_at = at(first_running) - timedelta(seconds=10)
        since_start = at(index) - started_at
    job = {
        "name": name,
        "voting": True,
        "uuid": uuid,
        "result": result,
        "url": f"https://logs.example.org/{uuid}/" if uuid else None,
        "estimated_time": 600.0,
        "start_time": started_at.timestamp() if started_at else None,
        "end_time": None,
        "elapsed_time": None,
        "remaining_time": None,
    }
    if state == "running":
        job["elapsed_time"] = int(since_start.total_seconds() * 1000)
        job["remaining_time"] = 600_000 - job["elapsed_time"]
    if state == "finished":
        ended = at(since) - timedelta(seconds=5)
        job["end_time"] = ended.timestamp()
        job["elapsed_time"] = int((ended - started_at).total_seconds() * 1000)
        job["remaining_time"] = 0
    return job


def planted_queue(index: int) -> dict | None:
    """The gate queue of the planted item at poll ``index``, if it is there."""
    if not 3 <= index < 14:
        return None
    jobs = [planted_job(name, index) for name in JOBS]
    failing = any(job["result"] == "FAILURE" for job in jobs)
    item = {
        "id": CHANGE,
        "project": "demo/planted",
        "url": "https://review.example.org/4242",
        "ref": "refs/changes/42/4242/7",
        "live": True,
        "active": True,
        "item_ahead": None,
        "items_behind": [],
        "failing_reasons": ["at least one job failed"] if failing else [],
        "enqueue_time": epoch_ms(at(3) - timedelta(seconds=5)),
        "owner": {"name": "Pat Planted"},
        "remaining_time": None,
        "jobs": jobs,
    }
    return {"name": "planted", "window": 10 if index < 9 else 5, "heads": [[item]]}


def planted_body(evolver: StatusEvolver, index: int) -> bytes:
    document = orjson.loads(evolver.body())
    queue = planted_queue(index)
    if queue is not None:
        gate = next(p for p in document["pipelines"] if p["name"] == "gate")
        gate["change_queues"].append(queue)
    return orjson.dumps(document)


def quiet_gate_status() -> dict:
    """A busy generated tenant whose gate is empty, so the planted item is alone."""
    status = generate_status(seed=7, now=T0)
    gate = next(p for p in status["pipelines"] if p["name"] == "gate")
    gate["change_queues"] = []
    return status


@dataclass
class Planted:
    url: str
    ids: dict[int, int]
    client: object

    def get(self, path: str, **kwargs):
        response = self.client.get(path, **kwargs)
        return response, response.get_data(as_text=True)


def record_planted(url: str, source: str = SOURCE) -> dict[int, int]:
    """Store the planted sequence as polls of ``source``; snapshot id per poll."""
    evolver = StatusEvolver(quiet_gate_status(), seed=7, now=T0)
    sessions = make_sessionmaker(make_engine(url, writer=True))
    ids = {}
    for index in range(POLLS):
        with session_scope(sessions) as session:
            source_row = get_or_create_source(session, source, ZUUL_URL)
            if index == FAILED_POLL:
                store_poll(
                    session,
                    source_row,
                    at(index),
                    10_000,
                    None,
                    None,
                    error="connection refused",
                )
            else:
                body = planted_body(evolver, index)
                result = store_poll(session, source_row, at(index), 80, body, 200)
                ids[index] = result.snapshot_id
        evolver.advance(STEP.total_seconds())
    return ids


def make_client(url: str, *names: str):
    sources = tuple(SourceSettings(name=n, url=ZUUL_URL) for n in names or [SOURCE])
    return create_app(Settings(database_url=url, sources=sources)).test_client()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def recorded(request, tmp_path_factory) -> tuple[str, dict[int, int], dict[int, int]]:
    """One database per backend for the module: the planted sequence, twice.

    The pages only read, so every test shares it; ``demo`` is the source of
    the planted events and ``elsewhere`` a second source with the same ones.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('history') / 'history.sqlite'}"
    else:
        found, reason = postgres_url()
        if found is None:
            if os.environ.get("CI"):
                pytest.fail(f"CI must test PostgreSQL: {reason}")
            pytest.skip(reason)
        url = reset_postgres(found)
    upgrade(url)
    return url, record_planted(url), record_planted(url, source="elsewhere")


@pytest.fixture
def planted(recorded) -> Planted:
    """The shared database, and a client of its own (cookies differ per test)."""
    url, ids, _ = recorded
    return Planted(url, ids, make_client(url))


def hrefs(html: str) -> list[str]:
    return [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]*)"', html)]


def section(html: str, anchor: str) -> str:
    """The HTML of one diff section, by its id."""
    match = re.search(
        rf'<section class="part" id="{anchor}">(.*?)</section>', html, re.S
    )
    return match.group(1) if match else ""


def rows_of(html: str) -> list[str]:
    """The body rows of the tables in ``html``."""
    return re.findall(r"<tr[^>]*>(<td.*?)</tr>", html, re.S)


def planted_rows(html: str) -> list[str]:
    return [row for row in rows_of(html) if CHANGE in row]


# --- /diff ------------------------------------------------------------------


def test_the_diff_shows_each_planted_event_in_the_step_where_it_happened(planted):
    ids = planted.ids
    steps = {
        index: planted.get(f"/diff/{ids[index - 1]}/{ids[index]}")[1]
        for index in (3, 4, 7, 9)
    }
    after_gap = planted.get(f"/diff/{ids[11]}/{ids[13]}")[1]
    leaving = planted.get(f"/diff/{ids[13]}/{ids[14]}")[1]

    enqueued = planted_rows(section(steps[3], "enqueued"))
    assert len(enqueued) == 1
    assert "<td>gate</td><td>planted</td>" in enqueued[0]
    assert [r for r in rows_of(section(steps[4], "started")) if CHANGE in r]
    failed = planted_rows(section(steps[7], "finished"))
    assert len(failed) == 1
    assert "planted-unit" in failed[0]
    assert "<b>FAILURE</b>" in failed[0]
    reset = planted_rows(section(steps[9], "resets"))
    assert len(reset) == 1
    assert "gate reset: 3 of 3 jobs restarted" in reset[0]
    assert "<td>gate</td><td>planted</td><td>10 → 5</td>" in section(
        steps[9], "windows"
    )
    assert len(planted_rows(section(after_gap, "finished"))) == 3
    dequeued = planted_rows(section(leaving, "dequeued"))
    assert len(dequeued) == 1
    assert "<b>SUCCESS</b>" in dequeued[0]
    for index in (4, 7, 10):
        quiet = planted.get(f"/diff/{ids[index]}/{ids[index + 1]}")[1]
        assert not planted_rows(section(quiet, "resets"))
        assert not planted_rows(section(quiet, "enqueued"))
        assert not planted_rows(section(quiet, "dequeued"))
    itself = planted.get(f"/diff/{ids[7]}/{ids[7]}")[1]
    assert "the same snapshot on both sides." in itself
    assert "with other snapshots between them" not in itself
    across = planted.get(f"/diff/{ids[3]}/{ids[7]}")[1]
    assert "with other snapshots between them" in across


def test_a_diff_is_filtered_ordered_and_limited_to_one_source(planted, recorded):
    ids, other = planted.ids, recorded[2]

    filtered = planted.get(f"/diff/{ids[6]}/{ids[7]}?q=planted")[1]
    backwards, _ = planted.get(f"/diff/{ids[7]}/{ids[6]}?q=planted")
    mixed, mixed_html = planted.get(f"/diff/{ids[6]}/{other[7]}")

    finished = rows_of(section(filtered, "finished"))
    assert len(finished) == 1
    assert CHANGE in finished[0]
    assert backwards.status_code == 302
    assert backwards.location.endswith(f"/diff/{ids[6]}/{ids[7]}?q=planted")
    assert mixed.status_code == 400
    assert "belong to different sources" in mixed_html


def test_compare_with_takes_a_snapshot_id_or_a_time(planted):
    ids = planted.ids
    by_id, _ = planted.get(f"/diff?b={ids[9]}&with={ids[8]}&source={SOURCE}")
    by_time, _ = planted.get(f"/diff?b={ids[9]}&with={iso(at(4) + STEP / 2)}")
    html = planted.get(f"/snapshots/{ids[9]}")[1]

    assert by_id.location.endswith(f"/diff/{ids[8]}/{ids[9]}?source={SOURCE}")
    assert by_time.location.endswith(f"/diff/{ids[4]}/{ids[9]}")
    assert f"/diff/{ids[8]}/{ids[9]}?source={SOURCE}" in hrefs(html)
    assert 'name="with"' in html


def test_compare_tells_the_difference_of_two_parsed_statuses():
    def status(window: int, *jobs: dict) -> object:
        item = {"id": "1,1", "project": "p", "jobs": list(jobs)}
        queues = [
            {"name": "shared", "window": window, "heads": [[item]]},
            {"name": "twice", "window": window, "heads": []},
            {"name": "twice", "window": window + 1, "heads": []},
        ]
        return parse_document(
            {"pipelines": [{"name": "gate", "change_queues": queues}]}
        )

    waiting = {"name": "j", "uuid": None, "result": None}
    running = {"name": "j", "uuid": "a", "result": None, "elapsed_time": 1000}
    retried = {"name": "j", "uuid": "b", "result": None, "elapsed_time": 1000}

    started = diff.compare(status(4, waiting), status(4, running))
    restarted = diff.compare(status(4, running), status(2, retried))

    assert [event.job for event in started.started] == ["j"]
    assert not started.resets
    assert [reset.label for reset in restarted.resets] == [
        "gate reset: 1 of 1 jobs restarted"
    ]
    assert [(w.queue, w.before, w.after) for w in restarted.windows] == [
        ("shared", 4, 2)
    ]


# --- /changes ---------------------------------------------------------------


def story_rows(html: str, job: str) -> list[str]:
    rows = rows_of(html.split("<tbody>", 1)[1])
    start = next(i for i, row in enumerate(rows) if job in row)
    found = [rows[start]]
    for row in rows[start + 1 :]:
        if re.search(r"<td>planted-", row):
            break
        found.append(row)
    return found


def snapshot_link(snapshot_id: int) -> str:
    return f'href="/snapshots/{snapshot_id}?source={SOURCE}"'


def test_the_change_story_links_each_event_to_the_snapshot_where_it_was_first_seen(
    planted,
):
    ids = planted.ids
    response, html = planted.get(f"/changes/{CHANGE}?source={SOURCE}")

    assert response.status_code == 200
    events = html.split('<ul class="events">', 1)[1].split("</ul>", 1)[0]
    entered, reset, last, gone = re.findall(r"<li[^>]*>(.*?)</li>", events, re.S)[:4]
    assert entered.startswith("Entered")
    assert snapshot_link(ids[3]) in entered
    assert "gate reset: 3 jobs restarted" in reset
    assert snapshot_link(ids[9]) in reset
    assert snapshot_link(ids[13]) in last
    assert gone.startswith("Gone")
    assert snapshot_link(ids[14]) in gone
    assert '<span class="verdict ok">SUCCESS</span>' in html

    first, second = story_rows(html, "planted-unit")
    cells = re.findall(r"<td>(.*?)</td>", first, re.S)
    assert snapshot_link(ids[4]) in cells[4]  # started
    assert snapshot_link(ids[7]) in cells[5]  # ended
    assert "<b>FAILURE</b>" in cells[7]
    assert snapshot_link(ids[9]) in second
    assert "<b>SUCCESS</b>" in second

    lint_first, lint_second = story_rows(html, "planted-lint")
    lint = re.findall(r"<td>(.*?)</td>", lint_second, re.S)
    assert snapshot_link(ids[9]) in lint[2]  # queued again by the reset
    assert lint[3] == "20 s"  # waited from the reset to its start, 10 s before 10
    assert snapshot_link(ids[10]) in lint[4]
    assert snapshot_link(ids[6]) in lint_first

    interrupted, _ = story_rows(html, "planted-integration")
    assert "<b title=" in interrupted
    assert ">replaced</b>" in interrupted


def test_a_pinned_change_story_shows_only_what_was_known_then(planted):
    ids = planted.ids
    latest = planted.get(f"/changes/4242?source={SOURCE}")[1]

    pinned = planted.get(f"/changes/4242?source={SOURCE}&until={ids[8]}")[1]

    assert f"/changes/4242?source={SOURCE}&until={ids[14]}" in hrefs(latest)
    assert '<span class="verdict bad">failing, in progress</span>' in pinned
    first, *later = story_rows(pinned, "planted-unit")
    assert "<b>FAILURE</b>" in first
    assert not later
    assert "gate reset" not in pinned


def test_an_unknown_or_malformed_change_is_a_clear_error(planted):
    unknown, unknown_html = planted.get("/changes/999999")
    malformed, malformed_html = planted.get("/changes/1%3Cscript%3E")

    assert unknown.status_code == 404
    assert "no build of change &#39;999999&#39;" in unknown_html
    assert malformed.status_code == 400
    assert "<script>" not in malformed_html


# --- /at and time navigation --------------------------------------------------


def test_at_shows_the_snapshot_in_force_and_says_when_polls_failed(planted):
    ids = planted.ids
    inside, inside_html = planted.get(f"/at/{iso(at(3) + timedelta(seconds=10))}")
    gap_html = planted.get(f"/at/{iso(at(FAILED_POLL) + timedelta(seconds=5))}")[1]
    before, before_html = planted.get("/at/2026-03-04T09:00:00Z")

    assert inside.status_code == 200
    assert f"snapshot {ids[3]}" in inside_html
    assert f"snapshot {ids[11]}" in gap_html
    assert "No status came in around that time: upstream unreachable 10:09" in gap_html
    assert before.status_code == 404
    assert "No snapshot of demo at 2026-03-04 09:00:00 UTC" in before_html
    assert snapshot_link(ids[0]) in before_html


def test_the_picker_and_the_jumps_lead_to_permanent_utc_links(planted):
    ids = planted.ids
    html = planted.get(f"/snapshots/{ids[3]}")[1]
    picked, _ = planted.get(f"/at?time=2026-03-04T10:05:10&source={SOURCE}")
    local, _ = planted.get("/at?time=2026-03-04T11:05:10&tz=Europe/Berlin")

    assert picked.location.endswith(f"/at/2026-03-04T10:05:10Z?source={SOURCE}")
    assert local.location.endswith("/at/2026-03-04T10:05:10Z?tz=Europe/Berlin")
    assert 'value="2026-03-04T10:05:00"' in html  # the picker starts at the snapshot
    # Nothing was recorded an hour before or after: those jumps are not links.
    assert '<span class="jump">−1 h</span>' in html
    assert '<span class="jump">+1 day</span>' in html


def test_a_bad_time_or_zone_is_a_400_that_says_what_to_write(planted):
    bad_time, bad_time_html = planted.get("/at/yesterday")
    far, far_html = planted.get("/at/0001-01-01T00:00:00Z")
    bad_zone, bad_zone_html = planted.get("/?tz=Mars/Olympus_Mons")
    bad_cookie, _ = planted.get("/", headers={"Cookie": "tz=Mars/Olympus_Mons"})

    assert bad_time.status_code == 400
    assert "is not an ISO 8601 time" in bad_time_html
    assert far.status_code == 400
    assert "is outside the years this tool can show" in far_html
    assert bad_zone.status_code == 400
    assert "unknown time zone &#39;Mars/Olympus_Mons&#39;" in bad_zone_html
    assert bad_cookie.status_code == 200


def test_every_page_says_its_zone_and_a_chosen_zone_is_kept_in_a_cookie(planted):
    ids = planted.ids
    paths = [
        "/",
        f"/snapshots/{ids[3]}",
        f"/at/{iso(at(3))}",
        f"/diff/{ids[2]}/{ids[3]}",
        f"/changes/{CHANGE}",
    ]
    chosen, chosen_html = planted.get(f"/snapshots/{ids[3]}?tz=europe/berlin")
    kept = planted.get(f"/snapshots/{ids[3]}")[1]

    for path in paths:
        html = planted.get(path)[1]
        assert 'name="tz" value="Europe/Berlin"' in html, path
    assert "tz=Europe/Berlin" in chosen.headers["Set-Cookie"]
    assert "2026-03-04 11:05:00 CET" in chosen_html
    assert "2026-03-04 11:05:00 CET" in kept
    assert f"/snapshots/{ids[3]}?source={SOURCE}&tz=Europe/Berlin" in hrefs(kept)
    planted.client.get("/?tz=UTC")
    assert 'name="tz" value="UTC"' in planted.get(paths[1])[1]


def test_parse_time_reads_iso_8601_in_the_zone_given():
    berlin = zones.parse_zone("Europe/Berlin")

    assert zones.parse_time("2026-03-04T10:05:10Z") == datetime(
        2026, 3, 4, 10, 5, 10, tzinfo=UTC
    )
    assert zones.parse_time("2026-03-04 11:05", berlin) == datetime(
        2026, 3, 4, 10, 5, tzinfo=UTC
    )
    assert zones.parse_time("2026-03-04T12:05+02:00").hour == 10


# --- the timeline -----------------------------------------------------------


def columns(html: str) -> dict[str, str]:
    """Each timeline column's title by the snapshot it links to."""
    found = re.findall(
        r'<a href="(/snapshots/\d+)\?source=\w+"><rect class="hit"[^>]*><title>([^<]*)',
        html,
    )
    return {title: href for href, title in found}


def test_the_timeline_draws_the_planted_item_and_the_failed_poll_where_they_were(
    planted,
):
    ids = planted.ids
    html = planted.get(f"/snapshots/{ids[3]}")[1]

    titles = columns(html)
    before = next(t for t in titles if t.startswith("10:00-10:05 "))
    during = next(t for t in titles if t.startswith("10:05-10:10 "))
    assert "gate 0" in before
    assert titles[before] == f"/snapshots/{ids[2]}"
    assert "gate 1" in during
    assert titles[during] == f"/snapshots/{ids[11]}"
    gap = re.search(r'<li class="failed" data-first="([^"]+)"[^>]*>([^<]*)</li>', html)
    assert gap.group(1) == iso(at(FAILED_POLL))
    assert (
        gap.group(2) == "upstream unreachable 10:09, 1 poll failed (connection refused)"
    )
    assert '<line class="marker"' in html


def test_gaps_group_consecutive_failed_polls_and_name_their_span():
    minute = timedelta(minutes=1)
    ten = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
    polls = [(ten + 1 * minute, "stored", None)]
    polls += [(ten + n * minute, "failed", "connection refused") for n in range(2, 16)]
    polls += [
        (ten + 16 * minute, "unchanged", None),
        (ten + 17 * minute, "unparsed", "invalid JSON"),
    ]

    runs = timeline.gaps(polls)

    assert [gap.text for gap in runs] == [
        "upstream unreachable 10:02-10:15, 14 polls failed (connection refused)",
        "upstream sent no Zuul status 10:17, 1 poll not parsed (invalid JSON)",
    ]
    assert runs[0].until == ten + 16 * minute
    assert runs[1].until is None


# --- sources and pages without JavaScript -----------------------------------


def test_every_page_has_a_source_switcher_that_keeps_the_view(planted):
    ids = planted.ids
    client = make_client(planted.url, SOURCE, "elsewhere")

    latest = client.get("/").get_data(as_text=True)
    moment = client.get(f"/at/{iso(at(3))}").get_data(as_text=True)
    story = client.get(f"/changes/{CHANGE}").get_data(as_text=True)
    compared = client.get(f"/diff/{ids[2]}/{ids[3]}").get_data(as_text=True)

    assert "/?source=elsewhere" in hrefs(latest)
    assert f"/at/{iso(at(3))}?source=elsewhere" in hrefs(moment)
    assert f"/changes/{CHANGE}?source=elsewhere" in hrefs(story)
    assert "/?source=elsewhere" in hrefs(compared)


def test_history_pages_need_no_script_and_no_inline_style(planted):
    ids = planted.ids
    for path in (
        f"/snapshots/{ids[3]}",
        f"/at/{iso(at(5))}",
        f"/diff/{ids[8]}/{ids[9]}",
        f"/changes/{CHANGE}",
    ):
        html = planted.get(path)[1]
        assert "<script" not in html, path
        assert not re.search(r"\s(style|on[a-z]+)=", html), path
