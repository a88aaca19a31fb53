"""Pages and JSON endpoints: parse the arguments, run one query, render."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    render_template,
    request,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from recorder.db import session_scope
from recorder.models import Source
from recorder.settings import SourceSettings
from webui import WebState, queries, render

log = logging.getLogger(__name__)
web = Blueprint("web", __name__)

MAX_QUERY_CHARS = 200
MAX_LIMIT = 1000


@web.get("/")
def latest() -> str:
    """The latest parsed snapshot of a source."""
    source_name, query = _source_arg(), _query_arg()
    with _session() as session:
        record = queries.latest_snapshot_record(session, source_name, _preferred())
    return _render_snapshot(record, query, latest=True)


@web.get("/snapshots/<int:snapshot_id>")
def snapshot(snapshot_id: int) -> str:
    """One snapshot, with links to the one before and after it."""
    source_name, query = _source_arg(), _query_arg()
    with _session() as session:
        record = queries.snapshot_record(session, snapshot_id, source_name)
    return _render_snapshot(record, query, latest=False)


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


def _render_snapshot(record: queries.SnapshotRecord, query: str, latest: bool) -> str:
    snapshot, status = record.snapshot, record.status
    rows = None
    if status is not None:
        web_root = _web_root(record.source)
        rows = render.status_rows(status, snapshot.taken_at, web_root, query)
    banner = render.banner(
        snapshot.taken_at, snapshot.last_taken_at, status, datetime.now(UTC)
    )
    return render_template(
        "snapshot.html",
        record=record,
        rows=rows,
        banner=banner,
        q=query,
        latest=latest,
    )


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
    if value is None or value < low or (high is not None and value > high):
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
