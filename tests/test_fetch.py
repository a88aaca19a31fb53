"""Fetching under a deadline and a byte budget, against real loopback servers."""

from __future__ import annotations

import gzip
import socket
import time

import pytest

from recorder.fetch import fetch
from tests.upstream import Upstream, hang, send_body, send_gzip, trickle

BODY = b'{"pipelines": []}'


def test_a_plain_body_is_fetched_with_its_status():
    with Upstream(send_body(BODY)) as upstream:
        result = fetch(upstream.url)
    assert (result.ok, result.http_status, result.body, result.error) == (
        True,
        200,
        BODY,
        None,
    )


def test_a_gzip_body_is_decoded():
    with Upstream(send_gzip(BODY)) as upstream:
        result = fetch(upstream.url)
    assert result.body == BODY


def test_a_trickling_server_is_abandoned_at_the_deadline():
    with Upstream(trickle(BODY * 100)) as upstream:
        start = time.monotonic()
        result = fetch(upstream.url, deadline_s=1.5)
        elapsed = time.monotonic() - start
    assert not result.ok
    assert "deadline" in result.error
    assert elapsed < 1.5 + 1.0


def test_a_server_that_never_answers_is_abandoned_at_the_deadline():
    with Upstream(hang) as upstream:
        start = time.monotonic()
        result = fetch(upstream.url, deadline_s=1.0)
        elapsed = time.monotonic() - start
    assert result.error == "deadline of 1 s exceeded"
    assert elapsed < 2.0


def test_a_body_over_the_limit_is_refused():
    with Upstream(send_body(b"x" * 5000)) as upstream:
        result = fetch(upstream.url, max_bytes=1000)
    assert not result.ok
    assert "over the limit of 1000" in result.error


def test_a_gzip_bomb_is_refused_by_its_decoded_size():
    bomb = b"{" + b" " * 20_000_000 + b"}"
    with Upstream(
        send_body(gzip.compress(bomb), headers={"Content-Encoding": "gzip"})
    ) as up:
        result = fetch(up.url, max_bytes=1_000_000)
    assert not result.ok
    assert "over the limit" in result.error


@pytest.mark.parametrize("status", [404, 500, 502, 503])
def test_an_error_status_is_a_failed_fetch_with_the_status(status):
    with Upstream(send_body(b"oops", status=status)) as upstream:
        result = fetch(upstream.url)
    assert (result.ok, result.http_status) == (False, status)
    assert result.error.startswith(f"HTTP {status}")


def test_retry_after_is_reported_on_429():
    with Upstream(send_body(b"slow down", 429, headers={"Retry-After": "120"})) as up:
        result = fetch(up.url)
    assert (result.http_status, result.retry_after_s) == (429, 120.0)


def test_a_refused_connection_is_named_as_such():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = fetch(f"http://127.0.0.1:{port}/api/tenant/demo/status")
    assert result.error == "connection refused"


def test_a_host_name_that_does_not_resolve_is_named_as_such():
    result = fetch("http://no-such-host.invalid/api/status", deadline_s=5)
    assert result.error in ("host name does not resolve", "deadline of 5 s exceeded")
