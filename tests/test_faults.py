"""The recorder against upstreams that break in every way issue 7 lists.

Each fault is played by a real loopback server (``tests/faults.py``) to the
real recorder. A fault must end its poll within the deadline plus a second,
leave a poll row that says what went wrong, spoil nothing stored before, and
not delay the next poll: in-process with ``Recorder.poll``, and for a
representative subset through ``zuul-status record`` and its scheduler.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson
import pytest
from sqlalchemy import select

from recorder.db import make_engine, make_sessionmaker
from recorder.fetch import MAX_RETRY_AFTER_S
from recorder.models import Build, PipelineCount, Poll, Snapshot, Source
from recorder.parser import MAX_NAME_CHARS
from recorder.service import RETRY_AFTER_SLACK_S, Recorder
from recorder.settings import settings_from_mapping
from recorder.store import read_body
from tests.faults import (
    MAX_BYTES,
    Fault,
    FaultyUpstream,
    faults,
    good_body,
    good_document,
    in_turn,
    lateness_s,
    rate_limited,
)
from tests.upstream import send_body, wait_for

DEADLINE_S = 1.0
GOOD = good_body()
FAULTS = faults()
BY_NAME = {fault.name: fault for fault in FAULTS}
# PostgreSQL advisory locks are database-wide, not per schema: a source name
# of its own keeps a concurrent test run from holding this one's lock.
SOURCE = f"faults-{os.getpid()}"
SNAPSHOT_COLUMNS = list(Snapshot.__table__.columns)
BUILD_COLUMNS = list(Build.__table__.columns)
COUNT_COLUMNS = list(PipelineCount.__table__.columns)


@pytest.fixture
def upstream():
    with FaultyUpstream(send_body(GOOD)) as server:
        yield server


@pytest.fixture
def recording(database_url, upstream):
    """A recorder of one source (the upstream), with the sessions to check it."""
    settings = settings_from_mapping(
        {
            "database_url": database_url,
            "sources": [
                {
                    "name": SOURCE,
                    "url": upstream.url,
                    "interval": 60,
                    "deadline": DEADLINE_S,
                    "connect_timeout": DEADLINE_S,
                    "max_bytes": MAX_BYTES,
                }
            ],
        }
    )
    recorder = Recorder(settings)
    try:
        yield recorder, settings.sources[0]
    finally:
        recorder.leadership.release_all()
        recorder.sessions.kw["bind"].dispose()


@dataclass
class Stored:
    """Everything stored about one snapshot, to compare before and after."""

    snapshot: tuple
    body: bytes
    counts: list[tuple]
    builds: list[tuple]


def stored(recorder: Recorder, snapshot_id: int) -> Stored:
    with recorder.sessions() as session:
        snapshot = session.get(Snapshot, snapshot_id)
        return Stored(
            snapshot=tuple(getattr(snapshot, c.key) for c in SNAPSHOT_COLUMNS),
            body=read_body(session, snapshot),
            counts=sorted(
                session.execute(
                    select(*COUNT_COLUMNS).where(
                        PipelineCount.snapshot_id == snapshot_id
                    )
                ).all()
            ),
            builds=sorted(
                session.execute(
                    select(*BUILD_COLUMNS).where(Build.first_snapshot_id == snapshot_id)
                ).all()
            ),
        )


def polls(recorder: Recorder) -> list[Poll]:
    with recorder.sessions() as session:
        return list(session.scalars(select(Poll).order_by(Poll.id)))


def first_snapshot_id(recorder: Recorder) -> int:
    with recorder.sessions() as session:
        return session.scalar(select(Snapshot.id).order_by(Snapshot.id).limit(1))


def timed_poll(recorder: Recorder, source) -> tuple[str, float]:
    start = time.monotonic()
    outcome = recorder.poll(source)
    return outcome, time.monotonic() - start


def assert_the_latest_page_renders(recorder: Recorder) -> None:
    from webui import create_app

    app = create_app(recorder.settings)
    start = time.monotonic()
    page = app.test_client().get("/")
    elapsed_s = time.monotonic() - start
    app.extensions["zuul_status"].sessions.kw["bind"].dispose()
    assert page.status_code == 200
    assert elapsed_s < 10.0
    assert b"Traceback" not in page.data


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
def test_a_fault_ends_in_time_with_its_reason_and_spoils_nothing_stored(
    fault: Fault, upstream, recording
):
    recorder, source = recording
    assert recorder.poll(source) == "stored"
    earlier_id = first_snapshot_id(recorder)
    before = stored(recorder, earlier_id)
    assert before.body == GOOD
    assert before.builds

    with fault.injected(upstream) as url:
        outcome, elapsed_s = timed_poll(recorder, replace(source, url=url))

    poll = polls(recorder)[-1]
    assert elapsed_s < DEADLINE_S + 1.0 + fault.store_allowance_s
    assert poll.duration_ms < (DEADLINE_S + 1.0) * 1000
    assert (outcome, poll.outcome) == (fault.outcome, fault.outcome)
    if fault.reason is None:
        assert poll.error is None
    else:
        assert re.search(fault.reason, poll.error), poll.error
    if fault.outcome == "failed":
        assert poll.snapshot_id is None
    else:
        assert_the_latest_page_renders(recorder)

    after = stored(recorder, earlier_id)
    assert (after.snapshot, after.body, after.counts) == (
        before.snapshot,
        before.body,
        before.counts,
    )
    if fault.outcome == "stored":
        # A new parsed snapshot moves on the builds it shows again, by design;
        # none of the earlier ones may be lost or re-identified.
        identity = [
            (b.id, b.key, b.first_snapshot_id, b.first_seen) for b in after.builds
        ]
        assert identity == [
            (b.id, b.key, b.first_snapshot_id, b.first_seen) for b in before.builds
        ]
    else:
        assert after.builds == before.builds

    requests_before = upstream.requests
    next_outcome, next_elapsed_s = timed_poll(recorder, source)
    if fault.retry_after_s:
        assert next_outcome == "skipped"
        assert upstream.requests == requests_before
    else:
        assert next_outcome in ("stored", "unchanged")
        assert next_elapsed_s < DEADLINE_S + 1.0


def test_a_429_skips_the_source_until_retry_after_has_passed(upstream, recording):
    recorder, source = recording
    upstream.behaviour = in_turn(rate_limited("1"), send_body(GOOD))
    limited_at = time.monotonic()
    assert recorder.poll(source) == "failed"

    assert recorder.poll(source) == "skipped"
    assert (upstream.requests, len(polls(recorder))) == (1, 1)

    outcomes = []
    wait_for(
        lambda: outcomes.append(recorder.poll(source)) or outcomes[-1] != "skipped",
        5,
        "a poll after Retry-After",
    )
    assert outcomes[-1] == "stored"
    assert time.monotonic() - limited_at >= 1.0 - RETRY_AFTER_SLACK_S
    assert upstream.requests == 2


def http_date(seconds_from_now: float) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return format_datetime(moment, usegmt=True)


@pytest.mark.parametrize(
    ("retry_after", "expected_wait_s"),
    [
        pytest.param("120", 120, id="seconds"),
        pytest.param(300.0, 300, id="an HTTP date"),
        pytest.param(-300.0, None, id="an HTTP date in the past"),
        pytest.param("99999999999999999999", MAX_RETRY_AFTER_S, id="huge seconds"),
        pytest.param(10 * 365 * 86400.0, MAX_RETRY_AFTER_S, id="a far date"),
        pytest.param("inf", None, id="inf"),
        pytest.param("nan", None, id="nan"),
        pytest.param("-5", None, id="negative"),
        pytest.param("1e9", None, id="exponent"),
        pytest.param("soon", None, id="words"),
    ],
)
def test_retry_after_is_honoured_within_an_hour_and_nonsense_is_ignored(
    retry_after, expected_wait_s, upstream, recording
):
    recorder, source = recording
    if isinstance(retry_after, float):
        retry_after = http_date(retry_after)
    upstream.behaviour = rate_limited(retry_after)
    assert recorder.poll(source) == "failed"

    wait_s = recorder.not_before.get(source.name, 0) - time.monotonic()
    if expected_wait_s is None:
        assert wait_s <= 0
        assert recorder.poll(source) == "failed"
    else:
        assert expected_wait_s - 5 < wait_s <= expected_wait_s
        assert recorder.poll(source) == "skipped"


def built(recorder: Recorder, *columns) -> list[tuple]:
    with recorder.sessions() as session:
        return session.execute(select(*columns)).all()


def test_absurd_times_are_stored_as_unknown_never_as_wrong_dates(upstream, recording):
    recorder, source = recording
    upstream.behaviour = BY_NAME["negative and huge times"].behaviour
    assert recorder.poll(source) == "stored"

    rows = built(recorder, Build.enqueue_time, Build.start_time, Build.end_time)
    times = [moment for row in rows for moment in row if moment is not None]
    assert all(1990 <= moment.year < 2200 for moment in times)
    durations = [d for (d,) in built(recorder, Build.duration_s) if d is not None]
    assert all(0 <= duration <= 30 * 86400 for duration in durations)


def test_names_with_nul_and_great_length_are_stored_readably(upstream, recording):
    recorder, source = recording
    upstream.behaviour = BY_NAME["unicode and control characters in names"].behaviour
    assert recorder.poll(source) == "stored"

    jobs = {job for (job,) in built(recorder, Build.job)}
    assert "nul\ufffdinside" in jobs
    assert "ünïcødé-jöb-名前-имя-🚦" in jobs
    assert "x" * (MAX_NAME_CHARS - 1) + "\u2026" in jobs
    names = jobs | {name for (name,) in built(recorder, PipelineCount.pipeline)}
    names |= {name for (name,) in built(recorder, Build.project)}
    assert not [name for name in names if "\x00" in name]
    assert max(map(len, names)) == MAX_NAME_CHARS


def test_a_build_that_leaves_one_snapshot_and_comes_back_is_stored(upstream, recording):
    recorder, source = recording
    document = good_document()
    without_first_item = copy.deepcopy(document)
    for change_queue in without_first_item["pipelines"][0]["change_queues"]:
        change_queue["heads"] = change_queue["heads"][1:]
    upstream.behaviour = in_turn(
        send_body(GOOD), send_body(orjson.dumps(without_first_item)), send_body(GOOD)
    )

    assert recorder.poll(source) == "stored"
    good_builds = sorted(built(recorder, Build.id, Build.key))

    assert [recorder.poll(source) for _ in range(2)] == ["stored", "stored"]
    assert sorted(built(recorder, Build.id, Build.key)) == good_builds


# Through the real scheduler: one ``zuul-status record`` process polls one
# source per fault, each upstream answering well, then with its fault, then
# well again. The interval is shorter than the deadline, so a poll that takes
# its whole deadline makes the scheduler skip a tick.
SCHEDULED = (
    "headers never sent",
    "one byte a second",
    "HTTP 503",
    "HTTP 429 with Retry-After",
    "gzip bomb",
    "truncated body",
    "redirect loop",
    "invalid JSON",
)
INTERVAL_S = 1.0
SCHEDULED_DEADLINE_S = 1.5
POLLS_PER_SOURCE = 4


def source_name(fault_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", fault_name).strip("-")


@pytest.fixture(scope="module")
def scheduled_run(tmp_path_factory):
    """Run ``record`` until every source has its polls; return them by source."""
    from recorder.migrate import upgrade

    folder = tmp_path_factory.mktemp("scheduled")
    url = f"sqlite:///{folder / 'zuul-status.sqlite'}"
    upgrade(url)
    upstreams = [
        FaultyUpstream(
            in_turn(send_body(GOOD), BY_NAME[name].behaviour, send_body(GOOD))
        )
        for name in SCHEDULED
    ]
    config = folder / "zuul-status.toml"
    config.write_text(
        f'database_url = "{url}"\n'
        + "".join(
            f'[[sources]]\nname = "{source_name(name)}"\nurl = "{server.url}"\n'
            f"interval = {INTERVAL_S}\ndeadline = {SCHEDULED_DEADLINE_S}\n"
            f"max_bytes = {MAX_BYTES}\n"
            for name, server in zip(SCHEDULED, upstreams, strict=True)
        )
    )
    sessions = make_sessionmaker(make_engine(url))

    def polls_by_source() -> dict[str, list[Poll]]:
        found = {source_name(name): [] for name in SCHEDULED}
        with sessions() as session:
            rows = session.execute(
                select(Source.name, Poll).join(Poll, Poll.source_id == Source.id)
            ).all()
        for name, poll in sorted(rows, key=lambda row: row[1].started_at):
            found[name].append(poll)
        return found

    for server in upstreams:
        server.__enter__()
    command = [sys.executable, "-m", "recorder", "--config", str(config), "record"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        wait_for(
            lambda: all(
                len(found) >= POLLS_PER_SOURCE for found in polls_by_source().values()
            ),
            40,
            f"{POLLS_PER_SOURCE} polls of every source",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=10)
        for server in upstreams:
            server.__exit__(None, None, None)
    assert process.returncode == 0, log.decode()[-3000:]
    return polls_by_source()


@pytest.mark.parametrize("fault_name", SCHEDULED)
def test_the_scheduler_polls_on_time_after_a_fault(fault_name, scheduled_run):
    fault = BY_NAME[fault_name]
    found = scheduled_run[source_name(fault_name)]

    outcomes = [poll.outcome for poll in found]
    assert outcomes[:2] == ["stored", fault.outcome]
    assert set(outcomes[2:]) <= {"stored", "unchanged"}
    assert re.search(fault.reason, found[1].error)
    assert found[1].duration_ms < (SCHEDULED_DEADLINE_S + 1.0) * 1000
    late = lateness_s(
        [(p.started_at, p.duration_ms, p.http_status) for p in found],
        INTERVAL_S,
        fault.retry_after_s,
    )
    assert max(late) < 1.0, late
