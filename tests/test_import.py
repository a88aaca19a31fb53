"""Importing saved bodies: in any order the same history, and times that make sense.

A body older than the source's newest sighting is fitted into the history
where its time falls; the result must be what importing every body in time
order gives: the same snapshots and spans, the same bodies byte for byte, the
same derived build and count rows.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from recorder import chain
from recorder.bulk import import_files
from recorder.cli import main
from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.models import Build, PipelineCount, Poll, Snapshot, Source
from recorder.settings import Settings
from recorder.store import BuildCache, get_or_create_source, read_body, store_poll
from tests.conftest import FIXTURES
from tests.test_storage import evolving_bodies

DAY = datetime(2026, 11, 2, tzinfo=UTC)
CAPTURE_A = FIXTURES / "zuul3.19.0-2020-07-softwarefactory.json"
CAPTURE_B = FIXTURES / "zuul1-2013-wikimedia-status-basic-demo-sample.json"
# Build columns that do not depend on row ids or on which source holds them.
BUILD_COLUMNS = [
    column
    for column in Build.__table__.columns
    if column.name not in ("id", "source_id", "first_snapshot_id", "last_snapshot_id")
]
COUNT_COLUMNS = [
    column
    for column in PipelineCount.__table__.columns
    if column.name not in ("snapshot_id", "source_id")
]


def at(hour: float) -> datetime:
    return DAY + timedelta(hours=hour)


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def simulated_bodies(count: int, step_s: float = 600.0, seed: int = 3) -> list[bytes]:
    """Distinct bodies of one evolving tenant, ``step_s`` apart."""
    bodies = evolving_bodies(count, step_s, seed, start=DAY)
    assert len(set(bodies)) == count
    return bodies


def import_one(url: str, source: str, body: bytes, when: datetime, tmp_path: Path):
    """Import ``body`` taken at ``when`` as its own import, through the library."""
    path = tmp_path / f"{sha(body)[:12]}.json"
    path.write_bytes(body)
    return import_files(Settings(database_url=url), source, [path], when)


def history(url: str, source: str) -> list[tuple]:
    """(taken_at, last_taken_at, sha256) of each snapshot, in time order."""
    with make_sessionmaker(make_engine(url))() as session:
        rows = session.execute(
            select(Snapshot.taken_at, Snapshot.last_taken_at, Snapshot.sha256)
            .join(Source, Source.id == Snapshot.source_id)
            .where(Source.name == source)
            .order_by(Snapshot.taken_at, Snapshot.id)
        ).all()
    return [tuple(row) for row in rows]


def bodies_read_back(url: str, source: str) -> list[bytes]:
    chain.body_cache.bodies.clear()  # decode from the database, not the cache
    with make_sessionmaker(make_engine(url))() as session:
        snapshots = session.scalars(
            select(Snapshot)
            .join(Source, Source.id == Snapshot.source_id)
            .where(Source.name == source)
            .order_by(Snapshot.taken_at, Snapshot.id)
        ).all()
        return [read_body(session, snapshot) for snapshot in snapshots]


def in_force(url: str, source: str, moment: datetime) -> bytes:
    """The body /at/<moment> shows: the latest snapshot taken at or before it."""
    chain.body_cache.bodies.clear()
    with make_sessionmaker(make_engine(url))() as session:
        snapshot = session.scalar(
            select(Snapshot)
            .join(Source, Source.id == Snapshot.source_id)
            .where(Source.name == source, Snapshot.taken_at <= moment)
            .order_by(Snapshot.taken_at.desc(), Snapshot.id.desc())
            .limit(1)
        )
        return read_body(session, snapshot)


def derived_rows(url: str, source: str) -> tuple[list, list]:
    """The source's build rows and count rows, without ids."""
    with make_sessionmaker(make_engine(url))() as session:
        source_id = session.scalar(select(Source.id).where(Source.name == source))
        builds = session.execute(
            select(*BUILD_COLUMNS).where(Build.source_id == source_id)
        ).all()
        counts = session.execute(
            select(*COUNT_COLUMNS).where(PipelineCount.source_id == source_id)
        ).all()
    return sorted(map(tuple, builds)), sorted(map(tuple, counts))


def write_config(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "zuul-status.toml"
    config.write_text(f'database_url = "{url}"\n')
    return config


def cli(config: Path, *args: str):
    return CliRunner().invoke(main, ["--config", str(config), *args])


def two_tenants() -> tuple[bytes, bytes]:
    """Bodies of two unrelated tenants: either may follow the other.

    (Not two bodies of one tenant: going back from a later body to an earlier
    one un-starts builds, which no real history does.)
    """
    return simulated_bodies(1, seed=3)[0], simulated_bodies(1, seed=4)[0]


def body_pair(kind: str) -> tuple[bytes, bytes]:
    if kind == "simulator":
        return two_tenants()
    if not FIXTURES.is_dir():
        pytest.skip(f"{FIXTURES} is absent")
    return CAPTURE_A.read_bytes(), CAPTURE_B.read_bytes()


@pytest.mark.parametrize("kind", ["simulator", "captures"])
def test_out_of_order_imports_give_the_history_of_in_order_ones(
    database_url, tmp_path, kind
):
    body_a, body_b = body_pair(kind)
    config = write_config(tmp_path, database_url)
    file_a, file_b = tmp_path / "a.json", tmp_path / "b.json"
    file_a.write_bytes(body_a)
    file_b.write_bytes(body_b)
    steps = {
        "ordered": [("10", file_a), ("11", file_b), ("12", file_a)],
        "late": [("10", file_a), ("12", file_a), ("11", file_b)],
    }
    outputs = {}
    for source, imports in steps.items():
        for hour, path in imports:
            when = f"2026-11-02T{hour}:00:00"
            result = cli(
                config, "import", "--source", source, "--taken-at", when, str(path)
            )
            assert result.exit_code == 0, result.output
            outputs[source, hour] = result.output

    assert "0 stored, 1 duplicates" in outputs["late", "12"]
    assert "1 stored, 0 duplicates" in outputs["late", "11"]
    assert (
        "1 file was older than the newest snapshot; "
        "rebuilt the derived rows of source late (3 snapshots)"
    ) in outputs["late", "11"]
    assert "older than" not in outputs["ordered", "12"]
    expected = [
        (at(10), at(10), sha(body_a)),
        (at(11), at(11), sha(body_b)),
        (at(12), at(12), sha(body_a)),
    ]
    for source in steps:
        assert history(database_url, source) == expected
        assert bodies_read_back(database_url, source) == [body_a, body_b, body_a]
        assert in_force(database_url, source, at(12.5)) == body_a
        assert in_force(database_url, source, at(11.5)) == body_b
    assert derived_rows(database_url, "late") == derived_rows(database_url, "ordered")


def test_every_order_of_three_imports_gives_one_history(database_url, tmp_path):
    body_a, body_b = two_tenants()
    sightings = [(at(10), body_a), (at(11), body_b), (at(12), body_a)]
    expected = [(when, when, sha(body)) for when, body in sightings]
    orders = list(itertools.permutations(sightings))
    for number, order in enumerate(orders):
        for when, body in order:
            import_one(database_url, f"order{number}", body, when, tmp_path)
    reference = derived_rows(database_url, "order0")  # order0 is in time order
    assert reference[0]
    assert reference[1]
    for number in range(len(orders)):
        assert history(database_url, f"order{number}") == expected
        assert derived_rows(database_url, f"order{number}") == reference


def test_shuffled_imports_extend_split_and_start_snapshots_as_in_order(
    database_url, tmp_path
):
    """Each order extends spans, starts snapshots earlier, adds ones before
    others or splits one (the first order below); the result is always the
    history of the in-order import.

    The body that comes back is seen once each time: an import keeps no
    sighting inside a snapshot's span, so a split can only cut a span at its
    ends and the polls it holds.
    """
    first, third = simulated_bodies(2)
    second = simulated_bodies(1, seed=4)[0]
    sightings = [
        (at(0), first),
        (at(1), second),
        (at(1.5), second),
        (at(2), first),
        (at(3), third),
        (at(3.25), third),
    ]
    expected = [
        (at(0), at(0), sha(first)),
        (at(1), at(1.5), sha(second)),
        (at(2), at(2), sha(first)),
        (at(3), at(3.25), sha(third)),
    ]
    for when, body in sightings:
        import_one(database_url, "ordered", body, when, tmp_path)
    assert history(database_url, "ordered") == expected
    reference = derived_rows(database_url, "ordered")
    shuffle = random.Random(11)  # noqa: S311 - a repeatable order, not a secret
    orders = [[sightings[i] for i in (0, 3, 2, 1, 5, 4)]]
    orders += [shuffle.sample(sightings, len(sightings)) for _ in range(5)]
    for number, order in enumerate(orders):
        source = f"shuffled{number}"
        for when, body in order:
            summary = import_one(database_url, source, body, when, tmp_path)
            assert not summary.failures
        assert history(database_url, source) == expected, order
        assert bodies_read_back(database_url, source) == [first, second, first, third]
        assert derived_rows(database_url, source) == reference


def record_polls(url: str, source: str, polls: list[tuple[datetime, bytes | None]]):
    """Store polls as live recording does, one transaction each."""
    sessions = make_sessionmaker(make_engine(url, writer=True))
    cache = BuildCache()
    for started_at, body in polls:
        with session_scope(sessions) as session:
            row = get_or_create_source(session, source, "http://127.0.0.1:9/")
            store_poll(session, row, started_at, 5, body, cache=cache)


def poll_snapshots(url: str, source: str) -> list[tuple]:
    """(poll time, taken_at of the snapshot it points to or None), by time."""
    with make_sessionmaker(make_engine(url))() as session:
        rows = session.execute(
            select(Poll.started_at, Snapshot.taken_at)
            .join(Source, Source.id == Poll.source_id)
            .outerjoin(Snapshot, Snapshot.id == Poll.snapshot_id)
            .where(Source.name == source)
            .order_by(Poll.started_at)
        ).all()
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("unparsed", [False, True], ids=["parsed", "unparsed"])
def test_a_body_imported_inside_a_recorded_span_splits_it(
    database_url, tmp_path, unparsed
):
    live, other = simulated_bodies(2)
    if unparsed:
        other = b"<html>502 Bad Gateway</html>"
    times = [at(8 + minutes / 60) for minutes in range(0, 50, 10)]
    middle = at(8 + 25 / 60)  # between the polls at 8:20 and 8:30
    polls = [(when, live) for when in times] + [(at(8 + 22 / 60), None)]
    record_polls(database_url, "backfilled", sorted(polls, key=lambda p: p[0]))
    in_order = sorted([*polls, (middle, other)], key=lambda poll: poll[0])
    record_polls(database_url, "recorded", in_order)

    summary = import_one(database_url, "backfilled", other, middle, tmp_path)

    assert summary.failures == []
    assert (summary.stored, len(summary.unparsed)) == ((0, 1) if unparsed else (1, 0))
    assert summary.rebuilt == ("backfilled", 3)
    expected = [
        (times[0], times[2], sha(live)),
        (middle, middle, sha(other)),
        (times[3], times[4], sha(live)),
    ]
    assert history(database_url, "backfilled") == expected
    assert history(database_url, "recorded") == expected
    assert bodies_read_back(database_url, "backfilled") == [live, other, live]
    head, tail = times[0], times[3]
    assert poll_snapshots(database_url, "backfilled") == [
        (times[0], head),
        (times[1], head),
        (times[2], head),
        (at(8 + 22 / 60), None),
        (times[3], tail),
        (times[4], tail),
    ]
    assert derived_rows(database_url, "backfilled") == derived_rows(
        database_url, "recorded"
    )
    with make_sessionmaker(make_engine(database_url))() as session:
        rows = session.execute(
            select(Snapshot.taken_at, Snapshot.parse_error)
            .join(Source, Source.id == Snapshot.source_id)
            .where(Source.name == "backfilled")
            .order_by(Snapshot.taken_at)
        ).all()
        counted = set(
            session.scalars(
                select(PipelineCount.taken_at)
                .join(Source, Source.id == PipelineCount.source_id)
                .where(Source.name == "backfilled")
            )
        )
    errors = [error for _, error in rows]
    assert errors[0] is None
    assert errors[2] is None
    assert (errors[1] is not None) == unparsed
    assert counted == ({head, tail} if unparsed else {head, middle, tail})


def test_a_different_body_at_a_time_already_seen_is_refused(database_url, tmp_path):
    live, other = simulated_bodies(2)
    times = [at(9), at(9.5), at(10)]
    record_polls(database_url, "demo", [(when, live) for when in times])
    before = history(database_url, "demo")

    for when in times:
        summary = import_one(database_url, "demo", other, when, tmp_path)
        stamp = when.replace(tzinfo=None).isoformat() + "Z"
        assert summary.failures == [
            (
                str(tmp_path / f"{sha(other)[:12]}.json"),
                f"taken at {stamp}: another body is stored for that time",
            )
        ]
        assert summary.rebuilt is None
    assert history(database_url, "demo") == before


def test_times_before_1970_or_in_the_future_are_refused(database_url, tmp_path):
    body = simulated_bodies(1)[0]
    config = write_config(tmp_path, database_url)
    path = tmp_path / "status.json"
    path.write_bytes(body)

    summary = import_one(
        database_url, "demo", body, datetime(1, 1, 1, tzinfo=UTC), tmp_path
    )
    assert summary.failures == [
        (
            str(tmp_path / f"{sha(body)[:12]}.json"),
            "taken at 0001-01-01T00:00:00Z: before 1970-01-01T00:00:00Z",
        )
    ]
    future = tmp_path / "future.json"
    future.write_bytes(body)
    stamp = datetime(2400, 1, 1, tzinfo=UTC).timestamp()
    os.utime(future, (stamp, stamp))
    old = tmp_path / "old.json"
    old.write_bytes(body)
    stamp = datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    os.utime(old, (stamp, stamp))
    result = cli(config, "import", "--source", "demo", str(future), str(old))
    assert result.exit_code == 1
    assert "0 stored, 0 duplicates, 0 kept unparsed, 2 failed" in result.output
    assert (
        f"failed: {future}: taken at 2400-01-01T00:00:00Z: in the future"
    ) in result.output
    assert (
        f"failed: {old}: taken at 1969-12-31T23:59:59Z: before 1970-01-01T00:00:00Z"
    ) in result.output

    for value, reason in [
        ("9999-12-31T23:59:59", "9999-12-31T23:59:59Z is in the future"),
        ("0001-01-01T00:00:00+01:00", "is before 1970-01-01T00:00:00Z"),
    ]:
        result = cli(
            config, "import", "--source", "demo", "--taken-at", value, str(path)
        )
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--taken-at'" in result.output
        assert reason in result.output
    soon = (datetime.now(UTC) + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S")
    result = cli(config, "import", "--source", "demo", "--taken-at", soon, str(path))
    assert result.exit_code == 0, result.output
    assert len(history(database_url, "demo")) == 1


def test_taken_at_with_more_than_one_file_is_a_usage_error(database_url, tmp_path):
    config = write_config(tmp_path, database_url)
    paths = []
    for index, body in enumerate(simulated_bodies(2)):
        paths.append(tmp_path / f"status-{index}.json")
        paths[-1].write_bytes(body)

    result = cli(
        config,
        "import",
        "--source",
        "demo",
        "--taken-at",
        "2026-11-02T10:00:00",
        *map(str, paths),
    )

    assert result.exit_code == 2, result.output
    assert "--taken-at gives one time, but 2 FILEs were given" in result.output
    assert history(database_url, "demo") == []


def test_the_reason_a_body_is_kept_unparsed_is_printed(database_url, tmp_path):
    config = write_config(tmp_path, database_url)
    path = tmp_path / "other.json"
    path.write_bytes(b'{"tenants": []}')

    result = cli(config, "import", "--source", "demo", str(path))

    assert result.exit_code == 1
    assert "0 stored, 0 duplicates, 1 kept unparsed, 0 failed" in result.output
    assert (
        f"kept unparsed: {path}: not Zuul status: no 'pipelines' list in the document"
    ) in result.output
