"""What the history pages read: snapshots by time, counts, polls and builds.

Every query here seeks on an existing index: snapshots, polls and pipeline
counts by (source, time); builds are found by change (see ``change_builds``).
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta

import orjson
from sqlalchemy import BigInteger, Row, case, cast, extract, func, or_, select
from sqlalchemy.orm import Session

from recorder.models import (
    Build,
    PipelineCount,
    Poll,
    Snapshot,
    build_last_seen,
    build_last_snapshot_id,
)
from recorder.parser import Item, ParseError, parse_document
from recorder.store import read_body
from webui import story, timeline
from webui.render import http_url

# Zuul's clock is trusted to be at most this far from ours; farther is noise.
MAX_CLOCK_OFFSET_S = 3600
# Bodies opened for one change story at most: the last sighting of the most
# recent visits, for the item's link, owner and failing reasons.
MAX_STORY_BODIES = 4

# Build columns the change story needs, without the ones it never shows.
_STORY_COLUMNS = (
    Build.id,
    Build.pipeline,
    Build.queue,
    Build.project,
    Build.change,
    Build.job,
    Build.voting,
    Build.state,
    Build.result,
    Build.enqueue_time,
    Build.start_time,
    Build.end_time,
    Build.duration_s,
    Build.log_url,
    Build.uuid,
    Build.first_snapshot_id,
    build_last_snapshot_id().label("last_snapshot_id"),
    Build.first_seen,
    build_last_seen().label("last_seen"),
)


def snapshot_at(session: Session, source_id: int, moment: datetime) -> Snapshot | None:
    """The parsed snapshot in force at ``moment``: the last taken at or before it."""
    return session.scalar(
        select(Snapshot)
        .where(
            Snapshot.source_id == source_id,
            Snapshot.taken_at <= moment,
            Snapshot.parse_error.is_(None),
        )
        .order_by(Snapshot.taken_at.desc(), Snapshot.id.desc())
        .limit(1)
    )


def first_snapshot(session: Session, source_id: int) -> Snapshot | None:
    return session.scalar(
        select(Snapshot)
        .where(Snapshot.source_id == source_id)
        .order_by(Snapshot.taken_at, Snapshot.id)
        .limit(1)
    )


def data_bounds(
    session: Session, source_id: int
) -> tuple[datetime | None, datetime | None]:
    """When the source's first snapshot was taken, and the latest sign of life."""
    first = session.scalar(
        select(Snapshot.taken_at)
        .where(Snapshot.source_id == source_id)
        .order_by(Snapshot.taken_at)
        .limit(1)
    )
    last_snapshot = session.scalar(
        select(Snapshot.last_taken_at)
        .where(Snapshot.source_id == source_id)
        .order_by(Snapshot.taken_at.desc())
        .limit(1)
    )
    last_poll = session.scalar(
        select(Poll.started_at)
        .where(Poll.source_id == source_id)
        .order_by(Poll.started_at.desc())
        .limit(1)
    )
    known = [moment for moment in (last_snapshot, last_poll) if moment is not None]
    return first, max(known) if known else None


def timeline_data(
    session: Session, source_id: int, moment: datetime
) -> timeline.TimelineData:
    """Counts and failed polls of a source in the day around ``moment``.

    Times come back as whole seconds after the window's start, computed by the
    database, so that a day of snapshots and polls reads as small integers;
    counts are read only for the last snapshot of each bin.
    """
    first_taken_at, data_until = data_bounds(session, source_id)
    start, end = timeline.window(moment, data_until)
    in_force = session.scalar(
        select(Snapshot.taken_at)
        .where(Snapshot.source_id == source_id, Snapshot.taken_at <= start)
        .order_by(Snapshot.taken_at.desc())
        .limit(1)
    )
    connection = session.connection()
    seconds = _seconds_since(session, Snapshot.taken_at, start)
    snapshots = connection.execute(
        select(Snapshot.id, seconds)
        .where(
            Snapshot.source_id == source_id,
            Snapshot.taken_at >= (in_force or start),
            Snapshot.taken_at < end,
        )
        .order_by(Snapshot.taken_at, Snapshot.id)
    ).all()
    last_ids = timeline.last_per_bin(snapshots)
    last_counts = connection.execute(
        select(
            PipelineCount.snapshot_id, PipelineCount.pipeline, PipelineCount.items
        ).where(PipelineCount.snapshot_id.in_(sorted(set(last_ids.values()))))
    ).all()
    return timeline.TimelineData(
        start=start,
        end=end,
        last_ids=last_ids,
        last_counts=last_counts,
        polls=_polls(session, source_id, start, end),
        first_taken_at=first_taken_at,
        data_until=data_until,
    )


def _polls(session: Session, source_id: int, start: datetime, end: datetime):
    """(started_at, outcome, error) of the polls; exact times only for bad ones."""
    bad = Poll.outcome.in_(timeline.GAP_OUTCOMES)
    rows = (
        session.connection()
        .execute(
            select(
                _seconds_since(session, Poll.started_at, start),
                Poll.outcome,
                case((bad, Poll.started_at)),
                case((bad, Poll.error)),
            )
            .where(
                Poll.source_id == source_id,
                Poll.started_at >= start,
                Poll.started_at < end,
            )
            .order_by(Poll.started_at, Poll.id)
        )
        .all()
    )
    return [
        (started_at or start + timedelta(seconds=seconds), outcome, error)
        for seconds, outcome, started_at, error in rows
    ]


def _seconds_since(session: Session, column, start: datetime):
    """Whole seconds from ``start`` to ``column``, computed by the database."""
    start_s = int(start.timestamp())
    if session.get_bind().dialect.name == "sqlite":
        # SQLAlchemy stores SQLite times as UTC text, which strftime reads.
        return cast(func.strftime("%s", column), BigInteger) - start_s
    # BIGINT: epoch seconds pass 2**31 in 2038, and a reader may ask for then.
    return cast(func.floor(extract("epoch", column)), BigInteger) - start_s


def change_builds(session: Session, source_id: int, change: str) -> list[Row]:
    """Every build of a change (``number`` or ``number,patchset``), oldest first."""
    if "," in change:
        matches = Build.change == change
    else:
        escaped = change.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        matches = or_(
            Build.change == change, Build.change.like(f"{escaped},%", escape="\\")
        )
    return session.execute(
        select(*_STORY_COLUMNS)
        .where(Build.source_id == source_id, matches)
        .order_by(Build.first_seen, Build.id)
    ).all()


def parsed_snapshot_times(
    session: Session, source_id: int, start: datetime, end: datetime | None
) -> list[Row]:
    """(id, taken_at) of the parsed snapshots from ``start`` to ``end`` inclusive."""
    query = select(Snapshot.id, Snapshot.taken_at).where(
        Snapshot.source_id == source_id,
        Snapshot.taken_at >= start,
        Snapshot.parse_error.is_(None),
    )
    if end is not None:
        query = query.where(Snapshot.taken_at <= end)
    return session.execute(query.order_by(Snapshot.taken_at, Snapshot.id)).all()


def next_parsed_snapshot(
    session: Session, source_id: int, after: datetime
) -> Row | None:
    """(id, taken_at) of the first parsed snapshot taken after ``after``."""
    return session.execute(
        select(Snapshot.id, Snapshot.taken_at)
        .where(
            Snapshot.source_id == source_id,
            Snapshot.taken_at > after,
            Snapshot.parse_error.is_(None),
        )
        .order_by(Snapshot.taken_at, Snapshot.id)
        .limit(1)
    ).first()


def change_story(
    session: Session, source_id: int, change: str, until: datetime | None = None
) -> story.ChangeStory:
    """The story of a change from its builds, and the bodies of a few snapshots."""
    grouped = story.visits(change_builds(session, source_id, change), until)
    if not grouped:
        return story.ChangeStory(change, [])
    details, offsets = {}, []
    for rows in grouped[-MAX_STORY_BODIES:]:
        snapshot_id, _ = story.last_sighting(rows)
        found, seen_offsets = _item_in_snapshot(session, snapshot_id, rows[0])
        details[id(rows)] = found
        offsets.extend(seen_offsets)
    seen: set[tuple[int, datetime]] = set()
    for rows in grouped:
        # Only the snapshots of each visit, and the one after it, are needed:
        # a change seen again weeks later does not read the weeks between.
        start = min(row.first_seen for row in rows)
        end = story.last_sighting(rows)[1]
        found = parsed_snapshot_times(session, source_id, start, end)
        seen.update((row.id, row.taken_at) for row in found)
        following = next_parsed_snapshot(session, source_id, end)
        if following is not None:
            seen.add((following.id, following.taken_at))
    times = sorted(seen, key=lambda pair: (pair[1], pair[0]))
    offset = timedelta(seconds=statistics.median(offsets)) if offsets else timedelta()
    told = story.tell(change, grouped, story.SnapshotClock(times, offset), until)
    for visit, rows in zip(told.visits, grouped, strict=True):
        visit.details = details.get(id(rows))
    return told


def _item_in_snapshot(
    session: Session, snapshot_id: int, build: Row
) -> tuple[story.ItemDetails | None, list[float]]:
    """A visit's item as seen in one snapshot, and Zuul's clock offsets there.

    Only the matching item is parsed; the offsets (Zuul's "now", from the
    start and elapsed times of running builds, minus when we took the
    snapshot) say how to compare Zuul's times with ours.
    """
    snapshot = session.get(Snapshot, snapshot_id)
    if snapshot is None or snapshot.parse_error is not None:
        return None, []
    document = orjson.loads(read_body(session, snapshot))
    taken_s = snapshot.taken_at.timestamp()
    offsets, found = [], None
    for pipeline in _list(document.get("pipelines")):
        for queue in _list(pipeline.get("change_queues")):
            for head in _list(queue.get("heads")):
                for raw in _list(head):
                    offsets.extend(_running_offsets(raw, taken_s))
                    if found is None and pipeline.get("name") == build.pipeline:
                        found = _matching_item(raw, build)
    if found is None:
        return None, offsets
    return _details(found), offsets


def _matching_item(raw: object, build: Row) -> Item | None:
    if not isinstance(raw, dict):
        return None
    refs = raw.get("refs") if isinstance(raw.get("refs"), list) else [raw]
    if not any(isinstance(r, dict) and r.get("id") == build.change for r in refs):
        return None
    document = {"pipelines": [{"name": "", "change_queues": [{"heads": [[raw]]}]}]}
    try:
        item = next(iter(parse_document(document).pipelines[0].items))
    except (ParseError, StopIteration):
        return None
    enqueued, expected = item.enqueue_time, build.enqueue_time
    if enqueued and expected and abs((enqueued - expected).total_seconds()) > 1:
        return None
    return item


def _details(item: Item) -> story.ItemDetails:
    return story.ItemDetails(
        href=http_url(item.ref.url),
        owner=item.ref.owner,
        failing_reasons=item.failing_reasons,
    )


def _running_offsets(raw: object, taken_s: float) -> list[float]:
    """Zuul's clock minus ours, from each running build of an item."""
    offsets = []
    jobs = raw.get("jobs") if isinstance(raw, dict) else None
    for job in _list(jobs):
        if not isinstance(job, dict) or job.get("result") not in (None, "null"):
            continue
        start, elapsed = job.get("start_time"), job.get("elapsed_time")
        if type(start) in (int, float) and type(elapsed) is int and start > 0:
            offset = start + elapsed / 1000 - taken_s
            if abs(offset) < MAX_CLOCK_OFFSET_S:
                offsets.append(offset)
    return offsets


def _list(value: object) -> list:
    return value if isinstance(value, list) else []
