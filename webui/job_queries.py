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
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import compress
from operator import itemgetter
from typing import TypeVar

import orjson
from sqlalchemy import (
    Float,
    Select,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE

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
T = TypeVar("T")
# The period of the per-period table and charts, by the time from a job's
# first run in the filters to its last (not by the range asked for): the
# shortest whose periods over that span are at most about 150. Only periods
# with runs are listed. Fixed lengths, in seconds, or calendar months.
_DAY_S = 86400.0
_YEAR_S = 366 * _DAY_S
PERIODS = (
    # (longest span of runs in seconds, name, seconds or months per period)
    (2 * _DAY_S, "hour", 3600.0),
    (120 * _DAY_S, "day", _DAY_S),
    (2 * _YEAR_S, "week", 7 * _DAY_S),
    (10 * _YEAR_S, "month", 1),
    (30 * _YEAR_S, "quarter", 3),
    (150 * _YEAR_S, "year", 12),
    (1500 * _YEAR_S, "decade", 120),
    (float("inf"), "century", 1200),
)
# Periods start at midnight UTC; weeks on Mondays (1 January of year 1 was one),
# months, quarters and years on the first of a month.
_MONDAY_S = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST_S = datetime.max.replace(tzinfo=UTC).timestamp()


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
    columns = [Build.job, Build.result, Build.duration_s]
    wait = _wait_seconds(dialect).label("wait_s")
    if dialect == "sqlite" and _job_index_serves(filters, window):
        # The builds that ended are read job after job from the job index,
        # which holds every column needed; the few that did not, by time.
        # Materialized, so that SQLite reads only the rows in range instead
        # of walking the whole job index to save a sort.
        jobs = _every_job()
        ended = (
            select(*columns, Build.end_time.label("at"), wait)
            .select_from(jobs)
            .join(Build, Build.job == jobs.c.job)
            .where(*export.conditions(session, filters, window, ended=True))
        )
        unfinished = select(*columns, export.build_time().label("at"), wait).where(
            *export.conditions(session, filters, window, ended=False)
        )
        runs = union_all(ended, unfinished).cte("runs").prefix_with("MATERIALIZED")
    else:
        where = export.conditions(session, filters, window)
        runs = select(*columns, export.build_time().label("at"), wait).where(*where)
        runs = runs.cte("runs")
        if dialect == "sqlite":
            runs = runs.prefix_with("MATERIALIZED")
    if dialect == "postgresql":
        sort_in_memory(session)
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


def _job_index_serves(filters: BuildFilters, window: TimeWindow) -> bool:
    """Whether the job index alone can tell which ended builds are in the filters.

    A filter on a column outside it (source, pipeline, project, branch)
    would look every build in range up in the table, in job order: the time
    index then serves better, and so does a table scan when the range is all.
    """
    outside = (filters.source, filters.pipeline, filters.project, filters.branch)
    return window.since is not None and all(value is None for value in outside)


def _every_job() -> CTE:
    """Every job name, each found by one seek in the job index (a skip scan)."""
    jobs = select(func.min(Build.job).label("job")).cte("jobs", recursive=True)
    following = select(func.min(Build.job)).where(Build.job > jobs.c.job)
    return jobs.union_all(
        select(following.scalar_subquery()).where(jobs.c.job.is_not(None))
    )


def sort_in_memory(session: Session) -> None:
    """Let PostgreSQL sort a job's runs in memory, for this transaction only.

    Percentiles sort every duration in range (100,000 for a busy job over a
    quarter): the default 4 MB of work_mem spilled them to disk.
    """
    session.execute(text("SET LOCAL work_mem = '64MB'"))


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
    if not joined:
        return []
    try:
        # A JSON array of them: orjson reads numbers several times faster
        # than float() one by one (a busy week holds 100,000 of them).
        return sorted(map(float, orjson.loads(f"[{joined}]")))
    except orjson.JSONDecodeError:  # SQLite writes infinities as Inf
        return sorted(map(float, joined.split(",")))


@dataclass(slots=True)
class Period(Tally):
    """The runs of a job in one period (an hour, a day... see ``PERIODS``)."""

    # Epoch seconds: the period is ``start_s <= time < end_s``.
    start_s: float = 0.0
    end_s: float = 0.0

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_s, UTC)

    @property
    def middle_s(self) -> float:
        return (self.start_s + self.end_s) / 2


@dataclass(slots=True)
class JobHistory:
    """One job's durations over time: statistics, periods and chart points.

    ``periods`` holds only the periods with runs, oldest first.
    """

    stats: JobStats
    period: str = "day"
    periods: list[Period] = field(default_factory=list)
    # Per outcome: [epoch milliseconds, duration in seconds] of each point.
    points: dict[str, list[list[float]]] = field(default_factory=dict)
    sampled: bool = False


def job_history(
    session: Session, filters: BuildFilters, window: TimeWindow | None = None
) -> JobHistory:
    """Statistics, per-period tallies and chart points of the job in ``filters``.

    PostgreSQL computes them (exact percentiles per period and overall, the
    chart's extremes per slot) and returns a few hundred rows. SQLite has no
    percentile function and sorts slowly: the runs are read once, in the
    order of their end time (from the covering job index), and each period
    is a slice of them, sorted in Python.
    """
    window = window if window is not None else export.resolve_window(session, filters)
    history = JobHistory(JobStats(job=filters.job or ""))
    if session.get_bind().dialect.name == "postgresql":
        sort_in_memory(session)
        _history_in_sql(session, filters, window, history)
    else:
        _history_in_python(session, filters, window, history)
    return history


def _history_in_python(
    session: Session, filters: BuildFilters, window: TimeWindow, history: JobHistory
) -> None:
    ended = _driver_rows(
        session,
        select(
            export.epoch_seconds(Build.end_time, "sqlite"),
            Build.duration_s,
            outcome_code(),
        )
        .where(*export.conditions(session, filters, window, ended=True))
        .order_by(Build.end_time),
    )
    timed = [row for row in ended if row[1] is not None]
    untimed = [(at, code) for at, duration, code in ended if duration is None]
    untimed += _driver_rows(
        session,
        select(
            export.epoch_seconds(export.build_time(), "sqlite"), outcome_code()
        ).where(*export.conditions(session, filters, window, ended=False)),
    )
    if not timed and not untimed:
        return
    times, durations, codes = (list(map(itemgetter(i), timed)) for i in range(3))
    untimed_times = list(map(itemgetter(0), untimed))

    stats = history.stats
    stats.add(codes)
    stats.add(list(map(itemgetter(1), untimed)))
    first = min(times[:1] + untimed_times)
    last = max(times[-1:] + untimed_times)
    stats.last_run = datetime.fromtimestamp(last, UTC)

    history.period, bounds = period_bounds(first, last)
    periods, ordered = _periods(bounds, times, durations, codes)
    # Sorted slices, one after the other: the sort merges them in one pass.
    stats.set_durations(sorted(itertools.chain.from_iterable(ordered)))
    for moment, code in untimed:
        periods[max(0, bisect_right(bounds, moment, hi=len(periods)) - 1)].add([code])
    history.periods = [period for period in periods if period.runs]
    history.points, history.sampled = _chart_points(times, durations, codes)


def _driver_rows(session: Session, query: Select) -> list[tuple]:
    """Rows as the driver's tuples: no per-row work by SQLAlchemy."""
    result = session.connection().execute(query)
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


def _history_in_sql(
    session: Session, filters: BuildFilters, window: TimeWindow, history: JobHistory
) -> None:
    """The history computed by PostgreSQL: a few queries, a few hundred rows.

    Runs that ended are read from the covering job index alone (by end time);
    the few that did not are read apart, by when they were last seen.
    """
    parts = [
        (Build.end_time, export.conditions(session, filters, window, ended=True)),
        (export.build_time(), export.conditions(session, filters, window, ended=False)),
    ]
    spans = [
        session.execute(select(func.min(moment), func.max(moment)).where(*where)).one()
        for moment, where in parts
    ]
    moments = [moment.timestamp() for span in spans for moment in span if moment]
    if not moments:
        return
    first, last = min(moments), max(moments)
    history.period, bounds = period_bounds(first, last)
    periods = [Period(start_s=s, end_s=e) for s, e in itertools.pairwise(bounds)]
    # The index of each run's period: how many period starts after the first
    # are at or before it (width_bucket counts them by a binary search).
    starts = literal(bounds[1:-1] or [_LATEST_S], type_=ARRAY(Float))

    timed = and_(Build.end_time.is_not(None), Build.duration_s.is_not(None))
    chart_where = [*parts[0][1], timed]
    # The chart reads the same runs again: on a connection of its own, its
    # query runs beside the tallies (each in its own server process). It
    # assumes many runs; with few, it is cheap and asked again below.
    sampled = _beside(
        session, lambda other: _chart_points_in_sql(other, chart_where, _MANY)
    )
    for moment, where in parts:
        at = export.epoch_seconds(moment, "postgresql")
        period = func.width_bucket(at, starts)
        tallies = session.execute(
            select(period, *_tally_columns(timed))
            .where(*where)
            .group_by(func.grouping_sets(tuple_(period), tuple_()))
        )
        for index, *tally in tallies:
            target = history.stats if index is None else periods[index]
            _add_tally(target, *tally)
    history.periods = [period for period in periods if period.runs]
    history.stats.last_run = datetime.fromtimestamp(last, UTC)
    if history.stats.timed > MAX_CHART_POINTS:
        history.points, history.sampled = sampled.result()
    else:
        sampled.result()  # let it finish: its connection goes back to the pool
        history.points, history.sampled = _chart_points_in_sql(
            session, chart_where, history.stats.timed
        )


_MANY = MAX_CHART_POINTS + 1
_helpers: list[ThreadPoolExecutor] = []


def _beside(session: Session, work: Callable[[Session], T]) -> Future[T]:
    """``work`` on a session of its own, in a helper thread; here if not possible."""
    bind = session.get_bind()
    if not isinstance(bind, Engine):
        done: Future[T] = Future()
        done.set_result(work(session))
        return done
    if not _helpers:  # made on first use: after the fork of a uWSGI worker
        _helpers.append(ThreadPoolExecutor(4, thread_name_prefix="zuul-status-sql"))

    def run() -> T:
        with Session(bind) as other:
            return work(other)

    return _helpers[0].submit(run)


def _tally_columns(timed: ColumnElement[bool]) -> list[ColumnElement]:
    failed = and_(Build.result != SUCCESS, Build.result.not_in(NEUTRAL_RESULTS))
    fractions = literal(list(PERCENTILES), type_=ARRAY(Float))
    return [
        func.count(),
        func.count(Build.result),
        func.count().filter(Build.result == SUCCESS),
        func.count().filter(failed),
        func.count().filter(timed),
        func.percentile_cont(fractions).within_group(Build.duration_s).filter(timed),
    ]


def _add_tally(target: Tally, runs, finished, succeeded, failed, timed, cuts) -> None:
    """Add counts; the percentiles come from the one part with timed runs."""
    target.runs += runs
    target.finished += finished
    target.succeeded += succeeded
    target.failed += failed
    target.timed += timed
    if cuts is not None:
        target.p50_s, target.p90_s, target.p95_s = cuts


def _chart_points_in_sql(
    session: Session, where: list, timed_runs: int
) -> tuple[dict[str, list[list[float]]], bool]:
    """Every timed run; or per slot and outcome, the fastest and the slowest."""
    at = export.epoch_seconds(Build.end_time, "postgresql")
    # Failures apart; runs without a verdict or a result with the neutral ones.
    series = case(
        (Build.result == SUCCESS, 0),
        (Build.result.in_(NEUTRAL_RESULTS), 2),
        (Build.result.is_(None), 2),
        else_=1,
    )
    points: dict[str, list[list[float]]] = {name: [] for name in OUTCOMES[:3]}
    if not timed_runs:
        return points, False
    if timed_runs <= MAX_CHART_POINTS:
        rows = session.execute(
            select(series, at, Build.duration_s).where(*where).order_by(Build.end_time)
        )
        for code, moment, duration in rows:
            points[OUTCOMES[code]].append([moment * 1000, duration])
        return points, False
    first, last = session.execute(
        select(func.min(Build.end_time), func.max(Build.end_time)).where(*where)
    ).one()
    if first is None:  # asked before the runs were counted, and there are none
        return points, False
    slots = MAX_CHART_POINTS // 6
    width = (last - first).total_seconds() / slots or 1.0
    slot = func.least(func.floor((at - first.timestamp()) / width), slots - 1)
    # OFFSET 0 keeps the planner from guessing a group per run (from end_time's
    # statistics) and sorting them all instead of hashing a thousand groups.
    runs = (
        select(
            slot.label("slot"),
            series.label("series"),
            # Arrays compare element by element: the earliest of equal
            # durations wins, as in the time order.
            array((Build.duration_s, at)).label("fastest"),
            array((Build.duration_s, -at)).label("slowest"),
        )
        .where(*where)
        .offset(0)
        .subquery()
    )
    rows = session.execute(
        select(runs.c.series, func.min(runs.c.fastest), func.max(runs.c.slowest))
        .group_by(runs.c.slot, runs.c.series)
        .order_by(runs.c.slot, runs.c.series)
    )
    for code, (fast_s, fast_at), (slow_s, slow_at) in rows:
        extremes = {(fast_at, fast_s), (-slow_at, slow_s)}
        points[OUTCOMES[code]] += [[moment * 1000, d] for moment, d in sorted(extremes)]
    return points, True


def period_bounds(first_s: float, last_s: float) -> tuple[str, list[float]]:
    """The period for runs from ``first_s`` to ``last_s``, and the periods' bounds.

    The bounds, in epoch seconds, are the start of each period from the one
    holding ``first_s`` to the one holding ``last_s``, then the end of that
    last one: at most about 150 periods, whatever the span.
    """
    name, size = next(
        (name, size) for longest, name, size in PERIODS if last_s - first_s <= longest
    )
    if name in ("hour", "day", "week"):
        start = _MONDAY_S + (first_s - _MONDAY_S) // size * size
        count = int((last_s - start) // size) + 1
        return name, [start + index * size for index in range(count + 1)]
    # Calendar months, counted from a year 0: decades start in years ending
    # in 0; the first, like the calendar, in year 1.
    first = datetime.fromtimestamp(first_s, UTC)
    index = (first.year * 12 + first.month - 1) // size * size
    bounds = []
    while True:
        year, month = divmod(index, 12)
        if year > 9999:
            bounds.append(_LATEST_S)  # the calendar ends within the last period
            break
        bounds.append(datetime(max(year, 1), month + 1, 1, tzinfo=UTC).timestamp())
        if bounds[-1] > last_s:
            break
        index += size
    return name, bounds


def _periods(
    bounds: list[float], times: list[float], durations: list[float], codes: list[int]
) -> tuple[list[Period], list[list[float]]]:
    """A tally per period of the timed runs, and each period's sorted durations."""
    periods, ordered = [], []
    uppers = [bisect_left(times, start) for start in bounds[1:-1]] + [len(times)]
    lower = 0
    for start, end, upper in zip(bounds[:-1], bounds[1:], uppers, strict=True):
        period = Period(start_s=start, end_s=end)
        period.add(codes[lower:upper])
        ordered.append(sorted(durations[lower:upper]))
        period.set_durations(ordered[-1])
        periods.append(period)
        lower = upper
    return periods, ordered


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
        try:
            build_time = build_time.astimezone(UTC)
        except OverflowError:
            raise ValueError("the time of a cursor is outside the calendar") from None
        number = int(build_id)
        if not 0 <= number < 2**63:  # what a database id can be
            raise ValueError("the id of a cursor is out of range")
        return cls(build_time, number)


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
    state = export.state_of_build()
    columns = [
        *export.build_columns(dialect, for_csv=False),
        state.label("state"),
        Build.id,
        export.last_snapshot_id().label("last_snapshot_id"),
    ]
    parts = []
    for ended, moment in ((True, Build.end_time), (False, export.last_seen())):
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
