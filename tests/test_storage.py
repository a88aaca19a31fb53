"""Lossless, compact snapshot storage; import, reindex, counts and retention."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from recorder import chain, codec
from recorder.cli import main
from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.models import (
    Build,
    PipelineCount,
    Poll,
    Snapshot,
    build_last_seen,
    build_last_snapshot_id,
)
from recorder.retention import prune
from recorder.settings import RetentionSettings
from recorder.simulator import StatusEvolver, generate_status
from recorder.store import BuildCache, get_or_create_source, read_body, store_body

START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
BUILD_COLUMNS = [c for c in Build.__table__.columns if c.name != "id"]


def evolving_bodies(
    count: int, step_s: float = 30.0, seed: int = 7, start: datetime = START
) -> list[bytes]:
    """Bodies of one simulated tenant, evolving ``step_s`` between each."""
    evolver = StatusEvolver(generate_status(seed=seed, now=start), seed=seed, now=start)
    bodies = []
    for _ in range(count):
        bodies.append(evolver.body())
        evolver.advance(step_s)
    return bodies


def record(url: str, bodies: list[bytes], step_s: float = 30.0) -> None:
    """Store bodies as live recording does: one transaction each, with a cache."""
    sessions = make_sessionmaker(make_engine(url, writer=True))
    cache = BuildCache()
    for index, body in enumerate(bodies):
        with session_scope(sessions) as session:
            source = get_or_create_source(session, "demo", "http://127.0.0.1/")
            store_body(
                session,
                source,
                body,
                START + timedelta(seconds=index * step_s),
                cache=cache,
            )


def builds_table(url: str) -> list[tuple]:
    with make_sessionmaker(make_engine(url))() as session:
        rows = session.execute(select(*BUILD_COLUMNS)).all()
    return sorted(tuple(row) for row in rows)


def counts_table(url: str) -> list[tuple]:
    with make_sessionmaker(make_engine(url))() as session:
        rows = session.execute(select(*PipelineCount.__table__.columns)).all()
    return sorted(tuple(row) for row in rows)


def test_every_snapshot_of_a_generated_sequence_reads_back_byte_identical(database_url):
    bodies = evolving_bodies(130)
    record(database_url, bodies)
    chain.body_cache.bodies.clear()
    with make_sessionmaker(make_engine(database_url))() as session:
        snapshots = session.scalars(select(Snapshot).order_by(Snapshot.taken_at)).all()
        assert len(snapshots) == len(set(bodies))
        fulls = [i for i, s in enumerate(snapshots) if s.encoding == codec.FULL]
        assert fulls == list(range(0, len(snapshots), chain.CHAIN_LENGTH))
        for index, snapshot in enumerate(snapshots):
            assert read_body(session, snapshot) == bodies[snapshot_index(snapshot)]
            if snapshot.encoding == codec.DELTA:
                assert snapshot.base_id == snapshots[index - 1].id


def snapshot_index(snapshot: Snapshot) -> int:
    return int((snapshot.taken_at - START).total_seconds() // 30)


def test_the_stored_history_is_far_smaller_than_the_raw_bodies(sqlite_url):
    bodies = evolving_bodies(120)
    record(sqlite_url, bodies)
    with make_sessionmaker(make_engine(sqlite_url))() as session:
        stored = session.scalar(select(func.sum(func.length(Snapshot.body))))
    assert stored * 20 < sum(map(len, bodies))


def test_reindex_rebuilds_exactly_the_rows_live_recording_made(database_url, tmp_path):
    record(database_url, evolving_bodies(60))
    live, live_counts = builds_table(database_url), counts_table(database_url)
    assert live
    assert live_counts
    config = tmp_path / "zuul-status.toml"
    config.write_text(f'database_url = "{database_url}"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "reindex"])
    assert result.exit_code == 0, result.output
    assert "reindexed 60 snapshots of 1 source" in result.output
    assert builds_table(database_url) == live
    assert counts_table(database_url) == live_counts


def test_pipeline_counts_equal_the_counts_of_the_raw_body(sqlite_url):
    bodies = evolving_bodies(5)
    record(sqlite_url, bodies)
    document = json.loads(bodies[-1])
    expected = {}
    for pipeline in document["pipelines"]:
        items = [i for q in pipeline["change_queues"] for h in q["heads"] for i in h]
        jobs = [j for i in items for j in i["jobs"]]
        if items:
            expected[pipeline["name"]] = (
                len(items),
                sum(
                    1
                    for j in jobs
                    if j.get("result") is None
                    and (
                        j.get("elapsed_time") is not None
                        or j.get("start_time") is not None
                    )
                ),
                sum(
                    1
                    for j in jobs
                    if j.get("result") is None
                    and j.get("elapsed_time") is None
                    and j.get("start_time") is None
                ),
                sum(1 for j in jobs if j.get("result") is not None),
            )
    with make_sessionmaker(make_engine(sqlite_url))() as session:
        latest = session.scalar(select(func.max(Snapshot.id)))
        rows = session.scalars(
            select(PipelineCount).where(PipelineCount.snapshot_id == latest)
        ).all()
    assert {
        r.pipeline: (r.items, r.running, r.waiting, r.finished) for r in rows
    } == expected


def test_import_stores_a_body_at_a_time_once_and_summarises(sqlite_url, tmp_path):
    bodies = evolving_bodies(3)
    paths = []
    for index, body in enumerate(bodies):
        path = tmp_path / f"status-{index}.json"
        path.write_bytes(body)
        moment = (START + timedelta(minutes=index)).timestamp()
        os.utime(path, (moment, moment))
        paths.append(str(path))
    broken = tmp_path / "broken.json"
    broken.write_bytes(b"<html>Bad gateway</html>")
    config = tmp_path / "zuul-status.toml"
    config.write_text(f'database_url = "{sqlite_url}"\n')
    command = ["--config", str(config), "import", "--source", "demo"]

    first = CliRunner().invoke(main, [*command, *paths])
    again = CliRunner().invoke(main, [*command, *paths, str(broken)])

    assert first.exit_code == 0, first.output
    assert "3 stored, 0 duplicates, 0 kept unparsed, 0 failed" in first.output
    assert again.exit_code == 1
    assert "0 stored, 3 duplicates, 1 kept unparsed, 0 failed" in again.output
    assert "broken.json: not Zuul status" in again.output
    with make_sessionmaker(make_engine(sqlite_url))() as session:
        taken = session.scalars(
            select(Snapshot.taken_at)
            .where(Snapshot.parse_error.is_(None))
            .order_by(Snapshot.taken_at)
        ).all()
    assert taken == [START + timedelta(minutes=i) for i in range(3)]


def test_prune_thins_old_history_keeps_bases_and_never_touches_builds(database_url):
    bodies = evolving_bodies(6 * 24 * 2, step_s=600)  # two days, every 10 min
    record(database_url, bodies, step_s=600)
    builds_before = builds_table(database_url)
    now = START + timedelta(days=2)
    policy = RetentionSettings(keep_all_days=0.5, hourly_days=1, daily_days=0)
    sessions = make_sessionmaker(make_engine(database_url, writer=True))
    with session_scope(sessions) as session:
        report = prune(session, policy, now=now)
    with sessions() as session:
        kept = session.scalars(select(Snapshot).order_by(Snapshot.taken_at)).all()
        for snapshot in kept:
            assert (
                read_body(session, snapshot)
                == bodies[int((snapshot.taken_at - START).total_seconds() // 600)]
            )
        polls = session.scalar(select(func.count()).select_from(Poll))
    times = [START + timedelta(seconds=i * 600) for i in range(len(bodies))]
    expected, buckets = set(), set()
    for moment in times:
        age = now - moment
        bucket = (
            None
            if age <= timedelta(days=0.5)
            else moment.strftime("%d %H")
            if age <= timedelta(days=1)
            else moment.strftime("%d")
        )
        if bucket is None or bucket not in buckets:
            expected.add(moment)
            buckets.add(bucket)
    assert [s.taken_at for s in kept] == sorted(expected)
    assert report.removed == len(bodies) - len(kept)
    assert report.bytes_freed > 0
    assert report.reencoded > 0
    assert max_chain_length(kept) <= chain.CHAIN_LENGTH
    assert builds_table(database_url) == builds_before
    assert polls == 0


def max_chain_length(snapshots) -> int:
    """The most bodies any kept snapshot needs decoded, itself included."""
    by_id = {s.id: s for s in snapshots}
    longest = 0
    for snapshot in snapshots:
        length, current = 1, snapshot
        while current.base_id is not None:
            current = by_id[current.base_id]
            length += 1
        longest = max(longest, length)
    return longest


@pytest.mark.parametrize("delta", [False, True])
def test_a_corrupt_stored_body_is_detected_not_returned(sqlite_url, delta):
    bodies = evolving_bodies(2)
    record(sqlite_url, bodies)
    sessions = make_sessionmaker(make_engine(sqlite_url, writer=True))
    with session_scope(sessions) as session:
        snapshot = session.scalars(select(Snapshot).order_by(Snapshot.id)).all()[delta]
        snapshot.sha256 = "0" * 64
    with sessions() as session:
        snapshot = session.scalars(select(Snapshot).order_by(Snapshot.id)).all()[delta]
        with pytest.raises(ValueError, match="does not match its sha256"):
            read_body(session, snapshot)


def uuids_shown(body: bytes) -> set[str]:
    """Build uuids in the live items of a body, read straight from the JSON."""
    shown = set()
    for pipeline in json.loads(body)["pipelines"]:
        for queue in pipeline["change_queues"]:
            for head in queue["heads"]:
                for item in head:
                    if item.get("live", True) is not False:
                        shown.update(j["uuid"] for j in item["jobs"] if j.get("uuid"))
    return shown


def test_a_build_is_written_as_visible_until_a_snapshot_lacks_it(database_url):
    """While the latest snapshot shows a build, its last sighting is left NULL
    (nothing to write per snapshot) and read as that snapshot; once a snapshot
    lacks it, the last snapshot that showed it is written."""
    bodies = evolving_bodies(40)
    record(database_url, bodies)
    shown = [uuids_shown(body) for body in bodies]
    with make_sessionmaker(make_engine(database_url))() as session:
        ids = session.scalars(select(Snapshot.id).order_by(Snapshot.taken_at)).all()
        rows = session.execute(
            select(
                Build.uuid,
                Build.last_snapshot_id,
                Build.last_seen,
                build_last_snapshot_id(),
                build_last_seen(),
            ).where(Build.uuid.is_not(None))
        ).all()
    assert len(ids) == len(bodies)
    assert rows
    for uuid, raw_id, raw_seen, last_id, last_seen in rows:
        last = max(i for i, uuids in enumerate(shown) if uuid in uuids)
        assert (last_id, last_seen) == (ids[last], START + timedelta(seconds=last * 30))
        if last == len(bodies) - 1:
            assert (raw_id, raw_seen) == (None, None)
        else:
            assert (raw_id, raw_seen) == (last_id, last_seen)


def test_prune_keeps_the_latest_parsed_snapshot_that_visible_builds_read(database_url):
    """Bodies that did not parse come last: the parsed one before them is what
    the visible builds' last sighting reads, so retention keeps it."""
    bodies = evolving_bodies(4, step_s=600)
    record(database_url, [*bodies, b"<html>maintenance</html>"], step_s=600)
    sessions = make_sessionmaker(make_engine(database_url, writer=True))
    # Every snapshot is in one hourly bucket: the policy alone keeps the first
    # and the latest (unparsed) one.
    policy = RetentionSettings(keep_all_days=0, hourly_days=1, daily_days=0)
    with session_scope(sessions) as session:
        prune(session, policy, now=START + timedelta(hours=2))
    with sessions() as session:
        kept = session.scalars(select(Snapshot.taken_at).order_by(Snapshot.id)).all()
        seen = session.scalars(
            select(build_last_seen()).where(Build.last_snapshot_id.is_(None))
        ).all()
    last_parsed = START + timedelta(seconds=3 * 600)
    assert kept == [START, last_parsed, START + timedelta(seconds=4 * 600)]
    assert seen
    assert set(seen) == {last_parsed}


def test_a_status_that_goes_back_in_time_is_stored_without_a_second_row(
    database_url, sqlite_url
):
    """Several schedulers behind one URL can answer with an older status: a
    job waiting again after it got its uuid, then running again. Recording
    goes on, and each build keeps one row."""
    bodies = evolving_bodies(16)
    stale = [0, 1, 2, 1, 2, 3, 4, 3, 4, 5, 7, 6, 7, 8, 9, 8, 10, 9, 11, 12, 13, 14, 15]
    record(database_url, [bodies[index] for index in stale])
    record(sqlite_url, bodies)

    with make_sessionmaker(make_engine(database_url))() as session:
        uuids = session.scalars(select(Build.uuid).where(Build.uuid.is_not(None)))
        uuids = sorted(uuids)
        waiting = session.scalar(
            select(func.count()).select_from(Build).where(Build.uuid.is_(None))
        )
    with make_sessionmaker(make_engine(sqlite_url))() as session:
        waiting_in_order = session.scalar(
            select(func.count()).select_from(Build).where(Build.uuid.is_(None))
        )
    shown = set().union(*(uuids_shown(body) for body in bodies))
    assert uuids == sorted(shown)
    assert waiting == waiting_in_order
