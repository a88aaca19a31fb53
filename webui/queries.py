"""What each page reads from the database; nothing here talks to Zuul.

A lookup that finds nothing raises ``NotFound`` with a message that says what
was missing, which the application's one error handler shows to the reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session
from werkzeug.exceptions import NotFound

from recorder.models import Poll, Snapshot, Source
from recorder.parser import ParseError, Status, parse_status
from recorder.store import latest_snapshot, read_body

# Columns of a snapshot without its (large) body, for lists and neighbours.
_SUMMARY_COLUMNS = (
    Snapshot.id,
    Snapshot.taken_at,
    Snapshot.last_taken_at,
    Snapshot.raw_size,
    Snapshot.zuul_version,
    Snapshot.parse_error,
)


@dataclass(slots=True)
class SnapshotRecord:
    """One snapshot, parsed when it can be, with its neighbours in time."""

    source: Source
    source_names: list[str]
    snapshot: Snapshot
    status: Status | None
    parse_error: str | None
    previous_id: int | None
    next_id: int | None
    newest_id: int


@dataclass(slots=True)
class SnapshotSummary:
    """A snapshot as listed by the API: everything but the body."""

    id: int
    source: str
    taken_at: datetime
    last_taken_at: datetime
    raw_size: int
    zuul_version: str | None
    parse_error: str | None


@dataclass(slots=True)
class SourceHealth:
    """How fresh the data of one source is, and how its last poll went."""

    name: str
    latest_snapshot_at: datetime | None = None
    last_seen_at: datetime | None = None
    last_poll_at: datetime | None = None
    last_poll_outcome: str | None = None


def resolve_source(
    session: Session, name: str | None, preferred: Sequence[str] = ()
) -> Source:
    """The source called ``name``; by default the first with data, preferred first."""
    if name is not None:
        source = session.scalar(select(Source).where(Source.name == name))
        if source is None:
            raise NotFound(f"no source named {name!r}")
        return source
    candidates = _sources_with_snapshots(session)
    if not candidates:
        raise NotFound("no source has any snapshot yet")
    rank = {source_name: index for index, source_name in enumerate(preferred)}
    return min(candidates, key=lambda s: (rank.get(s.name, len(rank)), s.id))


def latest_snapshot_record(
    session: Session, source_name: str | None, preferred: Sequence[str] = ()
) -> SnapshotRecord:
    """The latest parsed snapshot of a source (the latest of all if none parsed)."""
    source = resolve_source(session, source_name, preferred)
    snapshot = latest_snapshot(session, source.id) or latest_snapshot(
        session, source.id, parsed_only=False
    )
    if snapshot is None:
        raise NotFound(
            f"no snapshot yet for source {source.name!r}{_last_poll(session, source)}"
        )
    return _record(session, source, snapshot)


def _last_poll(session: Session, source: Source) -> str:
    """How the last poll of ``source`` went, for a page that has nothing to show."""
    poll = session.execute(
        select(Poll.started_at, Poll.outcome, Poll.error)
        .where(Poll.source_id == source.id)
        .order_by(Poll.started_at.desc(), Poll.id.desc())
        .limit(1)
    ).first()
    if poll is None:
        return "; it has not been polled"
    when = poll.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"; the last poll, at {when}, {poll.outcome}: {poll.error or 'no reason'}"


def snapshot_record(
    session: Session, snapshot_id: int, source_name: str | None = None
) -> SnapshotRecord:
    """One snapshot by id; with ``source_name``, it must belong to that source."""
    snapshot = _snapshot_of(session, snapshot_id, source_name)
    return _record(session, snapshot.source, snapshot)


def snapshot_body(
    session: Session, snapshot_id: int, source_name: str | None = None
) -> bytes:
    """The body of one snapshot, byte for byte as it was received."""
    return read_body(session, _snapshot_of(session, snapshot_id, source_name))


def list_snapshots(
    session: Session,
    source_name: str | None = None,
    preferred: Sequence[str] = (),
    limit: int = 100,
    offset: int = 0,
) -> list[SnapshotSummary]:
    """Snapshots of one source, newest first, without their bodies."""
    source = resolve_source(session, source_name, preferred)
    rows = session.execute(
        select(*_SUMMARY_COLUMNS)
        .where(Snapshot.source_id == source.id)
        .order_by(Snapshot.taken_at.desc(), Snapshot.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [
        SnapshotSummary(
            id=row.id,
            source=source.name,
            taken_at=row.taken_at,
            last_taken_at=row.last_taken_at,
            raw_size=row.raw_size,
            zuul_version=row.zuul_version,
            parse_error=row.parse_error,
        )
        for row in rows
    ]


def source_health(session: Session, names: Sequence[str] = ()) -> list[SourceHealth]:
    """Freshness of every recorded source and of every configured one."""
    sources = {s.name: s for s in session.scalars(select(Source).order_by(Source.id))}
    health = []
    for name in dict.fromkeys([*names, *sources]):
        entry = SourceHealth(name)
        source = sources.get(name)
        if source is not None:
            _fill_health(session, source, entry)
        health.append(entry)
    return health


def _fill_health(session: Session, source: Source, entry: SourceHealth) -> None:
    snapshot = latest_snapshot(session, source.id, parsed_only=False)
    if snapshot is not None:
        entry.latest_snapshot_at = snapshot.taken_at
        entry.last_seen_at = snapshot.last_taken_at
    poll = session.execute(
        select(Poll.started_at, Poll.outcome)
        .where(Poll.source_id == source.id)
        .order_by(Poll.started_at.desc(), Poll.id.desc())
        .limit(1)
    ).first()
    if poll is not None:
        entry.last_poll_at, entry.last_poll_outcome = poll.started_at, poll.outcome


def source_names(session: Session) -> list[str]:
    """Names of the sources that have snapshots, for the source switcher."""
    return [source.name for source in _sources_with_snapshots(session)]


def _sources_with_snapshots(session: Session) -> list[Source]:
    has_snapshot = exists().where(Snapshot.source_id == Source.id)
    return list(session.scalars(select(Source).where(has_snapshot).order_by(Source.id)))


def _snapshot_of(
    session: Session, snapshot_id: int, source_name: str | None
) -> Snapshot:
    snapshot = session.get(Snapshot, snapshot_id)
    if source_name is not None:
        source = resolve_source(session, source_name)
        if snapshot is None or snapshot.source_id != source.id:
            raise NotFound(f"no snapshot {snapshot_id} for source {source_name!r}")
    elif snapshot is None:
        raise NotFound(f"no snapshot {snapshot_id}")
    return snapshot


def _record(session: Session, source: Source, snapshot: Snapshot) -> SnapshotRecord:
    status, parse_error = None, snapshot.parse_error
    if parse_error is None:
        try:
            status = parse_status(read_body(session, snapshot))
        except ParseError as error:
            parse_error = str(error)
    newest = newest_snapshot_id(session, source.id)
    return SnapshotRecord(
        source=source,
        source_names=[s.name for s in _sources_with_snapshots(session)],
        snapshot=snapshot,
        status=status,
        parse_error=parse_error,
        previous_id=_neighbour_id(session, snapshot, before=True),
        next_id=_neighbour_id(session, snapshot, before=False),
        newest_id=newest if newest is not None else snapshot.id,
    )


def newest_snapshot_id(
    session: Session, source_id: int, parsed_only: bool = False
) -> int | None:
    """The id of the latest snapshot of a source, without reading its body."""
    query = select(Snapshot.id).where(Snapshot.source_id == source_id)
    if parsed_only:
        query = query.where(Snapshot.parse_error.is_(None))
    return session.scalar(
        query.order_by(Snapshot.taken_at.desc(), Snapshot.id.desc()).limit(1)
    )


def _neighbour_id(session: Session, snapshot: Snapshot, before: bool) -> int | None:
    """The id of the snapshot just before (or after) this one in its source."""
    taken_at, snapshot_id = Snapshot.taken_at, Snapshot.id
    if before:
        condition = or_(
            taken_at < snapshot.taken_at,
            and_(taken_at == snapshot.taken_at, snapshot_id < snapshot.id),
        )
        order = (taken_at.desc(), snapshot_id.desc())
    else:
        condition = or_(
            taken_at > snapshot.taken_at,
            and_(taken_at == snapshot.taken_at, snapshot_id > snapshot.id),
        )
        order = (taken_at.asc(), snapshot_id.asc())
    return session.scalar(
        select(snapshot_id)
        .where(Snapshot.source_id == snapshot.source_id, condition)
        .order_by(*order)
        .limit(1)
    )
