"""Retention: thin out old snapshots by the configured policy."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from recorder import codec
from recorder.chain import CHAIN_LENGTH
from recorder.models import PipelineCount, Poll, Snapshot, Source
from recorder.settings import RetentionSettings
from recorder.store import latest_snapshot

log = logging.getLogger(__name__)


@dataclass
class PruneReport:
    """What a prune removed, or would remove."""

    examined: int = 0
    removed: int = 0
    reencoded: int = 0
    bytes_freed: int = 0

    def line(self, dry_run: bool = False) -> str:
        verb = "would remove" if dry_run else "removed"
        return (
            f"{verb} {self.removed} of {self.examined} snapshots "
            f"({self.bytes_freed / 1e6:.1f} MB of stored bodies); "
            f"{self.reencoded} kept snapshots re-encoded against kept bases"
        )


def bucket_of(
    taken_at: datetime, now: datetime, policy: RetentionSettings
) -> str | None:
    """The density bucket a snapshot falls in: None keeps it, else one per bucket."""
    age = now - taken_at
    if age <= timedelta(days=policy.keep_all_days):
        return None
    if age <= timedelta(days=policy.hourly_days):
        return taken_at.strftime("h%Y-%m-%dT%H")
    if policy.daily_days and age > timedelta(days=policy.daily_days):
        return "drop"
    return taken_at.strftime("d%Y-%m-%d")


def snapshots_to_remove(
    rows: list[tuple[int, datetime]],
    now: datetime,
    policy: RetentionSettings,
) -> set[int]:
    """Ids to remove from ``(id, taken_at)`` rows, oldest first.

    The first snapshot of each bucket is kept, and the latest snapshot always.
    """
    keep, seen_buckets = set(), set()
    for snapshot_id, taken_at in rows:
        bucket = bucket_of(taken_at, now, policy)
        if bucket is None or (bucket != "drop" and bucket not in seen_buckets):
            keep.add(snapshot_id)
            seen_buckets.add(bucket)
    if rows:
        keep.add(rows[-1][0])
    return {snapshot_id for snapshot_id, _ in rows} - keep


def prune(
    session: Session,
    policy: RetentionSettings,
    now: datetime | None = None,
    dry_run: bool = False,
) -> PruneReport:
    """Remove the snapshots the policy does not keep, for every source."""
    now = now or datetime.now(UTC)
    report = PruneReport()
    for source_id in session.scalars(select(Source.id)):
        rows = session.execute(
            select(Snapshot.id, Snapshot.taken_at)
            .where(Snapshot.source_id == source_id)
            .order_by(Snapshot.taken_at, Snapshot.id)
        ).all()
        remove = snapshots_to_remove([tuple(r) for r in rows], now, policy)
        # The builds still visible take their "last seen" from this one.
        latest = latest_snapshot(session, source_id)
        if latest is not None:
            remove.discard(latest.id)
        report.examined += len(rows)
        report.removed += len(remove)
        report.bytes_freed += _stored_bytes(session, remove)
        if not dry_run and remove:
            report.reencoded += _rechain(session, source_id, remove)
            _remove(session, remove)
    return report


def _stored_bytes(session: Session, ids: set[int]) -> int:
    total = 0
    for chunk in _chunks(sorted(ids)):
        total += session.scalar(
            select(func.coalesce(func.sum(func.length(Snapshot.body)), 0)).where(
                Snapshot.id.in_(chunk)
            )
        )
    return total


def _rechain(session: Session, source_id: int, remove: set[int]) -> int:
    """Re-encode the kept snapshots whose base is removed, so none needs one.

    Such a body becomes a delta against the kept body before it, or a full
    body where its chain would otherwise grow past ``CHAIN_LENGTH``. Bodies
    are decoded in order, one chain step at a time, a batch of rows at once.
    """
    start = session.scalar(
        select(func.max(Snapshot.id)).where(
            Snapshot.source_id == source_id,
            Snapshot.encoding == codec.FULL,
            Snapshot.id < min(remove),
        )
    )
    ids = session.scalars(
        select(Snapshot.id)
        .where(Snapshot.source_id == source_id, Snapshot.id >= (start or 0))
        .order_by(Snapshot.id)
    ).all()
    state, reencoded = _ChainState(), 0
    for chunk in _chunks(ids, 200):
        rows = session.execute(
            select(Snapshot.id, Snapshot.encoding, Snapshot.base_id, Snapshot.body)
            .where(Snapshot.id.in_(chunk))
            .order_by(Snapshot.id)
        ).all()
        changes = [c for c in (state.step(row, row.id in remove) for row in rows) if c]
        for change in changes:
            snapshot_id = change.pop("id")
            session.execute(
                update(Snapshot).where(Snapshot.id == snapshot_id).values(**change)
            )
        reencoded += len(changes)
    return reencoded


class _ChainState:
    """Walks a source's snapshots in order, decoding and re-encoding as needed."""

    def __init__(self) -> None:
        self.bodies: dict[int, bytes] = {}
        self.kept: tuple[int, bytes] | None = None
        self.depth = 0

    def step(self, row, removed: bool) -> dict | None:
        body = codec.decompress(row.encoding, row.body, self.bodies.get(row.base_id))
        self.bodies = {row.id: body}
        if self.kept:
            self.bodies[self.kept[0]] = self.kept[1]
        if removed:
            return None
        base_kept = row.base_id is None or (self.kept and row.base_id == self.kept[0])
        change = None
        if row.encoding == codec.FULL:
            self.depth = 0
        elif base_kept and self.depth + 1 < CHAIN_LENGTH:
            self.depth += 1
        elif self.kept is None or self.depth + 1 >= CHAIN_LENGTH:
            change, self.depth = _encoded(row.id, body, None), 0
        else:
            change, self.depth = _encoded(row.id, body, self.kept), self.depth + 1
        self.kept = (row.id, body)
        return change


def _encoded(snapshot_id: int, body: bytes, base: tuple[int, bytes] | None) -> dict:
    if base is None:
        return {
            "id": snapshot_id,
            "encoding": codec.FULL,
            "base_id": None,
            "body": codec.compress_full(body),
        }
    return {
        "id": snapshot_id,
        "encoding": codec.DELTA,
        "base_id": base[0],
        "body": codec.compress_delta(body, base[1]),
    }


def _remove(session: Session, ids: set[int]) -> None:
    """Delete snapshots and their counts; polls keep their row, without the link.

    Newest first, so that no removed delta is left pointing at a removed base.
    """
    for chunk in _chunks(sorted(ids, reverse=True)):
        session.execute(
            update(Poll).where(Poll.snapshot_id.in_(chunk)).values(snapshot_id=None)
        )
        session.execute(
            delete(PipelineCount).where(PipelineCount.snapshot_id.in_(chunk))
        )
        session.execute(delete(Snapshot).where(Snapshot.id.in_(chunk)))


def vacuum(engine: Engine) -> bool:
    """Give freed pages back to the file system; True if done (SQLite only)."""
    if engine.dialect.name != "sqlite":
        return False
    # VACUUM cannot run inside a transaction: use the driver connection,
    # which runs in autocommit mode (see recorder.db).
    connection = engine.raw_connection()
    try:
        connection.driver_connection.execute("VACUUM")
    finally:
        connection.close()
    return True


def _chunks(ids: list[int], size: int = 500):
    """Slices of ``ids``, so no statement binds more parameters than allowed."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
