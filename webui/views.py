"""Pages and JSON endpoints: parse the arguments, run one query, render."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    render_template,
    request,
    url_for,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from recorder.db import session_scope
from recorder.models import Source
from recorder.settings import SourceSettings
from webui import WebState, history_queries, queries, render, timeline, zones

log = logging.getLogger(__name__)
web = Blueprint("web", __name__)

MAX_QUERY_CHARS = 200
MAX_LIMIT = 1000
JUMPS = (
    ("−1 day", timedelta(days=-1)),
    ("−1 h", timedelta(hours=-1)),
    ("+1 h", timedelta(hours=1)),
    ("+1 day", timedelta(days=1)),
)


@dataclass(slots=True)
class NavLink:
    label: str
    href: str | None
    current: bool = False


@web.get("/")
def latest() -> str:
    """The latest parsed snapshot of a source."""
    source_name, query = _source_arg(), _query_arg()
    with _session() as session:
        record = queries.latest_snapshot_record(session, source_name, _preferred())
        return render_snapshot(session, record, query, latest=True)


@web.get("/snapshots/<int:snapshot_id>")
def snapshot(snapshot_id: int) -> str:
    """One snapshot, with links to the one before and after it."""
    source_name, query = _source_arg(), _query_arg()
    with _session() as session:
        record = queries.snapshot_record(session, snapshot_id, source_name)
        return render_snapshot(session, record, query, latest=False)


@web.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Whether the database can be read, and how fresh each source's data is."""
    now = datetime.now(UTC)
    try:
        with _session() as session:
            health = queries.source_health(session, _preferred())
    except SQLAlchemyError:
        log.exception("health check: the database cannot be read")
        body = {"ok": False, "error": "the database cannot be read", "sources": {}}
        return _no_store(jsonify(body)), 503
    sources = {entry.name: _health_json(entry, now) for entry in health}
    return _no_store(jsonify(ok=True, sources=sources)), 200


@web.get("/api/snapshots")
def api_snapshots() -> Response:
    """Snapshots of a source as JSON, newest first."""
    source_name = _source_arg()
    limit = _int_arg("limit", 100, 1, MAX_LIMIT)
    offset = _int_arg("offset", 0, 0, None)
    with _session() as session:
        summaries = queries.list_snapshots(
            session, source_name, _preferred(), limit, offset
        )
    return jsonify([_summary_json(summary) for summary in summaries])


@web.get("/api/snapshots/<int:snapshot_id>/raw")
def api_snapshot_raw(snapshot_id: int) -> Response:
    """The body of a snapshot, byte for byte as it was received."""
    source_name = _source_arg()
    with _session() as session:
        body = queries.snapshot_body(session, snapshot_id, source_name)
    return Response(body, mimetype="application/json")


def render_snapshot(
    session: Session,
    record: queries.SnapshotRecord,
    query: str,
    latest: bool,
    asked_at: datetime | None = None,
) -> str:
    """The snapshot page: the status, its time navigation and timeline strip."""
    snapshot, status = record.snapshot, record.status
    rows = None
    if status is not None:
        web_root = _web_root(record.source)
        rows = render.status_rows(status, snapshot.taken_at, web_root, query)
    zone = zones.reader_zone()
    banner = render.banner(
        snapshot.taken_at, snapshot.last_taken_at, status, datetime.now(UTC), zone
    )
    strip = _timeline(session, record, asked_at or snapshot.taken_at)
    source = record.source.name
    if asked_at is not None:
        switch = ("history.at", {"when": render.iso_z(asked_at), "q": query or None})
    else:
        switch = ("web.latest", {"q": query or None})
    return render_template(
        "snapshot.html",
        record=record,
        rows=rows,
        banner=banner,
        q=query,
        latest=latest,
        asked_at=asked_at,
        strip=strip,
        jumps=_jumps(source, snapshot.taken_at, strip, query),
        picker_value=zones.input_value(asked_at or snapshot.taken_at),
        source_links=source_links(record.source_names, source, *switch),
        asked_note=_asked_note(asked_at, strip),
        permalink_tz=zones.zone_arg(),
        snapshot_href=href_maker("web.snapshot", "snapshot_id", source=source),
        story_href=href_maker("history.change", "change", source=source),
    )


def _timeline(
    session: Session, record: queries.SnapshotRecord, moment: datetime
) -> timeline.Timeline:
    data = history_queries.timeline_data(session, record.source.id, moment)
    order = [p.name for p in record.status.pipelines] if record.status else ()
    return timeline.build(data, moment, zones.reader_zone(), order)


def _jumps(
    source: str, taken_at: datetime, strip: timeline.Timeline, query: str
) -> list[NavLink]:
    """Links an hour or a day away, where there is data to show."""
    links = []
    for label, delta in JUMPS:
        try:
            moment = taken_at + delta
        except OverflowError:  # a time at the very end of the calendar
            links.append(NavLink(label, None))
            continue
        known = strip.first_taken_at is not None and (
            strip.first_taken_at <= moment <= (strip.data_until or moment)
        )
        href = None
        if known:
            href = url_for(
                "history.at", when=render.iso_z(moment), source=source, q=query or None
            )
        links.append(NavLink(label, href))
    return links


def _asked_note(asked_at: datetime | None, strip: timeline.Timeline) -> str | None:
    """Why the snapshot shown may not be what Zuul showed at the asked time."""
    if asked_at is None:
        return None
    for gap in strip.gaps:
        if gap.first_at <= asked_at <= (gap.until or gap.last_at):
            return f"No status came in around that time: {gap.text}."
    if strip.data_until is not None and asked_at > strip.data_until:
        last = zones.localtime(strip.data_until)
        return f"Nothing was recorded after {last}: this is the last known status."
    return None


def href_maker(endpoint: str, name: str, **values) -> Callable[[object], str]:
    """``url_for`` with one value left open, for the many links of one page."""
    marker = 999_999_999_999
    before, _, after = url_for(endpoint, **{name: marker}, **values).partition(
        str(marker)
    )
    return lambda value: f"{before}{quote(str(value), safe=',')}{after}"


def source_links(
    names: list[str], current: str, endpoint: str, values: dict
) -> list[NavLink]:
    """The source switcher: the same view (where it makes sense) of each source."""
    return [
        NavLink(name, url_for(endpoint, source=name, **values), name == current)
        for name in names or [current]
    ]


def _state() -> WebState:
    return current_app.extensions["zuul_status"]


@contextmanager
def _session() -> Iterator[Session]:
    with session_scope(_state().sessions) as session:
        yield session


def _preferred() -> tuple[str, ...]:
    """Configured source names, in order: the first with data is the default."""
    return tuple(source.name for source in _state().settings.sources)


def _web_root(source: Source) -> str:
    """The Zuul web root of a source, from its settings or else from its URL."""
    for configured in _state().settings.sources:
        if configured.name == source.name:
            return configured.zuul_web_root
    return SourceSettings(name=source.name, url=source.url).zuul_web_root


def _source_arg() -> str | None:
    return request.args.get("source") or None


def _query_arg() -> str:
    return request.args.get("q", "").strip()[:MAX_QUERY_CHARS]


def _int_arg(name: str, default: int, low: int, high: int | None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    # Past 2**63 no database takes the number: it is as wrong as a negative one.
    if value is None or not low <= value <= (2**63 - 1 if high is None else high):
        upper = f" to {high}" if high is not None else " or more"
        abort(400, f"{name!r} must be an integer from {low}{upper}, got {raw!r}")
    return value


def _health_json(entry: queries.SourceHealth, now: datetime) -> dict:
    # The age is that of the latest poll that confirmed the data: an unchanged
    # body on a quiet tenant is fresh data, not a stalled recorder.
    age = render.seconds_between(entry.last_seen_at, now)
    return {
        "latest_snapshot_at": render.iso_z(entry.latest_snapshot_at),
        "last_seen_at": render.iso_z(entry.last_seen_at),
        "age_s": round(age, 3) if age is not None else None,
        "last_poll_at": render.iso_z(entry.last_poll_at),
        "last_poll_outcome": entry.last_poll_outcome,
    }


def _summary_json(summary: queries.SnapshotSummary) -> dict:
    return {
        "id": summary.id,
        "source": summary.source,
        "taken_at": render.iso_z(summary.taken_at),
        "last_taken_at": render.iso_z(summary.last_taken_at),
        "raw_size": summary.raw_size,
        "zuul_version": summary.zuul_version,
        "parse_error": summary.parse_error,
    }


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response
