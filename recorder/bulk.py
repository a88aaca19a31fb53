"""Bulk work on stored history: importing saved bodies and rebuilding derived rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, select
from tqdm import tqdm

from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.models import Build, PipelineCount, Snapshot, Source
from recorder.parser import ParseError, parse_status
from recorder.settings import ConfigError, Settings
from recorder.store import (
    BuildCache,
    build_rows,
    get_or_create_source,
    read_body,
    store_body,
    store_counts,
    update_builds,
)

log = logging.getLogger(__name__)


@dataclass
class ImportSummary:
    stored: int = 0
    duplicates: int = 0
    # Files stored as received but not read as Zuul status, with the reason.
    unparsed: list[tuple[str, str]] = field(default_factory=list)
    # Files not stored at all, with the reason.
    failures: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.stored} stored, {self.duplicates} duplicates, "
            f"{len(self.unparsed)} kept unparsed, {len(self.failures)} failed"
        )


def import_files(
    settings: Settings,
    source_name: str,
    paths: list[Path],
    taken_at: datetime | None = None,
) -> ImportSummary:
    """Store each file as a snapshot of ``source_name``, oldest first."""
    try:
        source_settings = settings.source(source_name)
        url, web_root = source_settings.url, source_settings.zuul_web_root
    except ConfigError:
        url, web_root = f"import:{source_name}", None
    sessions = make_sessionmaker(make_engine(settings.database_url, writer=True))
    summary = ImportSummary()
    dated = sorted((taken_at or _mtime(path), str(path), path) for path in paths)
    for when, name, path in tqdm(dated, desc="import", unit="file", disable=None):
        try:
            body = path.read_bytes()
        except OSError as error:
            summary.failures.append((name, error.strerror or str(error)))
            continue
        with session_scope(sessions) as session:
            source = get_or_create_source(session, source_name, url)
            outcome = _import_one(session, source, body, when, web_root)
        _count(summary, outcome, name)
    return summary


def _import_one(session, source, body: bytes, when: datetime, web_root) -> str:
    from recorder.codec import sha256_hex

    duplicate = session.scalar(
        select(Snapshot.id).where(
            Snapshot.source_id == source.id,
            Snapshot.sha256 == sha256_hex(body),
            Snapshot.taken_at == when,
        )
    )
    if duplicate is not None:
        return "duplicate"
    return store_body(session, source, body, when, web_root).outcome


def _count(summary: ImportSummary, outcome: str, name: str) -> None:
    if outcome == "stored":
        summary.stored += 1
    elif outcome in ("duplicate", "unchanged"):
        summary.duplicates += 1
    else:
        summary.unparsed.append((name, "not Zuul status; body kept unparsed"))


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
    for source in sources:
        snapshots += _reindex_source(settings, sessions, source)
    return f"reindexed {snapshots} snapshots of {len(sources)} source(s)"


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
