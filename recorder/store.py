"""Storing polls and snapshots, deriving build rows, and reading bodies back."""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urljoin

from sqlalchemy import Update, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from recorder import chain, codec
from recorder.chain import read_body as read_body  # re-exported for readers
from recorder.models import Build, PipelineCount, Poll, Snapshot, Source
from recorder.parser import ParseError, Status, parse_status

log = logging.getLogger(__name__)

_HTTP_URL = re.compile(r"https?://", re.IGNORECASE)
_HAS_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# Longer identities are hashed into the key (build_key; inlined in build_rows).
MAX_KEY_IDENTITY = 200
_BUILD_FIELDS = (
    "pipeline",
    "queue",
    "project",
    "change",
    "ref",
    "branch",
    "job",
    "voting",
    "state",
    "result",
    "enqueue_time",
    "start_time",
    "end_time",
    "duration_s",
    "log_url",
    "uuid",
)


@dataclass(slots=True)
class StoreResult:
    """What storing one poll did."""

    outcome: str
    snapshot_id: int | None = None
    error: str | None = None
    status: Status | None = None


def get_or_create_source(session: Session, name: str, url: str) -> Source:
    source = session.scalar(_SOURCE_BY_NAME, {"name": name})
    if source is None:
        source = Source(name=name, url=url)
        session.add(source)
        session.flush()
    elif source.url != url:
        source.url = url
    return source


def store_poll(
    session: Session,
    source: Source,
    started_at: datetime,
    duration_ms: int,
    body: bytes | None,
    http_status: int | None = None,
    error: str | None = None,
    web_root: str | None = None,
    cache: BuildCache | None = None,
) -> StoreResult:
    """Record one poll; store its body as a snapshot when it brought one."""
    if body is None:
        result = StoreResult("failed", error=error or "no body")
    else:
        result = store_body(session, source, body, started_at, web_root, cache)
    session.add(
        Poll(
            source_id=source.id,
            started_at=started_at,
            duration_ms=duration_ms,
            outcome=result.outcome,
            http_status=http_status,
            size_bytes=None if body is None else len(body),
            error=result.error,
            snapshot_id=result.snapshot_id,
        )
    )
    return result


def store_body(
    session: Session,
    source: Source,
    body: bytes,
    taken_at: datetime,
    web_root: str | None = None,
    cache: BuildCache | None = None,
) -> StoreResult:
    """Store a body taken at ``taken_at`` unless the latest snapshot has the same."""
    sha = codec.sha256_hex(body)
    latest = _latest_row(session, source.id, parsed_only=False)
    if latest is not None and latest.sha256 == sha and latest.taken_at <= taken_at:
        if taken_at > latest.last_taken_at:
            session.connection().execute(
                _SEEN_AGAIN, {"snapshot_id": latest.id, "seen": taken_at}
            )
        return StoreResult("unchanged", latest.id, latest.parse_error)

    previous = latest
    if previous is not None and previous.parse_error is not None:
        previous = _latest_row(session, source.id)
    result, snapshot, rows = _insert(session, source.id, body, sha, taken_at, web_root)
    if result.status is not None:
        previous_id = previous.id if previous is not None else None
        update_builds(session, snapshot, rows, previous_id, cache)
    return result


def insert_snapshot(
    session: Session,
    source_id: int,
    body: bytes,
    taken_at: datetime,
    last_taken_at: datetime | None = None,
) -> StoreResult:
    """Insert a snapshot of ``body`` and its counts, whatever the latest one is.

    For bodies stored out of time order (an import of the past): no build
    rows are derived, the caller rebuilds them. The body goes on the chain
    like any other, which links by id, not by time.
    """
    sha = codec.sha256_hex(body)
    stored = _insert(
        session, source_id, body, sha, taken_at, None, last_taken_at, derive=False
    )
    return stored[0]


def _insert(
    session: Session,
    source_id: int,
    body: bytes,
    sha: str,
    taken_at: datetime,
    web_root: str | None = None,
    last_taken_at: datetime | None = None,
    derive: bool = True,
) -> tuple[StoreResult, Snapshot, dict | None]:
    """Insert the snapshot of a new body and its counts; derive its build rows."""
    # Compression runs in another thread (zstd releases the GIL) while this
    # one parses and derives the rows: on two cores the slower of the two sets
    # the pace, not both. Everything that needs no database comes before the
    # wait for the compressed body, so that the worker, which gets the GIL
    # only at a switch interval, has finished by then.
    encoding = chain.encode_in_background(session, source_id, body, sha)
    rows = None
    try:
        status = parse_status(body)
        parse_error = None
    except ParseError as exc:
        status, parse_error = None, str(exc)
    if status is not None:
        counts = count_rows(status)
        if derive:
            rows = build_rows(status, web_root)
    # Core, not the unit of work: this runs for every poll that brings news.
    snapshot = Snapshot(
        source_id=source_id,
        taken_at=taken_at,
        last_taken_at=last_taken_at or taken_at,
        sha256=sha,
        raw_size=len(body),
        parse_error=parse_error,
        zuul_version=status.zuul_version if status is not None else None,
        **encoding.result(),
    )
    columns = {name: getattr(snapshot, name) for name in _SNAPSHOT_COLUMNS}
    snapshot.id = session.connection().execute(_INSERT_SNAPSHOT, columns).scalar_one()
    if status is None:
        return StoreResult("unparsed", snapshot.id, parse_error), snapshot, None
    insert_counts(session, snapshot, counts)
    return StoreResult("stored", snapshot.id, status=status), snapshot, rows


_SNAPSHOTS = Snapshot.__table__
_SNAPSHOT_COLUMNS = [column.name for column in _SNAPSHOTS.c if column.name != "id"]
_BUILDS = Build.__table__

# The statements of every stored snapshot, built once with bound parameters:
# building a statement costs several times what SQLite takes to run it.
_SOURCE_BY_NAME = select(Source).where(Source.name == bindparam("name"))
_INSERT_SNAPSHOT = insert(_SNAPSHOTS).returning(_SNAPSHOTS.c.id)
_SEEN_AGAIN = (
    update(_SNAPSHOTS)
    .where(_SNAPSHOTS.c.id == bindparam("snapshot_id"))
    .values(last_taken_at=bindparam("seen"))
)
_LATEST_ROW = (
    select(
        _SNAPSHOTS.c.id,
        _SNAPSHOTS.c.sha256,
        _SNAPSHOTS.c.taken_at,
        _SNAPSHOTS.c.last_taken_at,
        _SNAPSHOTS.c.parse_error,
    )
    .where(_SNAPSHOTS.c.source_id == bindparam("source_id"))
    .order_by(_SNAPSHOTS.c.taken_at.desc(), _SNAPSHOTS.c.id.desc())
    .limit(1)
)
_LATEST_PARSED_ROW = _LATEST_ROW.where(_SNAPSHOTS.c.parse_error.is_(None))
_INSERT_COUNTS = insert(PipelineCount.__table__)
_INSERT_BUILDS = insert(_BUILDS).returning(_BUILDS.c.id, _BUILDS.c.key)
_BUILDS_BY_KEY = select(_BUILDS.c.key, _BUILDS.c.id).where(
    _BUILDS.c.source_id == bindparam("source_id"),
    _BUILDS.c.key.in_(bindparam("keys", expanding=True)),
)
_DELETE_BUILDS = delete(_BUILDS).where(
    _BUILDS.c.id.in_(bindparam("ids", expanding=True))
)
_CLOSE_BUILDS = (
    update(_BUILDS)
    .where(_BUILDS.c.id.in_(bindparam("ids", expanding=True)))
    .values(last_snapshot_id=bindparam("closing_id"), last_seen=bindparam("seen"))
)


def _latest_row(session: Session, source_id: int, parsed_only: bool = True):
    """``latest_snapshot`` without the body: the columns storing compares."""
    query = _LATEST_PARSED_ROW if parsed_only else _LATEST_ROW
    return session.connection().execute(query, {"source_id": source_id}).first()


def store_counts(session: Session, snapshot: Snapshot, status: Status) -> None:
    """One row of item and job counts per non-empty pipeline of the snapshot."""
    insert_counts(session, snapshot, count_rows(status))


def count_rows(status: Status) -> list[dict]:
    """Items and running/waiting/finished jobs of each non-empty pipeline."""
    counts = []
    for pipeline in status.pipelines:
        items = list(pipeline.items)
        if items:
            states = [job.state for item in items for job in item.jobs]
            row = {name: states.count(name) for name in ("running", "waiting")}
            row["finished"] = len(states) - row["running"] - row["waiting"]
            counts.append(row | {"items": len(items), "pipeline": pipeline.name})
    merged: dict[str, dict] = {}
    for row in counts:  # pipeline names repeat only in broken bodies; add them up
        if row["pipeline"] in merged:
            for name in ("items", "running", "waiting", "finished"):
                merged[row["pipeline"]][name] += row[name]
        else:
            merged[row["pipeline"]] = row
    return list(merged.values())


def insert_counts(session: Session, snapshot: Snapshot, counts: list[dict]) -> None:
    """Insert the rows of :func:`count_rows` for ``snapshot``."""
    if counts:
        session.connection().execute(
            _INSERT_COUNTS,
            [
                row
                | {
                    "snapshot_id": snapshot.id,
                    "source_id": snapshot.source_id,
                    "taken_at": snapshot.taken_at,
                }
                for row in counts
            ],
        )


def latest_snapshot(
    session: Session, source_id: int, parsed_only: bool = True
) -> Snapshot | None:
    query = select(Snapshot).where(Snapshot.source_id == source_id)
    if parsed_only:
        query = query.where(Snapshot.parse_error.is_(None))
    return session.scalar(
        query.order_by(Snapshot.taken_at.desc(), Snapshot.id.desc()).limit(1)
    )


def build_rows(status: Status, web_root: str | None = None) -> dict[str, tuple]:
    """``(waiting key, values in _BUILD_FIELDS order)`` per job entry, by build key."""
    rows: dict[str, tuple] = {}
    for pipeline, change_queue, item in status.iter_items():
        if not item.live:
            continue
        ref = item.ref
        enqueue_ms = (
            int(item.enqueue_time.timestamp() * 1000) if item.enqueue_time else ""
        )
        item_key = f"{pipeline.name}|{item.key}|{enqueue_ms}"
        branch = change_queue.branch or _branch_of(ref.ref)
        shared = (
            pipeline.name,
            change_queue.name,
            ref.project,
            ref.id,
            ref.ref,
            branch,
        )
        waiting_prefix = f"w:{item_key}|"
        for job in item.jobs:
            waiting_key = waiting_prefix + job.name
            if len(waiting_key) > MAX_KEY_IDENTITY + 2:
                waiting_key = build_key("w", waiting_key[2:])
            uuid = job.uuid
            if not uuid:
                key = waiting_key
            elif len(uuid) <= MAX_KEY_IDENTITY:
                key = "u:" + uuid
            else:
                key = build_key("u", uuid)
            rows[key] = (
                waiting_key,
                (
                    *shared,
                    job.name,
                    job.voting,
                    job.state,
                    job.result,
                    item.enqueue_time,
                    job.start_time,
                    job.end_time,
                    job.duration_s,
                    safe_log_url(job.report_url, job.url, web_root),
                    job.uuid,
                ),
            )
    return rows


def build_key(kind: str, identity: str) -> str:
    """A build's key: ``kind:identity``, hashed when the identity is long."""
    if len(identity) > MAX_KEY_IDENTITY:
        return f"{kind}#{codec.sha256_hex(identity.encode())}"
    return f"{kind}:{identity}"


def _branch_of(ref: str | None) -> str | None:
    if ref and ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/")
    return None


def safe_log_url(
    report_url: str | None, url: str | None, web_root: str | None
) -> str | None:
    """The first of the job's URLs that is (or resolves to) http or https.

    A URL with any other scheme (``javascript:``, ``data:``, ``finger:``) is
    never returned; a relative one is resolved against the Zuul web root.
    """
    for candidate in (report_url, url):
        if not candidate:
            continue
        if candidate.startswith(("https://", "http://")) or _HTTP_URL.match(candidate):
            return candidate
        if web_root and not _HAS_SCHEME.match(candidate):
            absolute = urljoin(web_root, candidate)
            if _HTTP_URL.match(absolute):
                return absolute
    return None


class BuildCache:
    """The build rows of a source's latest snapshot, as last written.

    With it, storing a snapshot writes only the builds that appeared, changed
    or left; the builds still visible keep ``last_snapshot_id`` NULL and cost
    nothing. It is rebuilt from the database whenever another writer stored a
    snapshot in between.
    """

    def __init__(self) -> None:
        self.snapshot_id: int | None = None
        self.seen_at: datetime | None = None
        self.rows: dict[str, tuple[int, tuple]] = {}

    def load(self, session: Session, source_id: int, snapshot_id: int | None) -> None:
        columns = [getattr(Build, name) for name in _BUILD_FIELDS]
        query = select(Build.id, Build.key, *columns).where(
            Build.source_id == source_id, Build.last_snapshot_id.is_(None)
        )
        self.rows = {}
        if snapshot_id is not None:  # else nothing can be visible yet
            found = session.execute(query)
            self.rows = {row[1]: (row[0], tuple(row[2:])) for row in found}
        self.snapshot_id = snapshot_id
        self.seen_at = session.scalar(
            select(Snapshot.taken_at).where(Snapshot.id == snapshot_id)
        )


def update_builds(
    session: Session,
    snapshot: Snapshot,
    rows: dict[str, tuple],
    previous_id: int | None = None,
    cache: BuildCache | None = None,
) -> None:
    """Insert new builds, update changed ones, and close those that left.

    ``previous_id`` is the source's parsed snapshot before this one; the
    builds it showed (``last_snapshot_id`` NULL) are what ``rows`` is
    compared with. Builds that are no longer shown get that snapshot as their
    last; the others stay NULL, "still visible".
    """
    source_id, snapshot_id = snapshot.source_id, snapshot.id
    if cache is None:
        cache = BuildCache()
    if cache.snapshot_id != previous_id or previous_id is None:
        cache.load(session, source_id, previous_id)
    inserts, updates, seen, missing, rekeyed, deletes = [], [], {}, [], [], []
    previous = cache.rows
    for key, (waiting_key, values) in rows.items():
        found = previous.get(key)
        if found is None:
            found = previous.get(waiting_key)
            if found is None:
                missing.append(key)
            else:  # a waiting build got its uuid, or one was stored under it
                rekeyed.append(key)
            continue
        seen[key] = (found[0], values)
        if found[1] != values:
            updates.append(_changes(found[0], found[1], key, values, True))
    if missing or rekeyed:
        known = _known_elsewhere(session, source_id, rows, missing, rekeyed)
        for key in rekeyed:
            waiting_id, old = previous[rows[key][0]]
            values = rows[key][1]
            if key in known:
                # The status went back in time (a stale answer from one of
                # several schedulers): the waiting row it brought back is the
                # build already stored under its uuid. Keep that one.
                deletes.append(waiting_id)
                seen[key] = (known[key], values)
                updates.append(
                    _changes(known[key], None, key, values, False)
                    | {"last_snapshot_id": None, "last_seen": None}
                )
            else:
                seen[key] = (waiting_id, values)
                updates.append(_changes(waiting_id, old, key, values, False))
        for key in missing:
            waiting_key, values = rows[key]
            known_id = known.get(key) or known.get(waiting_key)
            if known_id is None:
                inserts.append(_insert_values(snapshot, key, values))
            else:  # back in the status: every column, and visible again
                seen[key] = (known_id, values)
                updates.append(
                    _changes(known_id, None, key, values, False)
                    | {"last_snapshot_id": None, "last_seen": None}
                )

    if deletes:
        session.connection().execute(_DELETE_BUILDS, {"ids": deletes})
    _close_gone(session, previous_id, cache, seen)
    # Core statements on the table: the ORM's bulk paths cost more than the
    # database work for the few dozen rows a snapshot changes.
    # Each row sets only the columns that changed (a finished build: state,
    # result, end, duration, log): unchanged indexed columns cost no index
    # writes. Rows that change the same columns go in one statement.
    by_columns: dict[tuple, list[dict]] = {}
    for change in updates:
        by_columns.setdefault(tuple(change), []).append(change)
    for columns, changes in by_columns.items():
        session.connection().execute(_update_statement(columns), changes)
    if inserts:
        created = session.connection().execute(
            _INSERT_BUILDS,
            inserts,
            # Rows with None in different columns would otherwise be sent one
            # at a time, each result spliced onto the last: quadratic time.
            execution_options={"render_nulls": True},
        )
        for build_id, key in created:
            seen[key] = (build_id, rows[key][1])
    cache.rows, cache.snapshot_id, cache.seen_at = seen, snapshot_id, snapshot.taken_at


def _known_elsewhere(
    session: Session,
    source_id: int,
    rows: dict[str, tuple],
    missing: list[str],
    rekeyed: list[str] = (),
) -> dict[str, int]:
    """Ids of builds absent from the previous snapshot but already stored.

    A build can leave the status and come back (an item dequeued and
    re-enqueued with the same build, a snapshot that missed it): its row is
    updated, not inserted again. ``missing`` are the keys of ``rows`` that
    the previous snapshot did not show, under either of their keys;
    ``rekeyed`` those it showed only under their waiting key.
    """
    wanted = set(missing)
    wanted.update(rows[key][0] for key in missing)
    wanted.update(rekeyed)
    known: dict[str, int] = {}
    ordered = sorted(wanted)
    for start in range(0, len(ordered), 500):
        keys = ordered[start : start + 500]
        found = session.connection().execute(
            _BUILDS_BY_KEY, {"source_id": source_id, "keys": keys}
        )
        known.update(found.all())
    return known


@functools.lru_cache(maxsize=256)
def _update_statement(columns: tuple[str, ...]) -> Update:
    """``UPDATE builds SET <columns> WHERE id = :build_id``, made once per set."""
    names = [name for name in columns if name != "build_id"]
    return (
        update(_BUILDS)
        .where(_BUILDS.c.id == bindparam("build_id"))
        .values({name: bindparam(name) for name in names})
    )


def _changes(
    build_id: int, old: tuple | None, key: str, values: tuple, same_key: bool
) -> dict:
    """The new values of a build's changed columns (all when ``old`` is None)."""
    if old is None:
        changed = dict(zip(_BUILD_FIELDS, values, strict=True))
    else:
        changed = {
            name: new
            for name, before, new in zip(_BUILD_FIELDS, old, values, strict=True)
            if before != new
        }
    if not same_key:
        changed["key"] = key
    changed["build_id"] = build_id
    return changed


def _insert_values(snapshot: Snapshot, key: str, values: tuple) -> dict:
    return dict(zip(_BUILD_FIELDS, values, strict=True)) | {
        "source_id": snapshot.source_id,
        "key": key,
        "first_snapshot_id": snapshot.id,
        "last_snapshot_id": None,
        "first_seen": snapshot.taken_at,
        "last_seen": None,
    }


def _close_gone(session, previous_id, cache, seen) -> None:
    """Close the builds of the previous snapshot that this one no longer shows."""
    if previous_id is None:
        return
    seen_ids = {build_id for build_id, _ in seen.values()}
    gone = [build_id for build_id, _ in cache.rows.values() if build_id not in seen_ids]
    for start in range(0, len(gone), 500):
        closing = {"ids": gone[start : start + 500], "closing_id": previous_id}
        session.connection().execute(_CLOSE_BUILDS, closing | {"seen": cache.seen_at})
