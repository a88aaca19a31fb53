"""Build timings as CSV, and the build filters shared by the job pages and the API.

The web export (``/export/builds.csv``) and ``zuul-status export-csv`` write
the same rows through :func:`csv_chunks`; the CLI imports nothing from Flask.
The database formats every cell (times, booleans, the guard against
spreadsheet formulas), so that Python only hands rows from the cursor to the
``csv`` module, a batch at a time.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, time, timedelta
from typing import BinaryIO

from sqlalchemy import (
    Float,
    Select,
    String,
    and_,
    case,
    cast,
    extract,
    false,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.models import Build, Source
from recorder.store import latest_snapshot

CSV_COLUMNS = (
    "source",
    "pipeline",
    "queue",
    "project",
    "change",
    "ref",
    "branch",
    "job",
    "voting",
    "result",
    "enqueue_time",
    "start_time",
    "end_time",
    "duration_s",
    "wait_s",
    "build_uuid",
    "log_url",
    "first_seen",
    "last_seen",
)
RANGES = {
    "day": timedelta(days=1),
    "week": timedelta(days=7),
    "month": timedelta(days=30),
    "all": None,
}
DEFAULT_RANGE = "week"
TEXT_FILTERS = ("source", "pipeline", "project", "branch", "job", "result")
MAX_FILTER_CHARS = 200
# A cell starting with one of these is a formula to spreadsheets (OWASP, "CSV
# injection"); quoting the cell does not help, a leading apostrophe does.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ROWS_PER_BATCH = 5000
JULIAN_DAY_OF_1970 = 2440587.5


class FilterError(ValueError):
    """A filter that cannot be used; the message says which and why."""


class UnknownSource(FilterError):
    """The filter names a source that was never recorded."""


@dataclass(frozen=True, slots=True)
class BuildFilters:
    """Which builds a page, the API or an export covers; None means any."""

    source: str | None = None
    pipeline: str | None = None
    project: str | None = None
    branch: str | None = None
    job: str | None = None
    result: str | None = None
    range: str | None = DEFAULT_RANGE
    since: datetime | None = None
    until: datetime | None = None
    # ``from`` and ``to`` as the reader wrote them, for permalinks and forms.
    from_text: str | None = None
    to_text: str | None = None

    def query_args(self) -> dict[str, str]:
        """The filters as query string arguments, for permalinks."""
        args = {
            name: value
            for name, value in asdict(self).items()
            if name in TEXT_FILTERS and value is not None
        }
        if self.range is not None:
            args["range"] = self.range
        if self.from_text is not None:
            args["from"] = self.from_text
        if self.to_text is not None:
            args["to"] = self.to_text
        return args

    def file_name(self, today: datetime) -> str:
        """``builds_<filters>_<date>.csv``, with only safe characters."""
        parts = ["builds", *self.query_args().values()]
        parts.append(today.astimezone(UTC).strftime("%Y-%m-%d"))
        name = "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", part) for part in parts)
        return name[:200] + ".csv"


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """The resolved time range of a filter: ``since <= build time < until``."""

    since: datetime | None
    until: datetime | None


def parse_filters(args: Mapping[str, str | None]) -> BuildFilters:
    """Filters from query string arguments (or CLI options of the same names)."""
    values = {}
    for name in TEXT_FILTERS:
        value = (args.get(name) or "").strip()
        if len(value) > MAX_FILTER_CHARS:
            raise FilterError(f"{name!r} is longer than {MAX_FILTER_CHARS} characters")
        values[name] = value or None
    if values["result"] is not None:
        values["result"] = values["result"].upper()

    since = _parse_time(args.get("from"), "from", end_of_day=False)
    until = _parse_time(args.get("to"), "to", end_of_day=True)
    range_name = (args.get("range") or "").strip().lower() or None
    if range_name is not None and range_name not in RANGES:
        choices = ", ".join(RANGES)
        raise FilterError(f"'range' must be one of {choices}, got {range_name!r}")
    # The job pages' form sends a range with every from/to: those win.
    if since or until:
        range_name = None
    if since and until and since >= until:
        raise FilterError("'from' must be before 'to'")
    if range_name is None and not (since or until):
        range_name = DEFAULT_RANGE
    return BuildFilters(
        **values,
        range=range_name,
        since=since,
        until=until,
        from_text=(args.get("from") or "").strip() or None,
        to_text=(args.get("to") or "").strip() or None,
    )


def _parse_time(raw: str | None, name: str, end_of_day: bool) -> datetime | None:
    """An ISO 8601 date or time (UTC unless it says otherwise)."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise FilterError(
            f"{name!r} must be an ISO 8601 date or time such as 2026-05-31 "
            f"or 2026-05-31T12:00Z, got {raw[:40]!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        # A bare date as the end of a range includes that whole day.
        if end_of_day and len(raw) == 10 and moment.time() == time(0):
            moment += timedelta(days=1)
        return moment.astimezone(UTC)
    except OverflowError:
        raise FilterError(
            f"{name!r} is outside the years this tool can show, got {raw[:40]!r}"
        ) from None


def build_time() -> ColumnElement[datetime]:
    """When a build happened: when it ended, or else when it was last seen.

    A build that never ended (still queued or running, skipped, or gone from
    the queues unfinished) has no end time; it is placed where it was last seen.
    """
    return func.coalesce(Build.end_time, Build.last_seen)


def source_ids(session: Session, filters: BuildFilters) -> dict[int, str]:
    """The recorded sources the filters cover, by id."""
    query = select(Source.id, Source.name).order_by(Source.id)
    if filters.source is not None:
        query = query.where(Source.name == filters.source)
    sources = dict(session.execute(query).all())
    if filters.source is not None and not sources:
        raise UnknownSource(f"no source named {filters.source!r}")
    return sources


def newest_time(session: Session, sources: Mapping[int, str]) -> datetime | None:
    """When the newest snapshot of these sources was last taken."""
    times = []
    for source_id in sources:
        snapshot = latest_snapshot(session, source_id, parsed_only=False)
        if snapshot is not None:
            times.append(snapshot.last_taken_at)
    return max(times, default=None)


def resolve_window(session: Session, filters: BuildFilters) -> TimeWindow:
    """The range as times; a relative one ends at the newest snapshot (or now)."""
    if filters.range is None:
        return TimeWindow(filters.since, filters.until)
    length = RANGES[filters.range]
    if length is None:
        return TimeWindow(None, None)
    # Like elapsed times, "the last day" is measured against the recorded
    # data, not the reader's clock: a stopped recorder's history stays visible.
    end = newest_time(session, source_ids(session, filters)) or datetime.now(UTC)
    return TimeWindow(end - length, None)


def conditions(
    session: Session,
    filters: BuildFilters,
    window: TimeWindow | None = None,
    ended: bool | None = None,
) -> list[ColumnElement[bool]]:
    """WHERE conditions on ``builds`` for the filters (the window resolved once).

    ``ended`` True keeps only builds that ended, False only those that did
    not, None both: each part then follows an index of its own time column.
    """
    window = window if window is not None else resolve_window(session, filters)
    where: list[ColumnElement[bool]] = []
    if filters.source is not None:
        where.append(Build.source_id.in_(list(source_ids(session, filters))))
    for name in ("pipeline", "project", "branch", "job", "result"):
        value = getattr(filters, name)
        if value is not None:
            where.append(getattr(Build, name) == value)
    return where + _time_conditions(window, ended)


def _time_conditions(window: TimeWindow, ended: bool | None) -> list:
    """``since <= build_time() < until``, spelt out so that indexes can serve it."""
    finished = [Build.end_time.is_not(None)]
    unfinished = [Build.end_time.is_(None)]
    for bound, before in ((window.since, False), (window.until, True)):
        if bound is not None:
            finished.append(
                Build.end_time < bound if before else Build.end_time >= bound
            )
            unfinished.append(
                Build.last_seen < bound if before else Build.last_seen >= bound
            )
    if ended is True:
        return finished
    if ended is False:
        return unfinished
    if window.since is None and window.until is None:
        return []
    return [or_(and_(*finished), and_(*unfinished))]


def build_columns(dialect: str, for_csv: bool) -> list[ColumnElement]:
    """The CSV columns, labelled; for the CSV as text cells, else typed for JSON.

    Times are formatted by the database in both cases, so that the CSV and
    the API agree to the microsecond.
    """
    text = _spreadsheet_safe if for_csv else (lambda column: column)
    voting = case((Build.voting, "true"), else_="false") if for_csv else Build.voting
    columns = [
        text(Source.name),
        text(Build.pipeline),
        text(Build.queue),
        text(Build.project),
        text(Build.change),
        text(Build.ref),
        text(Build.branch),
        text(Build.job),
        voting,
        text(Build.result),
        iso_z_text(Build.enqueue_time, dialect),
        iso_z_text(Build.start_time, dialect),
        iso_z_text(Build.end_time, dialect),
        Build.duration_s,
        wait_seconds(dialect),
        text(Build.uuid),
        # Already http(s) only (store.safe_log_url): it cannot start a formula.
        Build.log_url,
        iso_z_text(Build.first_seen, dialect),
        iso_z_text(Build.last_seen, dialect),
    ]
    return [
        column.label(name) for column, name in zip(columns, CSV_COLUMNS, strict=True)
    ]


def csv_select(session: Session, filters: BuildFilters) -> Select:
    """The export query: one row of formatted, spreadsheet-safe cells per build."""
    dialect = session.get_bind().dialect.name
    return (
        select(*build_columns(dialect, for_csv=True))
        .join(Source, Source.id == Build.source_id)
        .where(*conditions(session, filters))
        # The order in which the recorder first saw the builds: it needs no
        # sort, so that the first rows stream at once whatever the total.
        .order_by(Build.id)
    )


def csv_chunks(
    session: Session, filters: BuildFilters, rows_per_batch: int = ROWS_PER_BATCH
) -> Iterator[str]:
    """The CSV text: the header, then one chunk per batch of rows read.

    The query runs before the header is yielded, so that a caller who takes
    the first chunk has seen any error before it sends a response.
    """
    # stream_results: a server-side cursor on PostgreSQL, so that neither the
    # driver nor SQLAlchemy holds more than one batch of rows in memory. The
    # Core connection hands out plain rows, without the ORM's per-row work.
    result = session.connection().execute(
        csv_select(session, filters),
        execution_options={"stream_results": True, "yield_per": rows_per_batch},
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield _drain(buffer)
    for rows in result.partitions():
        writer.writerows(rows)
        yield _drain(buffer)


def export_csv(database_url: str, filters: BuildFilters, stream: BinaryIO) -> int:
    """Write the CSV of the filtered builds, in UTF-8, to a binary stream.

    Returns how many builds were written.
    """
    engine = make_engine(database_url)
    lines = 0
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            for chunk in csv_chunks(session, filters):
                stream.write(chunk.encode())
                lines += chunk.count("\r\n")
    finally:
        engine.dispose()
    return lines - 1


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _spreadsheet_safe(column) -> ColumnElement[str]:
    """The text, behind an apostrophe when a spreadsheet would run it as a formula."""
    first = func.substr(column, 1, 1)
    return case(
        (first.in_(FORMULA_STARTS), literal("'", String) + column), else_=column
    )


def iso_z_text(column, dialect: str) -> ColumnElement[str]:
    """A stored UTC time as ``2026-05-31T12:00:00.000000Z``, formatted in SQL."""
    if dialect == "postgresql":
        return func.to_char(column, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    # SQLAlchemy stores SQLite times as text, "2026-05-31 12:00:00.000000".
    return func.replace(column, " ", "T").op("||")("Z")


def epoch_seconds(column, dialect: str) -> ColumnElement[float]:
    """Seconds since 1970 of a stored UTC time (to the millisecond on SQLite)."""
    if dialect == "postgresql":
        return cast(extract("epoch", column), Float)
    return (func.julianday(column) - JULIAN_DAY_OF_1970) * 86400.0


def wait_seconds(dialect: str) -> ColumnElement[float]:
    """Seconds from the item's enqueue time to the build's start, exactly."""
    if dialect == "postgresql":
        return cast(extract("epoch", Build.start_time - Build.enqueue_time), Float)
    # julianday() rounds to the millisecond: whole seconds plus the fraction
    # as stored ("...:SS.ffffff") keep the microseconds.
    start, enqueue = Build.start_time, Build.enqueue_time
    whole = cast(func.strftime("%s", start), Float) - cast(
        func.strftime("%s", enqueue), Float
    )
    fraction = cast(func.substr(start, 20), Float) - cast(
        func.substr(enqueue, 20), Float
    )
    # Both times are whole microseconds: rounding drops the float noise.
    return func.round(whole + fraction, 6)


def state_of_build(latest_ids: Mapping[int, int]) -> ColumnElement[str]:
    """``finished``; ``running`` or ``waiting`` in the latest snapshot; or ``unknown``.

    A build is ``unknown`` when it left the queues before a result was seen.
    """
    in_latest = or_(
        false(),
        *(
            and_(Build.source_id == source_id, Build.last_snapshot_id == snapshot_id)
            for source_id, snapshot_id in latest_ids.items()
        ),
    )
    return case(
        (Build.result.is_not(None), "finished"),
        (in_latest, Build.state),
        else_="unknown",
    )


def latest_snapshot_ids(session: Session, sources: Mapping[int, str]) -> dict:
    """The latest parsed snapshot of each source, whose builds are current."""
    latest = {}
    for source_id in sources:
        snapshot = latest_snapshot(session, source_id)
        if snapshot is not None:
            latest[source_id] = snapshot.id
    return latest
