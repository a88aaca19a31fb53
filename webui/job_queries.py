"""Job statistics and runs, read from the build rows, for /jobs and /api/builds.

What counts: every build row in the filters is a run, whatever its state; only
builds with a duration (they started and ended) enter the duration statistics.
Rates are shares of the builds that finished with a result: SUCCESS is a
success, a result in ``NEUTRAL_RESULTS`` is neither, any other is a failure.

Percentiles interpolate linearly between the two nearest ranks, as
PostgreSQL's ``percentile_cont``, NumPy's default and ``statistics.quantiles``
with ``method="inclusive"`` do: of ``n`` sorted durations, the p-th percentile
sits at position ``(n - 1) * p``. PostgreSQL computes them; on SQLite, which
has no such function, the durations of each job are sorted here.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import compress
from operator import itemgetter

from sqlalchemy import Float, Select, and_, case, func, literal, or_, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from recorder import export
from recorder.export import BuildFilters, TimeWindow
from recorder.models import Build, Source

SUCCESS = "SUCCESS"
# Results that are no verdict on the change: neither a success nor a failure.
NEUTRAL_RESULTS = ("SKIPPED", "CANCELED", "ABORTED", "DEQUEUED", "RETRY")
PERCENTILES = (0.5, 0.9, 0.95)
# Outcomes, as the codes the database computes (see ``outcome_code``).
OUTCOMES = ("success", "failure", "other", "none")
# More timed runs than this and the chart shows, per outcome and time slot,
# only the fastest and the slowest run.
MAX_CHART_POINTS = 2000
_PERIODS = (
    (timedelta(days=2), "hour", timedelta(hours=1)),
    (timedelta(days=120), "day", timedelta(days=1)),
    (timedelta.max, "week", timedelta(weeks=1)),
)
# Weeks start on Mondays, at midnight UTC.
_MONDAY_S = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` percentile of sorted values, or None when there are none."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def outcome(result: str | None) -> str:
    """``success``, ``failure``, ``other`` (no verdict), or ``none`` (no result)."""
    if result is None:
        return "none"
    if result == SUCCESS:
        return "success"
    return "other" if result in NEUTRAL_RESULTS else "failure"


def outcome_code() -> ColumnElement[int]:
    """The index in ``OUTCOMES`` of a build's outcome, computed by the database."""
    return case(
        (Build.result.is_(None), 3),
        (Build.result == SUCCESS, 0),
        (Build.result.in_(NEUTRAL_RESULTS), 2),
        else_=1,
    )


@dataclass(slots=True)
class Tally:
    """Runs by outcome, and the percentiles of their durations."""

    runs: int = 0
    finished: int = 0
    succeeded: int = 0
    failed: int = 0
    timed: int = 0
    p50_s: float | None = None
    p90_s: float | None = None
    p95_s: float | None = None

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.finished if self.finished else None

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.finished if self.finished else None

    def add(self, codes: Sequence[int]) -> None:
        """Count runs given by their outcome codes."""
        self.runs += len(codes)
        self.succeeded += codes.count(0)
        self.failed += codes.count(1)
        self.finished += len(codes) - codes.count(3)

    def set_durations(self, ordered: Sequence[float]) -> None:
        self.timed = len(ordered)
        self.p50_s, self.p90_s, self.p95_s = (
            percentile(ordered, p) for p in PERCENTILES
        )


@dataclass(slots=True)
class JobStats(Tally):
    """One job's runs in the filters, its durations and waits."""

    job: str = ""
    median_wait_s: float | None = None
    last_run: datetime | None = None


def job_stats(
    session: Session, filters: BuildFilters, window: TimeWindow | None = None
) -> list[JobStats]:
    """Statistics of every job with a run in the filters, by job name."""
    window = window if window is not None else export.resolve_window(session, filters)
    dialect = session.get_bind().dialect.name
    runs = select(
        Build.job,
        Build.result,
        Build.duration_s,
        export.build_time().label("at"),
        _wait_seconds(dialect).label("wait_s"),
    ).where(*export.conditions(session, filters, window))
    runs = runs.cte("runs")
    if dialect == "sqlite":
        # Materialized first, so that SQLite reads only the rows in range
        # instead of walking the whole job index to save a sort.
        runs = runs.prefix_with("MATERIALIZED")
    if dialect == "postgresql":
        fractions = literal(list(PERCENTILES), type_=ARRAY(Float))
        durations = func.percentile_cont(fractions).within_group(runs.c.duration_s)
        waits = func.percentile_cont(0.5).within_group(runs.c.wait_s)
    else:
        durations = func.group_concat(runs.c.duration_s)
        waits = func.group_concat(runs.c.wait_s)
    failed = and_(runs.c.result != SUCCESS, runs.c.result.not_in(NEUTRAL_RESULTS))
    query = (
        select(
            runs.c.job,
            func.count(),
            func.count(runs.c.result),
            func.count().filter(runs.c.result == SUCCESS),
            func.count().filter(failed),
            func.count(runs.c.duration_s),
            func.max(runs.c.at),
            durations,
            waits,
        )
        .group_by(runs.c.job)
        .order_by(runs.c.job)
    )
    return [_job_stats(row, dialect) for row in session.execute(query)]


def _wait_seconds(dialect: str) -> ColumnElement[float]:
    if dialect == "postgresql":
        return export.wait_seconds(dialect)
    # To the millisecond: enough for a median wait, and cheaper than exact.
    return (func.julianday(Build.start_time) - func.julianday(Build.enqueue_time)) * (
        86400.0
    )


def _job_stats(row, dialect: str) -> JobStats:
    job, runs, finished, succeeded, failed, timed, last, durations, waits = row
    stats = JobStats(runs, finished, succeeded, failed, job=job, last_run=last)
    if dialect == "postgresql":
        stats.timed = timed
        if durations is not None:
            stats.p50_s, stats.p90_s, stats.p95_s = durations
        stats.median_wait_s = waits
    else:
        stats.set_durations(_sorted_numbers(durations))
        stats.median_wait_s = percentile(_sorted_numbers(waits), 0.5)
    return stats


def _sorted_numbers(joined: str | None) -> list[float]:
    """The numbers of a ``group_concat``, sorted (SQLite keeps 15 digits)."""
    return sorted(map(float, joined.split(","))) if joined else []


@dataclass(slots=True)
class Period(Tally):
    """The runs of a job in one hour, day or week."""

    start: datetime | None = None


@dataclass(slots=True)
class JobHistory:
    """One job's durations over time: statistics, periods and chart points."""

    stats: JobStats
    period: str = "day"
    period_s: float = 86400.0
    periods: list[Period] = field(default_factory=list)
    # Per outcome: [epoch milliseconds, duration in seconds] of each point.
    points: dict[str, list[list[float]]] = field(default_factory=dict)
    sampled: bool = False


def job_history(
    session: Session, filters: BuildFilters, window: TimeWindow | None = None
) -> JobHistory:
    """Statistics, per-period tallies and chart points of the job in ``filters``.

    Timed runs (they have a duration, hence an end) are read once, in the
    order of their end time, which an index on (job, end_time) gives for
    free: each period is then a slice of them. The few untimed runs (never
    started, or still running) are read apart.
    """
    window = window if window is not None else export.resolve_window(session, filters)
    dialect = session.get_bind().dialect.name
    timed = _rows(
        session,
        select(
            export.epoch_seconds(Build.end_time, dialect),
            Build.duration_s,
            outcome_code(),
        )
        .where(*export.conditions(session, filters, window, ended=True))
        .where(Build.duration_s.is_not(None))
        .order_by(Build.end_time),
    )
    untimed = _rows(
        session,
        select(export.epoch_seconds(export.build_time(), dialect), outcome_code())
        .where(*export.conditions(session, filters, window))
        .where(or_(Build.end_time.is_(None), Build.duration_s.is_(None))),
    )
    history = JobHistory(JobStats(job=filters.job or ""))
    if not timed and not untimed:
        return history
    times, durations, codes = (list(map(itemgetter(i), timed)) for i in range(3))
    untimed_times = list(map(itemgetter(0), untimed))
    untimed_codes = list(map(itemgetter(1), untimed))

    stats = history.stats
    stats.add(codes)
    stats.add(untimed_codes)
    stats.set_durations(sorted(durations))
    first = min(times[:1] + untimed_times)
    last = max(times[-1:] + untimed_times)
    stats.last_run = datetime.fromtimestamp(last, UTC)

    history.period, history.period_s, origin = _period_size(window, first, last)
    count = int((last - origin) // history.period_s) + 1
    starts = [origin + index * history.period_s for index in range(count)]
    history.periods = _periods(starts, times, durations, codes)
    for moment, code in untimed:
        history.periods[max(0, bisect_right(starts, moment) - 1)].add([code])
    history.points, history.sampled = _chart_points(times, durations, codes)
    return history


def _rows(session: Session, query: Select) -> list:
    # Through the Core connection: plain rows, without the ORM's per-row cost.
    return session.connection().execute(query).all()


def _period_size(
    window: TimeWindow, first_s: float, last_s: float
) -> tuple[str, float, float]:
    """The period's name and length, and the start of the first period."""
    since_s = window.since.timestamp() if window.since else first_s
    until_s = window.until.timestamp() if window.until else last_s
    span = timedelta(seconds=until_s - since_s)
    name, length = next((n, size) for limit, n, size in _PERIODS if span <= limit)
    size_s = length.total_seconds()
    origin = _MONDAY_S + (min(first_s, since_s) - _MONDAY_S) // size_s * size_s
    return name, size_s, origin


def _periods(
    starts: list[float], times: list[float], durations: list[float], codes: list[int]
) -> list[Period]:
    """A tally per period of the timed runs: each period a slice of the time order."""
    periods = []
    bounds = [bisect_left(times, start) for start in starts[1:]] + [len(times)]
    lower = 0
    for start, upper in zip(starts, bounds, strict=True):
        period = Period(start=datetime.fromtimestamp(start, UTC))
        period.add(codes[lower:upper])
        period.set_durations(sorted(durations[lower:upper]))
        periods.append(period)
        lower = upper
    return periods


def _chart_points(
    times: list[float], durations: list[float], codes: list[int]
) -> tuple[dict[str, list[list[float]]], bool]:
    """Every timed run as a point; or per slot, the fastest and slowest by outcome."""
    series = {}
    for code, name in enumerate(OUTCOMES[:3]):
        # A timed run without a result (code 3) is drawn with the neutral ones.
        wanted = {code, 3} if name == "other" else {code}
        mask = list(map(wanted.__contains__, codes))
        series[name] = (list(compress(times, mask)), list(compress(durations, mask)))
    if len(times) <= MAX_CHART_POINTS:
        return {
            name: [[t * 1000, d] for t, d in zip(*pair, strict=True)]
            for name, pair in series.items()
        }, False
    slots = MAX_CHART_POINTS // 6
    width = (times[-1] - times[0]) / slots or 1.0
    edges = [times[0] + width * index for index in range(1, slots)]
    return {
        name: _extremes(pair[0], pair[1], edges) for name, pair in series.items()
    }, True


def _extremes(
    times: list[float], durations: list[float], edges: list[float]
) -> list[list[float]]:
    """The fastest and the slowest point between each pair of edges."""
    points, lower = [], 0
    for upper in [bisect_left(times, edge) for edge in edges] + [len(times)]:
        if upper > lower:
            chunk = durations[lower:upper]
            fastest = lower + chunk.index(min(chunk))
            slowest = lower + chunk.index(max(chunk))
            for index in sorted({fastest, slowest}):
                points.append([times[index] * 1000, durations[index]])
        lower = upper
    return points


@dataclass(slots=True)
class Run:
    """One build as the run table and the API show it."""

    id: int
    source: str
    values: dict
    state: str
    last_snapshot_id: int
    build_time: datetime

    @property
    def cursor(self) -> RunCursor:
        return RunCursor(self.build_time, self.id)


@dataclass(frozen=True, slots=True)
class RunCursor:
    """Where a page of runs ends: the runs after it are strictly older."""

    build_time: datetime
    id: int

    def text(self) -> str:
        moment = self.build_time.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return f"{moment},{self.id}"

    @classmethod
    def parse(cls, text: str) -> RunCursor:
        """A cursor from ``text()``; ValueError if it is not one."""
        moment, _, build_id = text.rpartition(",")
        build_time = datetime.fromisoformat(moment)
        if build_time.tzinfo is None:
            raise ValueError("the time of a cursor must say its zone")
        return cls(build_time, int(build_id))


def recent_runs(
    session: Session,
    filters: BuildFilters,
    window: TimeWindow | None = None,
    limit: int = 100,
    before: RunCursor | None = None,
) -> list[Run]:
    """Builds in the filters, newest first (by when they ended or were last seen).

    Builds that ended and builds that did not are read apart, each in the
    order of an index on its time column, and merged: no query sorts every
    build in range, and a page deep in the history costs what the first does.
    """
    window = window if window is not None else export.resolve_window(session, filters)
    dialect = session.get_bind().dialect.name
    sources = export.source_ids(session, filters)
    state = export.state_of_build(export.latest_snapshot_ids(session, sources))
    columns = [
        *export.build_columns(dialect, for_csv=False),
        state.label("state"),
        Build.id,
        Build.last_snapshot_id,
    ]
    parts = []
    for ended, moment in ((True, Build.end_time), (False, Build.last_seen)):
        query = (
            select(*columns, moment.label("build_time"))
            .join(Source, Source.id == Build.source_id)
            .where(*export.conditions(session, filters, window, ended=ended))
            .order_by(moment.desc(), Build.id.desc())
            .limit(limit)
        )
        if before is not None:
            at, build_id = before.build_time, before.id
            query = query.where(
                or_(moment < at, and_(moment == at, Build.id < build_id))
            )
        parts.append(session.execute(query).all())
    newest = heapq.merge(*parts, key=lambda row: (row.build_time, row.id), reverse=True)
    return [_run(row) for row in itertools.islice(newest, limit)]


def _run(row) -> Run:
    mapping = row._mapping
    return Run(
        id=row.id,
        source=mapping["source"],
        values={name: mapping[name] for name in export.CSV_COLUMNS},
        state=row.state,
        last_snapshot_id=row.last_snapshot_id,
        build_time=row.build_time,
    )
