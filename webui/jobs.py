"""Job pages, the builds API and the CSV export: parse the filters, query, render."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from sqlalchemy import select
from werkzeug.exceptions import BadRequest, NotFound

from recorder import export
from recorder.db import session_scope
from recorder.export import BuildFilters, FilterError, UnknownSource
from recorder.models import Source
from webui import handle_error, job_queries, render, zones
from webui.views import _int_arg, _session

jobs = Blueprint("jobs", __name__)

# Sort keys of the /jobs table: how to read each column from a JobStats.
SORT_KEYS: dict[str, Callable[[job_queries.JobStats], object]] = {
    "job": lambda stats: stats.job,
    "runs": lambda stats: stats.runs,
    "success": lambda stats: stats.success_rate,
    "failure": lambda stats: stats.failure_rate,
    "p50": lambda stats: stats.p50_s,
    "p90": lambda stats: stats.p90_s,
    "p95": lambda stats: stats.p95_s,
    "wait": lambda stats: stats.median_wait_s,
    "last": lambda stats: stats.last_run,
}
RUNS_PER_PAGE = 100
MAX_API_LIMIT = 1000


@jobs.errorhandler(FilterError)
def filter_error(error: FilterError):
    """A filter that cannot be used is a bad request; an unknown source, not found."""
    if isinstance(error, UnknownSource):
        return handle_error(NotFound(str(error)))
    return handle_error(BadRequest(str(error)))


@jobs.get("/jobs")
def job_list() -> str:
    """Every job with a run in the filters, with its statistics."""
    filters = _page_filters()
    sort, descending = _sort_args()
    with _session() as session:
        window = export.resolve_window(session, filters)
        stats = job_queries.job_stats(session, filters, window)
        sources = _source_names(session)
    stats = _sorted(stats, sort, descending)
    return render_template(
        "jobs.html",
        filters=filters,
        window=window,
        stats=stats,
        sources=sources,
        sort=sort,
        descending=descending,
        # Links to each job's page, built once rather than per row.
        job_base=url_for("jobs.job_list") + "/",
        job_query="?" + urlencode(filters.query_args()),
    )


@jobs.get("/jobs/<path:name>")
def job_page(name: str) -> str:
    """One job: durations over time, runs and failures per period, its runs."""
    filters = _with_job(_page_filters(), name)
    before = _cursor_arg()
    with _session() as session:
        window = export.resolve_window(session, filters)
        history = job_queries.job_history(session, filters, window)
        runs = job_queries.recent_runs(session, filters, window, RUNS_PER_PAGE, before)
        sources = _source_names(session)
    if history.stats.runs == 0:
        abort(404, f"no run of job {name!r} in these filters")
    return render_template(
        "jobs_detail.html",
        filters=filters,
        window=window,
        history=history,
        runs=runs,
        older=runs[-1].cursor.text() if len(runs) == RUNS_PER_PAGE else None,
        paged=before is not None,
        sources=sources,
        chart=_chart_json(history),
        runs_note=runs_note(history.stats.finished, history.stats.timed),
    )


@jobs.get("/api/builds")
def api_builds() -> Response:
    """Builds in the filters as JSON, newest first, a page at a time."""
    filters = export.parse_filters(request.args, zones.reader_zone())
    limit = _int_arg("limit", 100, 1, MAX_API_LIMIT)
    before = _cursor_arg()
    with _session() as session:
        runs = job_queries.recent_runs(session, filters, None, limit, before)
    next_url = None
    if len(runs) == limit:
        args = filters.query_args() | {"limit": limit, "before": runs[-1].cursor.text()}
        next_url = url_for("jobs.api_builds", **args)
    return jsonify(builds=[_run_json(run) for run in runs], next=next_url)


@jobs.get("/export/builds.csv")
def export_builds() -> Response:
    """The builds in the filters as CSV, streamed a batch of rows at a time."""
    filters = export.parse_filters(request.args, zones.reader_zone())
    chunks = _csv_chunks(current_app.extensions["zuul_status"].sessions, filters)
    # The first chunk runs the query: a bad filter or an unreadable database
    # is still answered with an error page instead of a truncated file.
    first = next(chunks)
    name = filters.file_name(datetime.now(UTC))
    response = Response(
        stream_with_context(itertools.chain([first], chunks)),
        mimetype="text/csv",
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    # nginx would otherwise buffer the whole export before sending any of it.
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _csv_chunks(sessions, filters: BuildFilters):
    with session_scope(sessions) as session:
        yield from export.csv_chunks(session, filters)


def _cursor_arg() -> job_queries.RunCursor | None:
    """``before``: the runs older than the last of the previous page."""
    raw = request.args.get("before")
    if not raw:
        return None
    try:
        return job_queries.RunCursor.parse(raw)
    except ValueError:
        abort(
            400, f"'before' must be the cursor a previous page gave, got {raw[:60]!r}"
        )


def _page_filters() -> BuildFilters:
    """The job pages' filters: their form sends its range menu with every from/to.

    A from or to then replaces the range (the form says so); the API and the
    export, which no form fills in, refuse both at once.
    """
    return export.parse_filters(request.args, zones.reader_zone(), range_yields=True)


def _with_job(filters: BuildFilters, name: str) -> BuildFilters:
    if len(name) > export.MAX_FILTER_CHARS:
        abort(404, "no job has a name that long")
    args = filters.query_args() | {"job": name}
    return export.parse_filters(args, zones.reader_zone())


def _sort_args() -> tuple[str, bool]:
    sort = request.args.get("sort", "job")
    if sort not in SORT_KEYS:
        abort(400, f"'sort' must be one of {', '.join(SORT_KEYS)}, got {sort[:40]!r}")
    order = request.args.get("order", "asc" if sort == "job" else "desc")
    if order not in ("asc", "desc"):
        abort(400, f"'order' must be asc or desc, got {order[:40]!r}")
    return sort, order == "desc"


def _sorted(stats: list, sort: str, descending: bool) -> list:
    """Sorted by one column; jobs without a value for it always come last."""
    key = SORT_KEYS[sort]
    known = [entry for entry in stats if key(entry) is not None]
    unknown = [entry for entry in stats if key(entry) is None]
    known.sort(key=lambda entry: (key(entry), entry.job), reverse=descending)
    return known + unknown


def _source_names(session) -> list[str]:
    return list(session.scalars(select(Source.name).order_by(Source.name)))


def _chart_json(history: job_queries.JobHistory) -> dict:
    """What jobs.js draws: points by outcome, percentile lines, period counts."""
    # Each period's percentiles are drawn at its middle.
    lines = {
        name: [
            [period.middle_s * 1000, getattr(period, f"{name}_s")]
            for period in history.periods
            if getattr(period, f"{name}_s") is not None
        ]
        for name in ("p50", "p90", "p95")
    }
    # Only the periods with runs: the chart puts them on a time axis.
    periods = [
        {
            "t": period.start_s * 1000,
            "end": period.end_s * 1000,
            "runs": period.runs,
            "finished": period.finished,
            "failed": period.failed,
            "failure_rate": period.failure_rate,
        }
        for period in history.periods
    ]
    return {
        "points": history.points,
        "lines": lines,
        "periods": periods,
        "period": history.period,
        "sampled": history.sampled,
        "zone": zones.zone_name(),
    }


def runs_note(finished: int, timed: int) -> str:
    """Which runs the statistics are over, in words that fit 0, 1 or many."""
    results = f"{_count_runs(finished)} finished with a result"
    if timed == 0:
        durations = "none started and ended, so there are no durations"
    else:
        timed_runs = _count_runs(timed)
        durations = f"durations are from the {timed_runs} that started and ended"
    return f"{results[0].upper()}{results[1:]}; {durations}."


def _count_runs(count: int) -> str:
    if count == 0:
        return "no run"
    return "1 run" if count == 1 else f"{count} runs"


def _run_json(run: job_queries.Run) -> dict:
    return run.values | {"state": run.state, "snapshot_id": run.last_snapshot_id}


@jobs.app_template_filter("job_seconds")
def format_seconds(seconds: float | None) -> str:
    """``42 s``, ``3 min 20 s``, ``1 h 30 min``; a dash when unknown."""
    if seconds is None:
        return "–"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


@jobs.app_template_filter("job_percent")
def format_percent(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.1f} %"


@jobs.app_template_filter("job_time")
def format_time(moment: datetime) -> str:
    """``2026-05-04 10:00 CEST``: to the minute, in the reader's zone.

    In UTC when the zone's offset would take it past either end of the calendar.
    """
    local = render.in_zone(moment, zones.reader_zone())
    # strftime writes years before 1000 without their leading zeros.
    return f"{local.year:04d}-{local:%m-%d %H:%M %Z}"


@jobs.app_template_filter("job_iso")
def format_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@jobs.app_template_filter("job_without")
def without(args: dict, name: str) -> dict:
    return {key: value for key, value in args.items() if key != name}


@jobs.app_template_filter("job_run_class")
def run_class(run: job_queries.Run) -> str:
    """The row's colour: by outcome, else by state; dimmed when non-voting."""
    kind = job_queries.outcome(run.values["result"])
    css = {"success": "ok", "failure": "bad", "other": "skip"}.get(kind or "", "")
    if not css:
        css = {"running": "run", "waiting": "wait"}.get(run.state, "skip")
    return css if run.values["voting"] else css + " nv"
