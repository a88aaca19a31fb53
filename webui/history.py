"""Looking back: the snapshot at a time, the diff of two, the story of a change."""

from __future__ import annotations

import re

from flask import Blueprint, abort, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from webui import diff, history_queries, queries, render, zones
from webui.views import (
    _preferred,
    _query_arg,
    _session,
    _source_arg,
    render_snapshot,
    source_links,
)

history = Blueprint("history", __name__)
history.add_app_template_filter(render.format_duration, "duration")

# A change is a number, ``number,patchset``, or a commit sha of a branch ref.
_CHANGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9,._-]{0,99}")


@history.get("/at/<when>")
def at(when: str) -> str | tuple[str, int]:
    """The snapshot in force at a time (ISO 8601; without offset, the reader's zone)."""
    moment = zones.parse_time(when)
    source_name, query = _source_arg(), _query_arg()
    with _session() as session:
        source = queries.resolve_source(session, source_name, _preferred())
        snapshot = history_queries.snapshot_at(session, source.id, moment)
        if snapshot is None:
            first = history_queries.first_snapshot(session, source.id)
            links = source_links(
                queries.source_names(session), source.name, ".at", {"when": when}
            )
            page = render_template(
                "nothing.html",
                source=source.name,
                asked_at=moment,
                first=first,
                source_links=links,
            )
            return page, 404
        record = queries.snapshot_record(session, snapshot.id)
        return render_snapshot(session, record, query, latest=False, asked_at=moment)


@history.get("/at")
def at_form() -> Response:
    """The time picker's target: on to ``/at/<time>``, in UTC so that it lasts."""
    moment = zones.parse_time(_required("time"))
    when = render.iso_z(moment)
    return redirect(url_for(".at", when=when, **_kept_args()))


@history.get("/diff/<int:a>/<int:b>")
def compare(a: int, b: int) -> str | Response:
    """What changed from snapshot ``a`` to snapshot ``b`` of one source."""
    source_name, query = _source_arg(), _query_arg()
    with _session() as session:
        before = queries.snapshot_record(session, a, source_name)
        after = queries.snapshot_record(session, b, source_name)
    if before.source.id != after.source.id:
        abort(400, f"snapshots {a} and {b} belong to different sources")
    if (before.snapshot.taken_at, a) > (after.snapshot.taken_at, b):
        return redirect(url_for(".compare", a=b, b=a, **_kept_args()))
    for record in (before, after):
        if record.status is None:
            abort(
                422,
                f"snapshot {record.snapshot.id} could not be parsed "
                f"({record.parse_error}), so it cannot be compared",
            )
    changes = diff.compare(before.status, after.status, query)
    source = before.source.name
    return render_template(
        "diff.html",
        before=before,
        after=after,
        changes=changes,
        q=query,
        source=source,
        apart=render.format_duration(
            (after.snapshot.taken_at - before.snapshot.taken_at).total_seconds()
        ),
        source_links=source_links(before.source_names, source, "web.latest", {}),
        permalink_tz=zones.zone_arg(),
    )


@history.get("/diff")
def compare_form() -> Response:
    """The compare form's target: ``with`` is a snapshot id or a time."""
    b = _int_required("b")
    other = _required("with")
    if other.isascii() and other.isdigit():
        return redirect(url_for(".compare", a=int(other), b=b, **_kept_args()))
    moment = zones.parse_time(other)
    with _session() as session:
        record = queries.snapshot_record(session, b, _source_arg())
        snapshot = history_queries.snapshot_at(session, record.source.id, moment)
        if snapshot is None:
            abort(404, f"no snapshot of {record.source.name!r} at or before {other!r}")
        a = snapshot.id
    return redirect(url_for(".compare", a=a, b=b, **_kept_args()))


@history.get("/changes/<change>")
def change(change: str) -> str:
    """The story of a change (a number, or number,patchset) across all snapshots."""
    if not _CHANGE.fullmatch(change):
        abort(400, f"{change[:40]!r} is not a change: give a number or number,patchset")
    source_name = _source_arg()
    until_id = request.args.get("until")
    with _session() as session:
        source = queries.resolve_source(session, source_name, _preferred())
        until = None
        if until_id:
            if not (until_id.isascii() and until_id.isdigit() and len(until_id) < 19):
                abort(400, f"'until' must be a snapshot id, got {until_id[:40]!r}")
            until = queries.snapshot_record(session, int(until_id), source.name)
        moment = until.snapshot.taken_at if until else None
        told = history_queries.change_story(session, source.id, change, moment)
        newest = queries.newest_snapshot_id(session, source.id, parsed_only=True)
        names = queries.source_names(session)
    if not told.visits:
        abort(404, f"no build of change {change!r} was recorded for {source.name!r}")
    return render_template(
        "change.html",
        story=told,
        source=source.name,
        until=until.snapshot if until else None,
        permalink_until=until.snapshot.id if until else newest,
        source_links=source_links(names, source.name, ".change", {"change": change}),
        permalink_tz=zones.zone_arg(),
    )


@history.get("/changes")
def change_form() -> Response:
    """The change form's target: on to ``/changes/<change>``."""
    change = _required("change").replace(" ", "")
    return redirect(url_for(".change", change=change, **_kept_args()))


def _required(name: str) -> str:
    value = request.args.get(name, "").strip()
    if not value:
        abort(400, f"{name!r} is required")
    return value


def _int_required(name: str) -> int:
    value = _required(name)
    if not (value.isascii() and value.isdigit()):
        abort(400, f"{name!r} must be a snapshot id, got {value[:40]!r}")
    return int(value)


def _kept_args() -> dict[str, str]:
    """The arguments that every view keeps: the source, the filter, the zone."""
    kept = {name: request.args.get(name) for name in ("source", "q", "tz")}
    return {name: value for name, value in kept.items() if value}
