"""Bulk work on stored history: importing saved bodies and rebuilding derived rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select, update
from tqdm import tqdm

from recorder.codec import sha256_hex
from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.leader import no_recorder
from recorder.models import Build, PipelineCount, Poll, Snapshot, Source
from recorder.parser import ParseError, parse_status
from recorder.settings import ConfigError, Settings
from recorder.store import (
    BuildCache,
    StoreResult,
    build_rows,
    get_or_create_source,
    insert_snapshot,
    read_body,
    store_body,
    store_counts,
    update_builds,
)

log = logging.getLogger(__name__)

# Snapshot times outside these bounds are refused: no Zuul status predates
# the epoch, and a time far ahead would stay "latest" for ever.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(hours=1)


@dataclass
class ImportSummary:
    stored: int = 0
    duplicates: int = 0
    # Files stored as received but not read as Zuul status, with the reason.
    unparsed: list[tuple[str, str]] = field(default_factory=list)
    # Files not stored at all, with the reason.
    failures: list[tuple[str, str]] = field(default_factory=list)
    # Files that changed the source's history before its newest sighting.
    backfilled: int = 0
    # (source, snapshots) when the derived rows were rebuilt for them.
    rebuilt: tuple[str, int] | None = None

    def line(self) -> str:
        return (
            f"{self.stored} stored, {self.duplicates} duplicates, "
            f"{len(self.unparsed)} kept unparsed, {len(self.failures)} failed"
        )

    def rebuilt_line(self) -> str | None:
        if self.rebuilt is None:
            return None
        name, snapshots = self.rebuilt
        files = (
            "1 file was" if self.backfilled == 1 else f"{self.backfilled} files were"
        )
        return (
            f"{files} older than the newest snapshot; rebuilt the derived rows "
            f"of source {name} ({_plural(snapshots, 'snapshot')})"
        )


def time_problem(when: datetime, now: datetime | None = None) -> str | None:
    """Why ``when`` cannot be the time of a snapshot, or None if it can."""
    if when < EARLIEST:
        return "before 1970-01-01T00:00:00Z"
    if when > (now or datetime.now(UTC)) + FUTURE_SLACK:
        return "in the future"
    return None


def format_time(when: datetime) -> str:
    """``when`` in UTC as ISO 8601 with a Z, or as given if UTC cannot hold it."""
    try:
        return when.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
    except (OverflowError, ValueError):
        return when.isoformat()


def import_files(
    settings: Settings,
    source_name: str,
    paths: list[Path],
    taken_at: datetime | None = None,
) -> ImportSummary:
    """Store each file as a snapshot of ``source_name``, oldest first.

    A file taken after the source's newest sighting is stored as live
    recording stores a poll. An older one is fitted into the history where
    its time falls (see :func:`_backfill`), and the derived rows of the
    source are rebuilt once at the end: the history does not depend on the
    order of the imports.
    """
    try:
        source_settings = settings.source(source_name)
        url, web_root = source_settings.url, source_settings.zuul_web_root
    except ConfigError:
        url, web_root = f"import:{source_name}", None
    sessions = make_sessionmaker(make_engine(settings.database_url, writer=True))
    summary = ImportSummary()
    now = datetime.now(UTC)
    dated = []
    for path in paths:
        name = str(path)
        try:
            when = taken_at or _mtime(path)
        except OSError as error:
            summary.failures.append((name, error.strerror or str(error)))
            continue
        except (OverflowError, ValueError):
            summary.failures.append((name, "modification time out of range"))
            continue
        problem = time_problem(when, now)
        if problem is not None:
            summary.failures.append((name, f"taken at {format_time(when)}: {problem}"))
            continue
        dated.append((when, name, path))
    dated.sort()
    with no_recorder(settings.database_url, [source_name]):
        for when, name, path in tqdm(dated, desc="import", unit="file", disable=None):
            try:
                body = path.read_bytes()
            except OSError as error:
                summary.failures.append((name, error.strerror or str(error)))
                continue
            with session_scope(sessions) as session:
                source = get_or_create_source(session, source_name, url)
                result, backfilled = _import_one(session, source, body, when, web_root)
            _count(summary, result, name)
            summary.backfilled += backfilled
        if summary.backfilled:
            with session_scope(sessions) as session:
                source = session.scalar(
                    select(Source).where(Source.name == source_name)
                )
            snapshots = _reindex_source(settings, sessions, source)
            summary.rebuilt = (source_name, snapshots)
    return summary


def _import_one(
    session, source, body: bytes, when: datetime, web_root
) -> tuple[StoreResult, bool]:
    """Store one body; also say whether it changed the history before the newest."""
    newest = session.scalar(
        select(Snapshot.last_taken_at)
        .where(Snapshot.source_id == source.id)
        .order_by(Snapshot.taken_at.desc(), Snapshot.id.desc())
        .limit(1)
    )
    if newest is None or when > newest:
        return store_body(session, source, body, when, web_root), False
    return _backfill(session, source.id, body, when)


_SPANS = select(Snapshot.id, Snapshot.sha256, Snapshot.taken_at, Snapshot.last_taken_at)
_SNAPSHOTS = Snapshot.__table__
_POLLS = Poll.__table__


def _backfill(
    session, source_id: int, body: bytes, when: datetime
) -> tuple[StoreResult, bool]:
    """Fit a body taken at or before the source's newest sighting into its history.

    The result is the history that storing every sighting in time order
    would have made: a body seen again within the span of the snapshot in
    force extends or repeats it; a new body splits that span at ``when``
    (the polls that saw the old body after ``when`` go to its second part),
    or starts the next snapshot earlier if that one has the same body.
    """
    sha = sha256_hex(body)
    spans = _SPANS.where(Snapshot.source_id == source_id)
    in_force = session.execute(
        spans.where(Snapshot.taken_at <= when)
        .order_by(Snapshot.taken_at.desc(), Snapshot.id.desc())
        .limit(1)
    ).first()
    if in_force is not None and in_force.sha256 == sha:
        if when > in_force.last_taken_at:
            session.execute(
                update(_SNAPSHOTS)
                .where(_SNAPSHOTS.c.id == in_force.id)
                .values(last_taken_at=when)
            )
        return StoreResult("duplicate", in_force.id), False
    if in_force is not None and when <= in_force.last_taken_at:
        return _split(session, source_id, in_force, body, when)
    following = session.execute(
        spans.where(Snapshot.taken_at > when)
        .order_by(Snapshot.taken_at, Snapshot.id)
        .limit(1)
    ).first()
    if following is not None and following.sha256 == sha:
        # The next snapshot has this body: it was in force from ``when`` on.
        session.execute(
            update(_SNAPSHOTS)
            .where(_SNAPSHOTS.c.id == following.id)
            .values(taken_at=when)
        )
        session.execute(
            update(PipelineCount.__table__)
            .where(PipelineCount.snapshot_id == following.id)
            .values(taken_at=when)
        )
        return StoreResult("duplicate", following.id), True
    return insert_snapshot(session, source_id, body, when), True


def _split(
    session, source_id: int, in_force, body: bytes, when: datetime
) -> tuple[StoreResult, bool]:
    """Store ``body`` at ``when``, inside the span of ``in_force`` (another body)."""
    polls = (
        select(_POLLS.c.started_at)
        .where(
            _POLLS.c.source_id == source_id,
            _POLLS.c.snapshot_id == in_force.id,
            _POLLS.c.started_at >= in_force.taken_at,
            _POLLS.c.started_at <= in_force.last_taken_at,
        )
        .order_by(_POLLS.c.started_at)
    )
    seen = list(session.scalars(polls))
    if when in (in_force.taken_at, in_force.last_taken_at, *seen):
        reason = f"taken at {format_time(when)}: another body is stored for that time"
        return StoreResult("failed", error=reason), False
    before = [moment for moment in seen if moment < when]
    after = [moment for moment in seen if moment > when]
    old = session.get(Snapshot, in_force.id)
    old_body = read_body(session, old)
    session.expunge(old)
    result = insert_snapshot(session, source_id, body, when)
    tail = insert_snapshot(
        session,
        source_id,
        old_body,
        after[0] if after else in_force.last_taken_at,
        in_force.last_taken_at,
    )
    session.execute(
        update(_SNAPSHOTS)
        .where(_SNAPSHOTS.c.id == in_force.id)
        .values(last_taken_at=before[-1] if before else in_force.taken_at)
    )
    session.execute(
        update(_POLLS)
        .where(
            _POLLS.c.source_id == source_id,
            _POLLS.c.snapshot_id == in_force.id,
            _POLLS.c.started_at > when,
        )
        .values(snapshot_id=tail.snapshot_id)
    )
    return result, True


def _count(summary: ImportSummary, result: StoreResult, name: str) -> None:
    if result.outcome == "stored":
        summary.stored += 1
    elif result.outcome in ("duplicate", "unchanged"):
        summary.duplicates += 1
    elif result.outcome == "failed":
        summary.failures.append((name, result.error or "not stored"))
    else:
        summary.unparsed.append((name, f"not Zuul status: {result.error}"))


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def reindex(settings: Settings, source_name: str | None = None) -> str:
    """Delete and rebuild the builds and counts of one or all sources from bodies."""
    sessions = make_sessionmaker(make_engine(settings.database_url, writer=True))
    with session_scope(sessions) as session:
        query = select(Source)
        if source_name:
            query = query.where(Source.name == source_name)
        sources = list(session.scalars(query))
    if source_name and not sources:
        raise ConfigError(f"no source named {source_name!r} in the database")
    snapshots = 0
    with no_recorder(settings.database_url, [source.name for source in sources]):
        for source in sources:
            snapshots += _reindex_source(settings, sessions, source)
    return (
        f"reindexed {_plural(snapshots, 'snapshot')} "
        f"of {_plural(len(sources), 'source')}"
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _reindex_source(settings: Settings, sessions, source: Source) -> int:
    try:
        web_root = settings.source(source.name).zuul_web_root
    except ConfigError:
        web_root = None
    cache, previous_id = BuildCache(), None
    with session_scope(sessions) as session:
        session.execute(delete(Build).where(Build.source_id == source.id))
        session.execute(
            delete(PipelineCount).where(PipelineCount.source_id == source.id)
        )
        ids = list(
            session.scalars(
                select(Snapshot.id)
                .where(Snapshot.source_id == source.id)
                .order_by(Snapshot.taken_at, Snapshot.id)
            )
        )
        for snapshot_id in tqdm(ids, desc=f"reindex {source.name}", disable=None):
            snapshot = session.get(Snapshot, snapshot_id)
            try:
                status = parse_status(read_body(session, snapshot))
                snapshot.parse_error = None
            except ParseError as error:
                snapshot.parse_error = str(error)
                continue
            finally:
                session.flush()
                session.expunge(snapshot)  # bodies need not pile up in memory
            store_counts(session, snapshot, status)
            rows = build_rows(status, web_root)
            update_builds(session, snapshot, rows, previous_id, cache)
            previous_id = snapshot.id
    return len(ids)
