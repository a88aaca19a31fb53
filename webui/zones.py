"""The reader's time zone: UTC unless ``tz=`` in the URL or a cookie says otherwise.

Times are stored in UTC; only their display changes. A zone named in the URL
is remembered in a cookie, so that the next pages keep it; an unknown zone in
the URL is a 400, an unknown one in the cookie is ignored.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, datetime, timedelta, tzinfo

from flask import Flask, Response, g, request
from werkzeug.exceptions import BadRequest

from webui.render import format_time, in_zone, iso_z

COOKIE = "tz"
COOKIE_MAX_AGE_S = 400 * 86_400
MAX_NAME_CHARS = 64
_EARLIEST = datetime.min.replace(tzinfo=UTC) + timedelta(days=7)
_LATEST = datetime.max.replace(tzinfo=UTC) - timedelta(days=7)
# Offered in the zone picker; any other IANA name can be typed.
COMMON_ZONES = (
    "UTC",
    "America/Los_Angeles",
    "America/New_York",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Moscow",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
)


def init_app(app: Flask) -> None:
    """Read the zone before each request, remember it after, offer it to templates."""
    app.before_request(use_reader_zone)
    app.after_request(remember_zone)
    app.add_template_filter(localtime)
    app.add_template_filter(shorttime)
    app.add_template_filter(iso_z, "iso")
    app.context_processor(template_context)


def template_context() -> dict:
    return {"zone_name": zone_name(), "common_zones": COMMON_ZONES}


def parse_zone(name: str) -> tzinfo:
    """The zone called ``name`` (an IANA name, any case); ``BadRequest`` if unknown."""
    canonical = _canonical_names().get(name.strip().casefold())
    if canonical is None:
        shown = name[:MAX_NAME_CHARS]
        raise BadRequest(
            f"unknown time zone {shown!r}: use an IANA name such as "
            "'Europe/Berlin' or 'America/New_York', or 'UTC'"
        )
    return UTC if canonical == "UTC" else zoneinfo.ZoneInfo(canonical)


def use_reader_zone() -> None:
    """Set ``g.zone``: from ``tz=`` (400 if unknown), else the cookie, else UTC."""
    asked = request.args.get("tz")
    g.zone_from_url = bool(asked)
    if asked:
        g.zone = parse_zone(asked)
        return
    try:
        g.zone = parse_zone(request.cookies.get(COOKIE) or "UTC")
    except BadRequest:
        g.zone = UTC


def remember_zone(response: Response) -> Response:
    """Keep a zone chosen in the URL for the next pages."""
    if g.get("zone_from_url") and response.status_code < 400:
        response.set_cookie(
            COOKIE,
            zone_name(),
            max_age=COOKIE_MAX_AGE_S,
            samesite="Lax",
            httponly=True,
        )
    return response


def reader_zone() -> tzinfo:
    return g.get("zone", UTC)


def zone_name() -> str:
    """``UTC`` or the IANA name of the reader's zone."""
    zone = reader_zone()
    return getattr(zone, "key", None) or "UTC"


def zone_arg() -> str | None:
    """``tz`` for links that must show the same thing to anyone (permalinks)."""
    name = zone_name()
    return None if name == "UTC" else name


def localtime(moment: datetime | None, zone: tzinfo | None = None) -> str:
    """``2026-12-03 17:20:05 CET`` in the reader's zone, or ``unknown``."""
    return format_time(moment, zone or reader_zone())


def shorttime(moment: datetime | None, since: datetime | None = None) -> str:
    """``17:20:05`` in the reader's zone, with the date if not that of ``since``."""
    if moment is None:
        return "unknown"
    zone = reader_zone()
    local = in_zone(moment, zone)
    if since is not None and in_zone(since, zone).date() != local.date():
        return f"{local.year:04d}-{local:%m-%d %H:%M:%S}"
    return local.strftime("%H:%M:%S")


def input_value(moment: datetime, zone: tzinfo | None = None) -> str:
    """The value of a ``datetime-local`` input for ``moment``, in the reader's zone."""
    local = in_zone(moment, zone or reader_zone())
    return f"{local.year:04d}-{local:%m-%dT%H:%M:%S}"


def parse_time(text: str, zone: tzinfo | None = None) -> datetime:
    """An ISO 8601 time as UTC; one without an offset is in ``zone`` (the reader's)."""
    cleaned = text.strip()
    if len(cleaned) > 10 and cleaned[10] == " ":  # 2024-05-06 07:08 is allowed
        cleaned = cleaned[:10] + "T" + cleaned[11:]
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise BadRequest(
            f"{text[:40]!r} is not an ISO 8601 time: write it like "
            "2024-05-06T07:08:09Z or 2024-05-06T09:08 (in the zone shown)"
        ) from None
    try:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone or reader_zone())
        moment = moment.astimezone(UTC)
    except OverflowError:
        moment = None
    # Pages step a day or so either side: the calendar's last week is out.
    if moment is None or not _EARLIEST <= moment <= _LATEST:
        raise BadRequest(f"{text[:40]!r} is outside the years this tool can show")
    return moment


@functools.cache
def _canonical_names() -> dict[str, str]:
    names = zoneinfo.available_timezones() | {"UTC"}
    return {name.casefold(): name for name in names if len(name) <= MAX_NAME_CHARS}
