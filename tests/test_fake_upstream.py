"""The fake Zuul upstream, spoken to over real loopback HTTP."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from recorder.fake_upstream import make_server, write_sample
from recorder.simulator import StatusEvolver, generate_status

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def serve():
    """Start fake upstreams in background threads; stop them after the test."""
    running = []

    def start(source, **options):
        server = make_server(source, **options)
        # A short poll interval lets shutdown() return quickly at teardown.
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def get(url: str, headers: dict[str, str] | None = None):
    """GET a URL; return the status, the headers and the raw body."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_the_url_is_the_tenant_status_on_the_bound_port(serve):
    server = serve([b"{}"], tenant="acme")

    port = server.server_address[1]
    assert port > 0
    assert server.url == f"http://127.0.0.1:{port}/api/tenant/acme/status"


def test_a_folder_is_served_in_name_order_then_stays_on_the_last_file(serve, tmp_path):
    for name in ("b", "a", "c"):
        (tmp_path / f"{name}.json").write_bytes(json.dumps({"file": name}).encode())
    (tmp_path / "notes.txt").write_text("not a status body")
    server = serve(tmp_path)

    served = [json.loads(get(server.url)[2])["file"] for _ in range(5)]

    assert served == ["a", "b", "c", "c", "c"]


def test_a_list_of_bodies_is_served_byte_for_byte_in_order(serve):
    bodies = [b'{"n": 1}', b'{"n":2}']
    server = serve(bodies)

    assert [get(server.url)[2] for _ in range(3)] == [bodies[0], bodies[1], bodies[1]]


def test_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no \\*.json files"):
        make_server(tmp_path)


def test_a_single_file_evolves_between_requests_moved_to_now(serve, tmp_path):
    sample = write_sample(tmp_path / "sample.json", seed=3)
    # Ten thousand times faster than real time: every request moves it on.
    server = serve(sample, speed=10_000)

    first = json.loads(get(server.url)[2])
    first_seen = datetime.now(UTC).timestamp()
    latest_enqueue_s = max(_enqueue_times_ms(first)) / 1000
    assert first_seen - 3600 < latest_enqueue_s <= first_seen
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        later = json.loads(get(server.url)[2])
        if _running_uuids(later) != _running_uuids(first):
            break
    assert _running_uuids(later) != _running_uuids(first)
    assert [p["name"] for p in later["pipelines"]] == [
        p["name"] for p in first["pipelines"]
    ]


def test_an_evolver_is_served_with_its_clock_as_last_modified(serve):
    evolver = StatusEvolver(generate_status(seed=1, now=NOW), now=NOW)
    server = serve(evolver, speed=10_000)

    _status, headers, body = get(server.url)

    assert json.loads(body)["pipelines"]
    modified = parsedate_to_datetime(headers["Last-Modified"])
    assert NOW.replace(microsecond=0) <= modified <= evolver.now


def test_the_status_is_gzipped_only_when_the_client_asks(serve):
    body = json.dumps(generate_status(seed=2, now=NOW)).encode()
    server = serve([body])

    _status, plain_headers, plain = get(server.url)
    _status, gzip_headers, zipped = get(
        server.url, {"Accept-Encoding": "gzip, deflate"}
    )

    assert plain == body
    assert plain_headers["Content-Encoding"] is None
    assert gzip_headers["Content-Encoding"] == "gzip"
    assert int(gzip_headers["Content-Length"]) == len(zipped) < len(body)
    assert gzip.decompress(zipped) == body


def test_the_status_carries_zuul_web_headers(serve):
    server = serve([b"{}"])

    status, headers, _body = get(server.url)

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "public, max-age=1"
    modified = parsedate_to_datetime(headers["Last-Modified"])
    assert abs((datetime.now(UTC) - modified).total_seconds()) < 60


@pytest.mark.parametrize(
    "path", ["/", "/status.json", "/api/tenant/other/status", "/api/tenant/demo"]
)
def test_anything_but_the_status_and_info_is_a_json_404(serve, path):
    server = serve([b"{}"])
    root = server.url.split("/api/")[0]

    status, headers, body = get(root + path)

    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert "/api/tenant/demo/status" in json.loads(body)["error"]


def test_api_info_names_the_rest_api_version(serve):
    server = serve([b"{}"])

    status, _headers, body = get(server.url.split("/api/")[0] + "/api/info")

    assert status == 200
    assert json.loads(body) == {"info": {"rest_api_version": 1}}


def test_a_query_string_does_not_change_the_status_path(serve):
    server = serve([b'{"n":1}'])

    assert get(server.url + "?cache=no")[2] == b'{"n":1}'


def test_write_sample_writes_a_generated_status_body(tmp_path):
    path = write_sample(tmp_path / "sample.json", seed=5, shape="v10")

    document = json.loads(path.read_bytes())
    assert document["zuul_version"].startswith("11.")
    assert "refs" in document["pipelines"][0]["change_queues"][0]["heads"][0][0]


SERVE_UNTIL_SIGNAL = """
from recorder.fake_upstream import make_server, serve_forever_until_signal
server = make_server([b'{"ok": true}'])
print(server.url, flush=True)
print("stopped by", serve_forever_until_signal(server), flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serving_stops_cleanly_on_sigterm_or_sigint(signum):
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_UNTIL_SIGNAL],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert get(url)[2] == b'{"ok": true}'
        process.send_signal(signum)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0
    assert output.strip() == f"stopped by {int(signum)}"


def _enqueue_times_ms(document):
    """Every item's enqueue time."""
    return [
        item["enqueue_time"]
        for pipeline in document["pipelines"]
        for queue in pipeline["change_queues"]
        for chain in queue["heads"]
        for item in chain
    ]


def _running_uuids(document):
    """The uuids of every running build."""
    return {
        job["uuid"]
        for pipeline in document["pipelines"]
        for queue in pipeline["change_queues"]
        for chain in queue["heads"]
        for item in chain
        for job in item["jobs"]
        if job["result"] is None and job["uuid"]
    }
