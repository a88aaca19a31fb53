"""Build timings as CSV, and the build filters shared by the job pages and the API.

The web export (``/export/builds.csv``) and ``zuul-status export-csv`` write
the same bytes through :func:`csv_chunks`; the CLI imports nothing from Flask.
The database formats every cell (times, booleans, the guard against
spreadsheet formulas) and, for speed, most of the CSV itself: PostgreSQL
through ``COPY``, SQLite a line per row. Either way the bytes are those
Python's ``csv`` module writes from :func:`csv_select`'s rows.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from operator import itemgetter
from typing import BinaryIO

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    Numeric,
    Select,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.models import (
    Build,
    Source,
    UTCDateTime,
    build_last_seen,
    build_last_snapshot_id,
)
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
CSV_HEADER = (",".join(CSV_COLUMNS) + "\r\n").encode()
JULIAN_DAY_OF_1970 = 2440587.5
# Written into the SQL: as a parameter, date_part() would parse it for every row.
EPOCH = literal_column("'epoch'")
EARLIEST = datetime.min.replace(tzinfo=UTC)


class FilterError(ValueError):
    """A filter that cannot be used; the message says which and why."""


class UnknownSource(FilterError):
    """The filter names a source that was never recorded."""


class RangeConflict(FilterError):
    """Both a relative range and a from/to: which one is meant cannot be told."""


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
    # The zone a from or to without an offset was read in, when not UTC: the
    # permalinks carry it, so that they mean the same without the reader's cookie.
    zone: str | None = None

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
        if self.zone is not None:
            args["tz"] = self.zone
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


def parse_filters(
    args: Mapping[str, str | None],
    zone: tzinfo = UTC,
    range_yields: bool = False,
) -> BuildFilters:
    """Filters from query string arguments (or CLI options of the same names).

    A ``from`` or ``to`` without an offset is a time in ``zone`` (the
    reader's on the web, UTC on the command line). A relative ``range`` with
    a from or to is a :class:`RangeConflict`, unless ``range_yields``: the
    job pages' form sends its range menu with every from and to, which win.
    """
    values = {}
    for name in TEXT_FILTERS:
        value = (args.get(name) or "").strip()
        if len(value) > MAX_FILTER_CHARS:
            raise FilterError(f"{name!r} is longer than {MAX_FILTER_CHARS} characters")
        values[name] = value or None
    if values["result"] is not None:
        values["result"] = values["result"].upper()

    since, since_naive = _parse_time(args.get("from"), "from", False, zone)
    until, until_naive = _parse_time(args.get("to"), "to", True, zone)
    range_name = (args.get("range") or "").strip().lower() or None
    if range_name is not None and range_name not in RANGES:
        choices = ", ".join(RANGES)
        raise FilterError(f"'range' must be one of {choices}, got {range_name!r}")
    if (since or until) and range_name is not None:
        if not range_yields:
            raise RangeConflict(
                f"give either 'range' or 'from'/'to', not both: 'range={range_name}' "
                "and a from or to would each choose the builds"
            )
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
        zone=_zone_key(zone) if since_naive or until_naive else None,
    )


def _zone_key(zone: tzinfo) -> str | None:
    """The IANA name of a zone other than UTC (None for UTC)."""
    name = getattr(zone, "key", None)
    return None if zone is UTC or name in (None, "UTC") else name


def _parse_time(
    raw: str | None, name: str, end_of_day: bool, zone: tzinfo
) -> tuple[datetime | None, bool]:
    """An ISO 8601 date or time as UTC, and whether it had no offset.

    One without an offset is a time in ``zone``; a bare date as the end of a
    range is the end of that day there.
    """
    raw = (raw or "").strip()
    if not raw:
        return None, False
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise FilterError(
            f"{name!r} must be an ISO 8601 date or time such as 2026-05-31 "
            f"or 2026-05-31T12:00Z, got {raw[:40]!r}"
        ) from None
    naive = moment.tzinfo is None
    if naive:
        moment = moment.replace(tzinfo=zone)
    try:
        # A bare date as the end of a range includes that whole day (wall
        # clock arithmetic: the next midnight in the zone, whatever its DST).
        if end_of_day and len(raw) == 10 and moment.time() == time(0):
            if moment.date() == date.max:  # "until the end of time"
                return datetime.max.replace(tzinfo=UTC), naive
            moment += timedelta(days=1)
        return moment.astimezone(UTC), naive
    except OverflowError:
        raise FilterError(
            f"{name!r} is outside the years this tool can show, got {raw[:40]!r}"
        ) from None


# How builds.last_seen and builds.last_snapshot_id are kept is the recorder's
# business: every page, the API and the export read them through these.


def last_seen() -> ColumnElement[datetime]:
    """When a build was last seen: the one place that reads ``builds.last_seen``."""
    return build_last_seen()


def last_snapshot_id() -> ColumnElement[int]:
    """The last snapshot that showed a build (reads ``builds.last_snapshot_id``)."""
    return build_last_snapshot_id()


def still_visible() -> ColumnElement[bool]:
    """Whether the source's latest snapshot still shows the build."""
    return Build.last_snapshot_id.is_(None)


def _last_seen_between(window: TimeWindow) -> list[ColumnElement[bool]]:
    """``since <= last_seen() < until`` as OR branches that indexes can serve.

    ``builds.last_seen`` is NULL while the latest snapshot shows the build:
    those few rows are a branch of their own, so that the others are found
    by the (end_time, last_seen) index instead of by a scan.
    """
    gone = [Build.last_seen.is_not(None)]
    # Both columns are NULL for these: the (end_time, last_seen) index finds them.
    visible = [Build.last_seen.is_(None), still_visible()]
    for bound, before in ((window.since, False), (window.until, True)):
        if bound is not None:
            gone.append(Build.last_seen < bound if before else Build.last_seen >= bound)
            visible.append(last_seen() < bound if before else last_seen() >= bound)
    return [and_(*gone), and_(*visible)]


def build_time() -> ColumnElement[datetime]:
    """When a build happened: when it ended, or else when it was last seen.

    A build that never ended (still queued or running, skipped, or gone from
    the queues unfinished) has no end time; it is placed where it was last seen.
    """
    return func.coalesce(Build.end_time, last_seen())


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
    # A snapshot taken in the first days of the calendar: from its start.
    return TimeWindow(end - length if end - EARLIEST > length else EARLIEST, None)


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
    """``since <= build_time() < until``, spelt out so that indexes can serve it.

    One flat OR of index-friendly branches: SQLite and PostgreSQL then read
    each branch from its index instead of scanning every build.
    """
    finished = [Build.end_time.is_not(None)]
    for bound, before in ((window.since, False), (window.until, True)):
        if bound is not None:
            finished.append(
                Build.end_time < bound if before else Build.end_time >= bound
            )
    unfinished = [
        and_(Build.end_time.is_(None), branch) for branch in _last_seen_between(window)
    ]
    unbounded = window.since is None and window.until is None
    if ended is True:
        return finished
    if ended is False:
        # Unbounded, no OR: SQLite then reads a job's unfinished builds from
        # the job index rather than every job's from the time index.
        return [Build.end_time.is_(None)] if unbounded else [or_(*unfinished)]
    if unbounded:
        return []
    return [or_(and_(*finished), *unfinished)]


def build_columns(dialect: str, for_csv: bool) -> list[ColumnElement]:
    """The CSV columns, labelled; for the CSV as text cells, else typed for JSON.

    Times are formatted by the database in both cases, so that the CSV and
    the API agree to the microsecond. On PostgreSQL every CSV cell is text as
    Python's ``csv`` module would write it, so that ``COPY`` can write the file.
    """
    text, number = (lambda column: column), (lambda column: column)
    if for_csv:
        text = _pg_cell if dialect == "postgresql" else _spreadsheet_safe
    if for_csv and dialect == "postgresql":
        number = _python_float_text
    voting = case((Build.voting, "true"), else_="false") if for_csv else Build.voting
    # Already http(s) only (store.safe_log_url): it cannot start a formula.
    log_url = func.nullif(Build.log_url, "") if for_csv else Build.log_url
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
        number(Build.duration_s),
        number(wait_seconds(dialect)),
        text(Build.uuid),
        log_url,
        iso_z_text(Build.first_seen, dialect),
        iso_z_text(last_seen(), dialect),
    ]
    return [
        column.label(name) for column, name in zip(columns, CSV_COLUMNS, strict=True)
    ]


def csv_select(session: Session, filters: BuildFilters) -> Select:
    """The export query: one row of formatted, spreadsheet-safe cells per build."""
    dialect = session.get_bind().dialect.name
    return _in_export_order(
        select(*build_columns(dialect, for_csv=True)), session, filters
    )


def _in_export_order(query: Select, session: Session, filters: BuildFilters) -> Select:
    return (
        query.join(Source, Source.id == Build.source_id)
        .where(*conditions(session, filters))
        # The order in which the recorder first saw the builds: it needs no
        # sort, so that the first rows stream at once whatever the total.
        .order_by(Build.id)
    )


def csv_chunks(
    session: Session, filters: BuildFilters, rows_per_batch: int = ROWS_PER_BATCH
) -> Iterator[bytes]:
    """The CSV in UTF-8: the header, then one chunk per batch of rows read.

    The query runs before the header is yielded, so that a caller who takes
    the first chunk has seen any error before it sends a response.
    """
    for chunk, _rows in _counted_chunks(session, filters, rows_per_batch):
        yield chunk


def export_csv(database_url: str, filters: BuildFilters, stream: BinaryIO) -> int:
    """Write the CSV of the filtered builds, in UTF-8, to a binary stream.

    Returns how many builds were written.
    """
    engine = make_engine(database_url)
    written = 0
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            for chunk, rows in _counted_chunks(session, filters, ROWS_PER_BATCH):
                stream.write(chunk)
                written += rows
    finally:
        engine.dispose()
    return written


def _counted_chunks(
    session: Session, filters: BuildFilters, rows_per_batch: int
) -> Iterator[tuple[bytes, int]]:
    """Each chunk of the CSV with the number of builds in it (none in the header)."""
    if session.get_bind().dialect.name == "postgresql":
        return _copied_chunks(session, filters, rows_per_batch)
    return _line_chunks(session, filters, rows_per_batch)


def _copied_chunks(
    session: Session, filters: BuildFilters, rows_per_batch: int
) -> Iterator[tuple[bytes, int]]:
    """PostgreSQL writes the CSV itself (``COPY ... TO STDOUT``); rows are relayed.

    COPY ends rows with a bare newline and sends one row per message: each
    row's newline becomes the CRLF that the ``csv`` module (and RFC 4180) use.
    """
    query = csv_select(session, filters)
    compiled = query.compile(
        dialect=session.get_bind().dialect,
        compile_kwargs={"render_postcompile": True},
    )
    params = {name: _driver_value(value) for name, value in compiled.params.items()}
    statement = f"COPY ({compiled}) TO STDOUT WITH (FORMAT csv)"
    driver = session.connection().connection.driver_connection
    with driver.cursor() as cursor:
        # The text of floats must be the shortest that reads back the same.
        cursor.execute("SET LOCAL extra_float_digits = 1")
        with cursor.copy(statement, params) as copy:
            yield CSV_HEADER, 0
            rows = []
            for row in copy:
                rows.append(row[:-1])
                if len(rows) == rows_per_batch:
                    yield b"\r\n".join(rows) + b"\r\n", len(rows)
                    rows = []
            if rows:
                yield b"\r\n".join(rows) + b"\r\n", len(rows)


def _driver_value(value):
    """A bound value as the models would hand it to the driver (UTC times, naive)."""
    if isinstance(value, datetime):
        return UTCDateTime().process_bind_param(value, None)
    return value


def _line_chunks(
    session: Session, filters: BuildFilters, rows_per_batch: int
) -> Iterator[tuple[bytes, int]]:
    """SQLite writes each CSV line but the numbers; Python checks a batch at once.

    The ``csv`` module costs more than the query: SQLite joins the cells of a
    row into one text and Python only adds the two numbers (``repr`` of the
    floats, as ``csv`` writes them). Quotes are added by SQLite around a
    change (``123,4``) only; a batch is then correct if it holds no other
    comma, quote or line break, which one count of those bytes proves. A batch
    that fails the count (a job name with a comma, say) is written again by
    the ``csv`` module from :func:`csv_select`, in the same transaction.
    """
    result = session.connection().execute(
        _in_export_order(select(*_sqlite_line_columns()), session, filters)
    )
    # The driver's cursor: rows as plain tuples, without SQLAlchemy's per-row work.
    cursor = result.cursor
    yield CSV_HEADER, 0
    while rows := cursor.fetchmany(rows_per_batch):
        chunk = "".join(map(_LINE.__mod__, rows)).encode()
        quoted = sum(map(itemgetter(1), rows))
        # Per row: 18 commas between cells, CR and LF; per quoted change: its
        # comma and two quotes. Any other is inside a cell that needs quoting.
        expected = len(rows) * 20 + quoted * 3
        if len(chunk) - len(chunk.translate(None, b'",\r\n')) != expected:
            chunk = _csv_module_chunk(session, filters, rows[0][0], rows[-1][0])
        yield chunk, len(rows)
    result.close()


# The id and the quoted-change flag are not printed ("%.0s").
_LINE = "%.0s%.0s%s%s,%s%s\r\n"


def _sqlite_line_columns() -> list[ColumnElement]:
    """id, change quoted or not, text up to end_time, duration, wait, the rest."""
    safe = _spreadsheet_safe
    has_comma = func.instr(Build.change, ",") > 0
    change = case((has_comma, '"' + safe(Build.change) + '"'), else_=safe(Build.change))
    head = [
        safe(Source.name),
        safe(Build.pipeline),
        safe(Build.queue),
        safe(Build.project),
        change,
        safe(Build.ref),
        safe(Build.branch),
        safe(Build.job),
        case((Build.voting, "true"), else_="false"),
        safe(Build.result),
        iso_z_text(Build.enqueue_time, "sqlite"),
        iso_z_text(Build.start_time, "sqlite"),
        iso_z_text(Build.end_time, "sqlite"),
    ]
    tail = [
        safe(Build.uuid),
        Build.log_url,
        iso_z_text(Build.first_seen, "sqlite"),
        iso_z_text(last_seen(), "sqlite"),
    ]
    # printf() writes NULL as an empty cell.
    return [
        Build.id,
        func.ifnull(has_comma, 0),
        func.printf("%s," * len(head), *head),
        func.ifnull(Build.duration_s, ""),
        func.ifnull(wait_seconds("sqlite"), ""),
        func.printf(",%s" * len(tail), *tail),
    ]


def _csv_module_chunk(
    session: Session, filters: BuildFilters, first_id: int, last_id: int
) -> bytes:
    """The builds from ``first_id`` to ``last_id`` written by the ``csv`` module."""
    query = csv_select(session, filters).where(Build.id.between(first_id, last_id))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(
        session.connection().execute(query)
    )
    return buffer.getvalue().encode()


def _spreadsheet_safe(column, dialect: str = "sqlite") -> ColumnElement[str]:
    """The text, behind an apostrophe when a spreadsheet would run it as a formula."""
    # Every formula start sorts before "A" bytewise: most cells are told apart
    # by that one comparison, without a function call.
    bytewise = column.collate("C") if dialect == "postgresql" else column
    first = func.substr(column, 1, 1)
    return case(
        (
            and_(bytewise < "A", first.in_(FORMULA_STARTS)),
            literal("'", String) + column,
        ),
        else_=column,
    )


def _pg_cell(column) -> ColumnElement[str]:
    """A spreadsheet-safe cell; an empty text as NULL (COPY would quote it)."""
    return func.nullif(_spreadsheet_safe(column, "postgresql"), "")


def _python_float_text(number) -> ColumnElement[str]:
    """A float8 as Python's ``repr`` writes it, for COPY to match the ``csv`` module.

    PostgreSQL prints the same shortest digits; it drops ``.0`` from whole
    numbers, switches to exponents from 1e15 instead of 1e16, and spells
    NaN and infinities its own way.
    """
    whole = number == func.trunc(number)
    size = func.abs(number)
    text = cast(number, String)
    return case(
        (and_(~whole, size < 1e15), text),
        (~whole, cast(cast(text, Numeric), String)),
        (size < 1e15, text + ".0"),
        (size < 1e16, cast(cast(number, BigInteger), String) + ".0"),
        (number == cast(literal("NaN"), Float), "nan"),
        (number == cast(literal("Infinity"), Float), "inf"),
        (number == cast(literal("-Infinity"), Float), "-inf"),
        else_=text,
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
        # date_part() is a float at once; extract() a numeric, many times slower.
        return func.date_part(EPOCH, column)
    return (func.julianday(column) - JULIAN_DAY_OF_1970) * 86400.0


def wait_seconds(dialect: str) -> ColumnElement[float]:
    """Seconds from the item's enqueue time to the build's start, exactly."""
    if dialect == "postgresql":
        return func.date_part(EPOCH, Build.start_time - Build.enqueue_time)
    # Whole microseconds, counted exactly, then divided once: the float is the
    # one nearest the exact value, as PostgreSQL's. julianday() and
    # strftime() round the seconds to the millisecond (27.9999 s reads as 28),
    # so they only see the text up to the seconds.
    start, enqueue = Build.start_time, Build.enqueue_time
    days = func.julianday(func.substr(start, 1, 19)) - func.julianday(
        func.substr(enqueue, 1, 19)
    )
    micros = cast(func.substr(start, 21, 6), Integer) - cast(
        func.substr(enqueue, 21, 6), Integer
    )
    return (func.round(days * 86400.0) * 1_000_000 + micros) / 1_000_000.0


def state_of_build() -> ColumnElement[str]:
    """``finished``; ``running`` or ``waiting`` in the latest snapshot; or ``unknown``.

    A build is ``unknown`` when it left the queues before a result was seen.
    """
    return case(
        (Build.result.is_not(None), "finished"),
        (still_visible(), Build.state),
        else_="unknown",
    )
