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

    def query_args(self) -> dict[str, str]:
        """The filters as query string arguments, for permalinks."""
        args = {
            name: value
            for name, value in asdict(self).items()
            if name in TEXT_FILTERS and value is not None
        }
        if self.range is not None:
            args["range"] = self.range
        if self.since is not None:
            args["from"] = _iso_z(self.since)
        if self.until is not None:
            args["to"] = _iso_z(self.until)
        return args

    def file_name(self, today: datetime) -> str:
        """``builds_<filters>_<date>.csv``, with only safe characters."""
        parts = ["builds"]
        parts += [value for name, value in self.query_args().items()]
        parts.append(today.astimezone(UTC).strftime("%Y-%m-%d"))
        name = "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", part) for part in parts)
        return name[:200] + ".csv"


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """The resolved time range of a filter: ``since <= build time < until``."""

    since: datetime | None
    until: datetime | None


def parse_filters(args: Mapping[str, str], default_range: str = DEFAULT_RANGE):
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
    if range_name is not None and (since or until):
        raise FilterError("give either 'range' or 'from'/'to', not both")
    if since and until and since >= until:
        raise FilterError("'from' must be before 'to'")
    if range_name is None and not (since or until):
        range_name = default_range
    return BuildFilters(**values, range=range_name, since=since, until=until)


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
    # A bare date as the end of a range includes that whole day.
    if end_of_day and len(raw) == 10 and moment.time() == time(0):
        moment += timedelta(days=1)
    return moment.astimezone(UTC)


def build_time() -> ColumnElement[datetime]:
    """When a build happened: when it ended, or else when it was last seen.

    A build that never ended (still queued or running, skipped, or gone from
    the queues unfinished) has no end time; it is placed where it was last seen.
    """
    return func.coalesce(Build.end_time, Build.last_seen)


def _iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def source_ids(session: Session, filters: BuildFilters) -> dict[int, str]:
    """The recorded sources the filters cover, by id."""
    query = select(Source.id, Source.name).order_by(Source.id)
    if filters.source is not None:
        query = query.where(Source.name == filters.source)
    sources = dict(session.execute(query).tuples())
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
    session: Session, filters: BuildFilters, window: TimeWindow | None = None
) -> list[ColumnElement[bool]]:
    """WHERE conditions on ``builds`` for the filters (the window resolved once)."""
    window = window if window is not None else resolve_window(session, filters)
    where: list[ColumnElement[bool]] = []
    if filters.source is not None:
        where.append(Build.source_id.in_(list(source_ids(session, filters))))
    for name in ("pipeline", "project", "branch", "job", "result"):
        value = getattr(filters, name)
        if value is not None:
            where.append(getattr(Build, name) == value)
    if window.since is not None:
        where.append(build_time() >= window.since)
    if window.until is not None:
        where.append(build_time() < window.until)
    return where


def csv_select(session: Session, filters: BuildFilters) -> Select:
    """The export query: one row of formatted, spreadsheet-safe cells per build."""
    dialect = session.get_bind().dialect.name
    text_cell = _spreadsheet_safe
    columns = [
        text_cell(Source.name),
        text_cell(Build.pipeline),
        text_cell(Build.queue),
        text_cell(Build.project),
        text_cell(Build.change),
        text_cell(Build.ref),
        text_cell(Build.branch),
        text_cell(Build.job),
        case((Build.voting, "true"), else_="false"),
        text_cell(Build.result),
        iso_z_text(Build.enqueue_time, dialect),
        iso_z_text(Build.start_time, dialect),
        iso_z_text(Build.end_time, dialect),
        Build.duration_s,
        wait_seconds(dialect),
        text_cell(Build.uuid),
        text_cell(Build.log_url),
        iso_z_text(Build.first_seen, dialect),
        iso_z_text(Build.last_seen, dialect),
    ]
    labelled = [
        column.label(name) for column, name in zip(columns, CSV_COLUMNS, strict=True)
    ]
    return (
        select(*labelled)
        .join(Source, Source.id == Build.source_id)
        .where(*conditions(session, filters))
        # The order in which the recorder first saw the builds: it needs no
        # sort, so that the first rows stream at once whatever the total.
        .order_by(Build.id)
    )


def csv_chunks(
    session: Session, filters: BuildFilters, rows_per_batch: int = ROWS_PER_BATCH
) -> Iterator[str]:
    """The CSV text, header first, then one chunk per batch of rows read."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield _drain(buffer)
    # stream_results: a server-side cursor on PostgreSQL, so that neither the
    # driver nor SQLAlchemy holds more than one batch of rows in memory.
    result = session.execute(
        csv_select(session, filters),
        execution_options={"stream_results": True, "yield_per": rows_per_batch},
    )
    for rows in result.partitions():
        writer.writerows(rows)
        yield _drain(buffer)


def write_csv(session: Session, filters: BuildFilters, stream) -> None:
    """Write the CSV of the filtered builds to a text stream."""
    for chunk in csv_chunks(session, filters):
        stream.write(chunk)


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
    """Seconds since 1970 of a stored UTC time, as a float, to the microsecond."""
    if dialect == "postgresql":
        return cast(extract("epoch", column), Float)
    whole = cast(func.strftime("%s", column), Float)
    return whole + cast(func.substr(column, 20), Float)


def wait_seconds(dialect: str) -> ColumnElement[float]:
    """Seconds from the item's enqueue time to the build's start."""
    if dialect == "postgresql":
        return cast(extract("epoch", Build.start_time - Build.enqueue_time), Float)
    waited = epoch_seconds(Build.start_time, dialect) - epoch_seconds(
        Build.enqueue_time, dialect
    )
    # Both times are whole microseconds: rounding drops the float noise.
    return func.round(waited, 6)


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
