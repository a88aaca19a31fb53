"""The web UI under bad requests: a clear 400 or 404, never a 500 or a traceback.

Every route is found in ``app.url_map``, so that a page added later is
covered without touching this file. The database holds a few snapshots of
two sources, on SQLite and on the real PostgreSQL.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode, urlsplit

import orjson
import pytest
from sqlalchemy import func, select
from werkzeug.routing import IntegerConverter, PathConverter

from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.models import Build, Poll, Snapshot, Source
from recorder.settings import Settings
from recorder.store import get_or_create_source, store_poll
from tests.conftest import postgres_url, reset_postgres

TAKEN_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
CHANGE = "1001,2"
JOB = "tox-py311"
# Every argument any view reads today; a route ignores those it does not use.
ARGUMENTS = (
    "source",
    "q",
    "tz",
    "limit",
    "offset",
    "time",
    "b",
    "with",
    "change",
    "before",
    "from",
    "to",
    "until",
    "range",
    "order",
    "sort",
    "pipeline",
    "project",
    "branch",
    "job",
    "result",
)
SQL_INJECTIONS = (
    "' OR '1'='1' --",
    "1; DROP TABLE snapshots; --",
    '" OR 1=1 UNION SELECT name, sql FROM sqlite_master --',
    "demo' AND pg_sleep(3) IS NULL OR name LIKE '%",
)
TRAVERSALS = (
    "/static/../../etc/passwd",
    "/static/..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/%252e%252e/%252e%252e/etc/passwd",
    "/static/....//....//etc/passwd",
    "/static/..%5c..%5c..%5cetc%5cpasswd",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/..%00/etc/passwd",
    "/..%2f..%2f..%2fetc%2fpasswd",
    "/snapshots/..%2f..%2fetc%2fpasswd",
    "/jobs/..%2f..%2f..%2fetc%2fpasswd",
    "/jobs/../../../../etc/passwd",
    "/api/snapshots/1/raw/../../../../etc/passwd",
    "/changes/..%2f..%2fetc%2fpasswd",
    "/at/..%2f..%2fetc%2fpasswd",
)
BAD_TIMES = (
    "not-a-time",
    "2026-13-45T99:99",
    "2026-01-05T12:00:00+99:00",
    "99999-01-01",
    "0000-00-00",
    "1e308",
    "-1",
    "2026-01-05T12:00:00Z" * 50,
    "\x00",
    "2026-01-05T12:00:00\x00",
    " ",
)
EXTREME_TIMES = (
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59",
    "9999-12-31T23:59:59-14:00",
    "1970-01-01T00:00:00Z",
    "2200-01-01T00:00:00Z",
)
ABSURD_NUMBERS = (
    "-1",
    "0",
    "9223372036854775808",
    "-99999999999999999999999999999",
    "1e3",
    "NaN",
    "\u00b2",
    "\u0663",
)


def small_status(job_name: str = JOB, project: str = "demo/nova") -> bytes:
    start_s = int(TAKEN_AT.timestamp()) - 600
    item = {
        "id": CHANGE,
        "project": project,
        "live": True,
        "enqueue_time": start_s * 1000,
        "jobs": [
            {"name": job_name, "uuid": "a" * 32, "start_time": start_s},
            {
                "name": "tox-pep8",
                "uuid": "b" * 32,
                "result": "SUCCESS",
                "start_time": start_s,
                "end_time": start_s + 200,
            },
        ],
    }
    queue = {"name": "integrated", "heads": [[item]]}
    pipelines = [{"name": "check", "change_queues": [queue]}]
    return orjson.dumps({"zuul_version": "10.0.0", "pipelines": pipelines})


def seed(url: str) -> dict[str, int]:
    """Two sources, three snapshots (one unparsed) and a failed poll."""
    from recorder.migrate import upgrade

    upgrade(url)
    sessions = make_sessionmaker(make_engine(url, writer=True))
    ids = {}
    bodies = (
        ("demo", small_status(), 0),
        ("demo", small_status(project="demo/neutron"), 30),
        ("demo", b"<html>busy</html>", 60),
        ("other", small_status(job_name="other-job"), 0),
    )
    for name, body, offset_s in bodies:
        with session_scope(sessions) as session:
            source = get_or_create_source(session, name, f"https://{name}.test/")
            result = store_poll(
                session, source, TAKEN_AT + timedelta(seconds=offset_s), 10, body, 200
            )
            ids.setdefault(name, result.snapshot_id)
    with session_scope(sessions) as session:
        source = get_or_create_source(session, "demo", "https://demo.test/")
        store_poll(
            session, source, TAKEN_AT + timedelta(seconds=90), 10, None, 503, "HTTP 503"
        )
    sessions.kw["bind"].dispose()
    return ids


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(request, tmp_path_factory):
    """A test client of the web app on a seeded database, and the database URL."""
    from webui import create_app

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('bad') / 'zuul-status.sqlite'}"
    else:
        found, reason = postgres_url()
        if found is None:
            if os.environ.get("CI"):
                pytest.fail(f"CI must test PostgreSQL: {reason}")
            pytest.skip(reason)
        url = reset_postgres(found)
    ids = seed(url)
    app = create_app(Settings(database_url=url))
    yield app.test_client(), url, ids
    app.extensions["zuul_status"].sessions.kw["bind"].dispose()


def application():
    """The application as built today, for its URL map (no database is opened)."""
    from webui import create_app

    return create_app(Settings(database_url="sqlite://"))


URLS = application().url_map.bind("localhost")
ROUTES = sorted(
    (rule for rule in URLS.map.iter_rules() if "GET" in rule.methods),
    key=lambda rule: rule.rule,
)
ROUTE_IDS = [rule.rule for rule in ROUTES]
# A value every converter takes, swapped afterwards for what a test sends.
MARKER = 987_654_321_000


def valid_value(name: str, converter, ids: dict[str, int]) -> int | str:
    """A value of a route argument that names something that exists."""
    if isinstance(converter, IntegerConverter):
        return ids["demo"] + (1 if name == "b" else 0)
    if isinstance(converter, PathConverter):
        return "style.css" if name == "filename" else JOB
    return {"when": "2026-01-05T12:00:45Z", "change": CHANGE}.get(name, "x")


def build(rule, ids: dict[str, int], **override: str) -> str:
    """The path of ``rule`` with valid arguments, except those in ``override``."""
    values = {
        name: valid_value(name, converter, ids)
        for name, converter in rule._converters.items()
    }
    for offset, name in enumerate(override):
        values[name] = MARKER + offset
    path = URLS.build(rule.endpoint, values)
    for offset, value in enumerate(override.values()):
        path = path.replace(str(MARKER + offset), quote(value, safe=""))
    return path


def check(response, path: str, allowed=(200, 302, 400, 404)) -> int:
    """The invariants of any answer: an allowed status, no traceback, JSON for /api."""
    body = response.get_data(as_text=True)
    assert response.status_code in allowed, (
        f"{path}: {response.status_code} {body[:300]}"
    )
    assert "Traceback" not in body, path
    assert "root:x:0:0" not in body, path
    if path.startswith("/api/") and response.status_code >= 400:
        assert response.mimetype == "application/json", path
        error = response.get_json()["error"]
        assert error["status"] == response.status_code
        assert error["message"]
    return response.status_code


def get(client, path: str, **args: str):
    url = f"{path}?{urlencode(args)}" if args else path
    return client.get(url), url


def table_counts(url: str) -> tuple[int, ...]:
    with make_sessionmaker(make_engine(url))() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model))
            for model in (Source, Snapshot, Poll, Build)
        )


@pytest.mark.parametrize("rule", ROUTES, ids=ROUTE_IDS)
def test_every_route_answers_its_valid_request(rule, site):
    client, _, ids = site
    path = build(rule, ids)
    response = client.get(path)
    check(response, path, allowed=(200, 302) if rule.arguments else (200, 302, 400))


@pytest.mark.parametrize("rule", ROUTES, ids=ROUTE_IDS)
def test_sql_injection_in_any_argument_of_any_route_is_only_text(rule, site):
    client, url, ids = site
    before = table_counts(url)

    for payload in SQL_INJECTIONS:
        for name in rule.arguments:
            path = build(rule, ids, **{name: payload})
            start = time.monotonic()
            check(client.get(path), path)
            assert time.monotonic() - start < 2.5, f"{path} took too long"
        for name in ARGUMENTS:
            response, path = get(client, build(rule, ids), **{name: payload})
            status = check(response, path)
            if name == "source" and rule.endpoint not in ("static", "web.healthz"):
                # No injected source name may match a source.
                assert status in (302, 400, 404), path

    assert table_counts(url) == before


@pytest.mark.parametrize(
    "rule", [r for r in ROUTES if r.arguments], ids=lambda r: r.rule
)
def test_unknown_and_absurd_ids_are_a_404(rule, site):
    client, _, ids = site
    for name, converter in rule._converters.items():
        unknown = (
            ("0", "999999", str(2**63), str(2**64), "9" * 40)
            if isinstance(converter, IntegerConverter)
            else ("no-such-thing", "x" * 5000)
        )
        for value in unknown:
            path = build(rule, ids, **{name: value})
            status = check(client.get(path), path)
            assert status in (400, 404), path


@pytest.mark.parametrize(
    "rule",
    [r for r in ROUTES if r.endpoint not in ("static", "web.healthz")],
    ids=lambda r: r.rule,
)
def test_an_unknown_source_is_a_404_on_every_page(rule, site):
    client, _, ids = site
    for name in ("no-such-source", "x" * 10_000, "DEMO", "demo\x00", "demo%"):
        response, path = get(client, build(rule, ids), source=name)
        assert check(response, path) in (302, 400, 404), path


def rule_for(endpoint: str):
    for rule in ROUTES:
        if rule.endpoint == endpoint:
            return rule
    pytest.skip(f"no {endpoint} route in the application yet")


@pytest.mark.parametrize("when", BAD_TIMES, ids=repr)
def test_a_malformed_time_is_a_400(when, site):
    client, _, ids = site
    rule = rule_for("history.at")
    path = build(rule, ids, when=when)
    assert check(client.get(path), path) in (400, 404)
    response, path = get(client, "/at", time=when)
    assert check(response, path) == 400
    for name in ("from", "to", "before", "until", "tz"):
        for route in ("/jobs", "/api/builds", "/export/builds.csv", "/"):
            response, path = get(client, route, **{name: when})
            check(response, path)


@pytest.mark.parametrize("when", EXTREME_TIMES)
def test_a_time_at_the_ends_of_the_calendar_is_answered_not_a_crash(when, site):
    client, _, ids = site
    rule = rule_for("history.at")
    path = build(rule, ids, when=when)
    check(client.get(path), path)
    response, path = get(client, "/at", time=when)
    check(response, path)


@pytest.mark.parametrize(
    ("name", "when"),
    [
        ("from", "0001-01-01T00:00:00+14:00"),
        ("to", "9999-12-31T23:59:59-14:00"),
    ],
)
def test_a_build_filter_at_the_ends_of_the_calendar_is_a_400(name, when, site):
    client, _, _ = site
    for route in ("/jobs", "/api/builds", "/export/builds.csv"):
        response, path = get(client, route, **{name: when})
        assert check(response, path) == 400


def test_the_last_day_of_the_calendar_as_the_end_of_a_range_means_no_end(site):
    client, _, _ = site
    for route in ("/jobs", "/api/builds", "/export/builds.csv"):
        response, path = get(client, route, to="9999-12-31")
        assert check(response, path) == 200


@pytest.mark.parametrize("when", [t for t in EXTREME_TIMES if "14:00" not in t])
def test_a_build_filter_at_an_extreme_but_valid_time_is_answered(when, site):
    client, _, _ = site
    for route in ("/jobs", "/api/builds", "/export/builds.csv"):
        for name in ("from", "to"):
            response, path = get(client, route, **{name: when})
            check(response, path)


@pytest.mark.parametrize("rule", ROUTES, ids=ROUTE_IDS)
def test_absurd_numbers_in_any_argument_are_refused_or_ignored(rule, site):
    client, _, ids = site
    for value in ABSURD_NUMBERS:
        for name in ("limit", "offset", "b", "with", "before", "until", "range"):
            response, path = get(client, build(rule, ids), **{name: value})
            check(response, path)


@pytest.mark.parametrize("rule", ROUTES, ids=ROUTE_IDS)
def test_a_100_kb_query_string_is_answered_quickly(rule, site):
    client, _, ids = site
    huge = "x" * 100_000
    for args in ({"q": huge}, {"source": huge}, {"job": huge}, {"unknown": huge}):
        start = time.monotonic()
        response, path = get(client, build(rule, ids), **args)
        check(response, path[:200])
        assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_never_leaves_the_static_folder(path, site):
    client, _, _ = site
    response = client.get(path, follow_redirects=True)
    assert check(response, path) in (400, 404)
    # Werkzeug merges repeated slashes with a redirect, within the site.
    for redirect in response.history:
        assert urlsplit(redirect.location).path.startswith("/static/"), path


@pytest.mark.parametrize("rule", ROUTES, ids=ROUTE_IDS)
def test_a_method_other_than_get_is_a_405(rule, site):
    client, _, ids = site
    path = build(rule, ids)
    for method in ("post", "put", "delete", "patch"):
        response = getattr(client, method)(path, data=b"'; DROP TABLE builds; --")
        check(response, path, allowed=(405,))


def test_an_unknown_api_path_is_a_json_404(site):
    client, _, _ = site
    for path in ("/api/nope", "/api/snapshots/abc/raw", "/api/builds/../../etc"):
        assert check(client.get(path), path) == 404
