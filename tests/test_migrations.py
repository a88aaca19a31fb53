"""Migrations build exactly the models' schema, up and down, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import MetaData, insert, inspect, select, text
from sqlalchemy.orm import Session

from recorder.db import make_engine
from recorder.migrate import check, downgrade, upgrade
from recorder.models import Build, build_last_seen, build_last_snapshot_id


def test_upgrade_to_head_then_check_reports_no_drift(empty_database_url):
    upgrade(empty_database_url)
    check(empty_database_url)


def test_downgrade_to_base_removes_every_table_and_upgrade_restores_them(
    empty_database_url,
):
    upgrade(empty_database_url)
    downgrade(empty_database_url, "base")
    engine = make_engine(empty_database_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade(empty_database_url)
    check(empty_database_url)


def test_0002_moves_visible_builds_to_null_and_back(empty_database_url):
    """Rows written by 0001 (every visible build pointing at the latest parsed
    snapshot) become NULL, read back as that snapshot, and return on downgrade."""
    upgrade(empty_database_url, "0001")
    engine = make_engine(empty_database_url)
    tables = MetaData()
    tables.reflect(engine)
    sources, snapshots, builds = (
        tables.tables[name] for name in ("sources", "snapshots", "builds")
    )
    t = [datetime(2026, 5, 1, 12, minute) for minute in range(4)]  # naive = UTC
    snapshot = {"sha256": "0" * 64, "raw_size": 2, "encoding": "full", "body": b"{}"}
    snapshot["parse_error"] = None  # executemany takes its columns from the first row
    with engine.begin() as connection:
        connection.execute(
            insert(sources), [{"id": 1, "name": "a", "url": "u", "created_at": t[0]}]
        )
        connection.execute(
            insert(snapshots),
            [
                snapshot
                | {"id": 10, "source_id": 1, "taken_at": t[0], "last_taken_at": t[0]},
                snapshot
                | {"id": 11, "source_id": 1, "taken_at": t[1], "last_taken_at": t[1]},
                # The latest body did not parse: builds still point at 11.
                snapshot
                | {"id": 12, "source_id": 1, "taken_at": t[2], "last_taken_at": t[2]}
                | {"parse_error": "invalid JSON"},
            ],
        )
        build = {"source_id": 1, "pipeline": "gate", "job": "j", "voting": True}
        build |= {"state": "running", "first_snapshot_id": 10, "first_seen": t[0]}
        connection.execute(
            insert(builds),
            [
                build
                | {"id": 1, "key": "gone", "last_snapshot_id": 10}
                | {"last_seen": t[0]},
                build
                | {"id": 2, "key": "visible", "last_snapshot_id": 11}
                | {"last_seen": t[1]},
            ],
        )
    engine.dispose()

    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    with Session(engine) as session:
        raw = session.execute(
            select(Build.key, Build.last_snapshot_id, Build.last_seen).order_by(
                Build.id
            )
        ).all()
        effective = session.execute(
            select(Build.key, build_last_snapshot_id(), build_last_seen()).order_by(
                Build.id
            )
        ).all()
    engine.dispose()
    utc = [moment.replace(tzinfo=UTC) for moment in t]
    assert [tuple(row) for row in raw] == [
        ("gone", 10, utc[0]),
        ("visible", None, None),
    ]
    assert [tuple(row) for row in effective] == [
        ("gone", 10, utc[0]),
        ("visible", 11, utc[1]),
    ]

    downgrade(empty_database_url, "0001")
    engine = make_engine(empty_database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT key, last_snapshot_id, last_seen FROM builds ORDER BY id")
        ).all()
    engine.dispose()
    assert [(key, snapshot_id) for key, snapshot_id, _ in rows] == [
        ("gone", 10),
        ("visible", 11),
    ]
    assert [str(seen)[:19] for _, _, seen in rows] == [
        "2026-05-01 12:00:00",
        "2026-05-01 12:01:00",
    ]


def test_0003_widens_the_job_index_with_the_wait_and_narrows_it_back(
    empty_database_url,
):
    def job_index() -> list[str]:
        engine = make_engine(empty_database_url)
        try:
            indexes = inspect(engine).get_indexes("builds")
        finally:
            engine.dispose()
        return next(
            i["column_names"] for i in indexes if i["name"] == "ix_builds_job_end"
        )

    narrow = ["job", "end_time", "duration_s", "result"]
    upgrade(empty_database_url, "0002")
    assert job_index() == narrow
    upgrade(empty_database_url, "0003")
    assert job_index() == [*narrow, "enqueue_time", "start_time"]
    downgrade(empty_database_url, "0002")
    assert job_index() == narrow
