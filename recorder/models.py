"""The database schema: sources, polls, snapshots and builds."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

# Named constraints, so that Alembic's batch mode can alter them on SQLite.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """A UTC time, stored naive on every backend and read back timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: times must be UTC-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Source(Base):
    """One Zuul status URL that is polled."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Snapshot(Base):
    """A status body as received, compressed, with when it was first taken."""

    __tablename__ = "snapshots"
    __table_args__ = (
        # The latest snapshot of a source, and /at/<time>, seek on this.
        Index("ix_snapshots_source_taken", "source_id", "taken_at"),
        # Storage chains go by id: the body stored last, the latest full body.
        # Without this, both sorted every snapshot of the source each time.
        Index("ix_snapshots_source_id", "source_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The latest poll that returned this same body (identical bodies are stored
    # once: their later polls point here).
    last_taken_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sha256: Mapped[str] = mapped_column(String(64))
    raw_size: Mapped[int] = mapped_column(BigInteger)
    encoding: Mapped[str] = mapped_column(String(20))
    base_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id"))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    parse_error: Mapped[str | None] = mapped_column(Text)
    zuul_version: Mapped[str | None] = mapped_column(Text)

    source: Mapped[Source] = relationship()


class Poll(Base):
    """One attempt to fetch a source, successful or not."""

    __tablename__ = "polls"
    __table_args__ = (
        # Failed polls shown as gaps, and the health page, read polls by time.
        Index("ix_polls_source_started", "source_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    # stored (new snapshot), unchanged (same body as the latest snapshot),
    # unparsed (body kept but not Zuul status) or failed (no body).
    outcome: Mapped[str] = mapped_column(String(20))
    http_status: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    snapshot_id: Mapped[int | None] = mapped_column(
        ForeignKey("snapshots.id", ondelete="SET NULL")
    )


class Build(Base):
    """One run of a job (or a job still waiting for one), updated as seen again."""

    __tablename__ = "builds"
    __table_args__ = (
        UniqueConstraint("source_id", "key", name="uq_builds_source_key"),
        # /jobs/<name> reads one job's runs by time, and /jobs every job's
        # runs, job by job: durations, results and waits come from the index.
        Index(
            "ix_builds_job_end",
            "job",
            "end_time",
            "duration_s",
            "result",
            "enqueue_time",
            "start_time",
        ),
        # The time range of /jobs and /api/builds, and the API's newest first.
        Index("ix_builds_end_seen", "end_time", "last_seen"),
        # /changes/<change> finds the builds of one change.
        Index("ix_builds_source_change", "source_id", "change"),
        # Rows still visible in the latest snapshot are found by this.
        Index("ix_builds_source_last_snapshot", "source_id", "last_snapshot_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    # "u:<build uuid>", or "w:<pipeline>|<item>|<enqueue ms>|<job>" before a
    # build exists; the waiting row is re-keyed when its uuid appears. Keys
    # longer than 200 characters are replaced by a hash (store.build_key).
    key: Mapped[str] = mapped_column(Text)
    pipeline: Mapped[str] = mapped_column(Text)
    queue: Mapped[str | None] = mapped_column(Text)
    project: Mapped[str | None] = mapped_column(Text)
    change: Mapped[str | None] = mapped_column(Text)
    ref: Mapped[str | None] = mapped_column(Text)
    branch: Mapped[str | None] = mapped_column(Text)
    job: Mapped[str] = mapped_column(Text)
    voting: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[str] = mapped_column(String(20))
    result: Mapped[str | None] = mapped_column(Text)
    enqueue_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    log_url: Mapped[str | None] = mapped_column(Text)
    uuid: Mapped[str | None] = mapped_column(Text)
    # Plain ids, not foreign keys: retention may prune those snapshots, and
    # build rows must outlive them. The times say when, whatever is pruned.
    first_snapshot_id: Mapped[int] = mapped_column(Integer)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    # The last snapshot that showed the build, set when a snapshot no longer
    # does. NULL while the source's latest parsed snapshot still shows it: a
    # thousand visible builds then cost no write per snapshot. Read them
    # through ``build_last_snapshot_id()`` and ``build_last_seen()``.
    last_snapshot_id: Mapped[int | None] = mapped_column(Integer)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PipelineCount(Base):
    """Items and jobs by state in one pipeline of one snapshot (for timelines)."""

    __tablename__ = "pipeline_counts"
    __table_args__ = (
        # The timeline strip reads a source's counts over a time range.
        Index("ix_pipeline_counts_source_taken", "source_id", "taken_at"),
    )

    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True
    )
    pipeline: Mapped[str] = mapped_column(Text, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime)
    items: Mapped[int] = mapped_column(Integer)
    running: Mapped[int] = mapped_column(Integer)
    waiting: Mapped[int] = mapped_column(Integer)
    finished: Mapped[int] = mapped_column(Integer)


def _latest_parsed(column):
    """``column`` of the build's source's latest parsed snapshot (correlated)."""
    return (
        select(column)
        .where(Snapshot.source_id == Build.source_id, Snapshot.parse_error.is_(None))
        .order_by(Snapshot.taken_at.desc(), Snapshot.id.desc())
        .limit(1)
        .correlate(Build)
        .scalar_subquery()
    )


def build_last_snapshot_id() -> ColumnElement[int]:
    """The last snapshot that showed a build, whether it is still visible or not."""
    return func.coalesce(Build.last_snapshot_id, _latest_parsed(Snapshot.id))


def build_last_seen() -> ColumnElement[datetime]:
    """When a build was last seen, whether it is still visible or not.

    Both databases evaluate COALESCE lazily, so the subquery runs only for the
    builds still visible, a few thousand rows at most.
    """
    return func.coalesce(Build.last_seen, _latest_parsed(Snapshot.taken_at))
