"""Real captures served over loopback, recorded by ``record --once``, browsed."""

from __future__ import annotations

import html
import json

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from recorder.cli import main
from recorder.db import make_engine, make_sessionmaker
from recorder.models import Build, Poll, Snapshot
from recorder.settings import settings_from_mapping
from recorder.store import read_body
from tests.conftest import capture_params
from tests.upstream import Upstream, send_body, send_gzip


def write_config(tmp_path, database_url, url, name="demo"):
    config = tmp_path / "zuul-status.toml"
    config.write_text(
        f'database_url = "{database_url}"\n[[sources]]\nname = "{name}"\n'
        f'url = "{url}"\ninterval = 60\ndeadline = 10\n'
    )
    return config


def record_once(config) -> int:
    result = CliRunner().invoke(main, ["--config", str(config), "record", "--once"])
    return result.exit_code


def live_job_names(body: bytes) -> set[str]:
    """Job names of live items, read straight from the raw JSON."""
    document = json.loads(body)
    return {
        job["name"]
        for pipeline in document["pipelines"]
        for queue in pipeline["change_queues"]
        for head in queue["heads"]
        for item in head
        if item.get("live", True) not in (False, "false")
        for job in item["jobs"]
    }


@pytest.mark.parametrize("capture", capture_params())
def test_each_capture_is_recorded_once_and_rendered_with_every_job(
    capture, database_url, tmp_path
):
    body = capture.read_bytes()
    with Upstream(send_gzip(body)) as upstream:
        config = write_config(tmp_path, database_url, upstream.url)
        assert record_once(config) == 0

    sessions = make_sessionmaker(make_engine(database_url))
    with sessions() as session:
        poll = session.scalars(select(Poll)).one()
        assert (poll.outcome, poll.http_status, poll.size_bytes) == (
            "stored",
            200,
            len(body),
        )
        snapshot = session.get(Snapshot, poll.snapshot_id)
        assert read_body(session, snapshot) == body
        build_jobs = set(session.scalars(select(Build.job).distinct()))
        assert build_jobs == live_job_names(body)

    from webui import create_app

    settings = settings_from_mapping({"database_url": database_url})
    client = create_app(settings).test_client()
    for path in ("/", f"/snapshots/{snapshot.id}"):
        page = client.get(path)
        assert page.status_code == 200
        text = page.get_data(as_text=True)
        missing = {n for n in live_job_names(body) if html.escape(n) not in text}
        assert not missing, f"{path} lacks job names {sorted(missing)[:5]}"


def test_an_identical_body_is_stored_once_and_both_polls_are_kept(
    database_url, tmp_path
):
    body = b'{"pipelines": [{"name": "check", "change_queues": []}]}'
    with Upstream(send_body(body)) as upstream:
        config = write_config(tmp_path, database_url, upstream.url)
        assert record_once(config) == 0
        assert record_once(config) == 0
    sessions = make_sessionmaker(make_engine(database_url))
    with sessions() as session:
        outcomes = session.scalars(select(Poll.outcome).order_by(Poll.id)).all()
        assert outcomes == ["stored", "unchanged"]
        assert session.scalar(select(func.count()).select_from(Snapshot)) == 1


def test_a_failed_poll_is_recorded_and_the_exit_code_says_so(database_url, tmp_path):
    with Upstream(send_body(b"<html>busy</html>", status=503)) as upstream:
        config = write_config(tmp_path, database_url, upstream.url)
        assert record_once(config) == 1
    sessions = make_sessionmaker(make_engine(database_url))
    with sessions() as session:
        poll = session.scalars(select(Poll)).one()
        assert (poll.outcome, poll.http_status, poll.snapshot_id) == (
            "failed",
            503,
            None,
        )
        assert poll.error.startswith("HTTP 503")


def test_a_body_that_is_not_status_is_kept_and_the_poll_says_why(
    database_url, tmp_path
):
    page = b"<html><body>Zuul is down for maintenance</body></html>"
    with Upstream(send_body(page, content_type="text/html")) as upstream:
        config = write_config(tmp_path, database_url, upstream.url)
        assert record_once(config) == 1
    sessions = make_sessionmaker(make_engine(database_url))
    with sessions() as session:
        poll = session.scalars(select(Poll)).one()
        assert poll.outcome == "unparsed"
        assert poll.error.startswith("invalid JSON")
        assert read_body(session, session.get(Snapshot, poll.snapshot_id)) == page
