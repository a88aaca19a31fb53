"""A fake Zuul web server that serves saved or evolving status bodies.

It answers ``/api/tenant/<tenant>/status`` as zuul-web does (JSON, gzip when
asked, ``Cache-Control`` and ``Last-Modified``), plus ``/api/info``. The
bodies come from a folder of saved ``*.json`` files served in name order, a
list of bodies, or one document made to evolve in real time.
"""

from __future__ import annotations

import gzip
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from recorder.simulator import StatusEvolver, generate_status

log = logging.getLogger(__name__)

INFO = {"info": {"rest_api_version": 1}}


class _SavedBodies:
    """Saved bodies handed out one per request, staying on the last one."""

    def __init__(self, bodies: list[bytes]):
        if not bodies:
            raise ValueError("the fake upstream needs at least one status body")
        self._bodies = bodies
        self._next = 0
        self._lock = threading.Lock()

    def next_body(self) -> tuple[bytes, float]:
        """The body for this request, and when it was modified (epoch s)."""
        with self._lock:
            body = self._bodies[min(self._next, len(self._bodies) - 1)]
            self._next += 1
        return body, time.time()


class _EvolvingBody:
    """One document that evolves by the wall-clock time between requests."""

    def __init__(
        self, evolver: StatusEvolver, speed: float, clock: Callable = time.monotonic
    ):
        self._evolver = evolver
        self._speed = speed
        self._clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()

    def next_body(self) -> tuple[bytes, float]:
        """The document as it stands now, and the evolver's time (epoch s)."""
        with self._lock:
            now = self._clock()
            if self._last is not None:
                self._evolver.advance((now - self._last) * self._speed)
            self._last = now
            return self._evolver.body(), self._evolver.now.timestamp()


class FakeZuulServer(ThreadingHTTPServer):
    """An HTTP server that answers as zuul-web does for one tenant."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], bodies, tenant: str):
        super().__init__(address, _ZuulWebHandler)
        self.bodies = bodies
        self.tenant = tenant
        self.status_path = f"/api/tenant/{tenant}/status"

    @property
    def url(self) -> str:
        """The full status URL of this server."""
        host, port = self.server_address[:2]
        if ":" in str(host):
            host = f"[{host}]"
        return f"http://{host}:{port}{self.status_path}"


class _ZuulWebHandler(BaseHTTPRequestHandler):
    """Answers the status and info endpoints; 404 JSON for anything else."""

    server: FakeZuulServer
    protocol_version = "HTTP/1.1"
    server_version = "zuul-status-fake-upstream"

    def do_GET(self) -> None:
        """Serve one GET request."""
        path = urlsplit(self.path).path
        if path == self.server.status_path:
            body, modified_s = self.server.bodies.next_body()
            self._send(200, body, modified_s)
        elif path == "/api/info":
            self._send(200, orjson.dumps(INFO), time.time())
        else:
            message = f"nothing at {path}; the status is at {self.server.status_path}"
            self._send(404, orjson.dumps({"error": message}), None)

    def _send(self, code: int, body: bytes, modified_s: float | None) -> None:
        """Send a JSON response, gzipped when the client accepts it."""
        gzipped = _accepts_gzip(self.headers.get("Accept-Encoding", ""))
        if gzipped:
            body = gzip.compress(body, compresslevel=5)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Vary", "Accept-Encoding")
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        if modified_s is not None:
            self.send_header("Cache-Control", "public, max-age=1")
            self.send_header("Last-Modified", formatdate(modified_s, usegmt=True))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Log each request at DEBUG instead of writing it to stderr."""
        log.debug("%s " + format, self.address_string(), *args)


def _accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header allows gzip."""
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def make_server(
    source: Path | str | StatusEvolver | list[bytes],
    host: str = "127.0.0.1",
    port: int = 0,
    tenant: str = "demo",
    speed: float = 1.0,
) -> FakeZuulServer:
    """A fake Zuul server for ``source``, bound but not yet serving.

    A folder serves its ``*.json`` files in name order, one per request, then
    stays on the last; a list of bodies does the same. A single file, or an
    evolver, becomes one document that evolves between requests by the
    wall-clock time passed times ``speed``; a file's times are first moved to
    now.
    """
    if isinstance(source, StatusEvolver):
        bodies = _EvolvingBody(source, speed)
    elif isinstance(source, list):
        bodies = _SavedBodies(list(source))
    else:
        bodies = _bodies_from_path(Path(source), speed)
    return FakeZuulServer((host, port), bodies, tenant)


def _bodies_from_path(path: Path, speed: float) -> _SavedBodies | _EvolvingBody:
    """Saved bodies from a folder, or an evolving document from one file."""
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise ValueError(f"no *.json files in {path}")
        return _SavedBodies([file.read_bytes() for file in files])
    status = orjson.loads(path.read_bytes())
    if not isinstance(status, dict):
        raise ValueError(f"{path} does not hold a Zuul status document")
    return _EvolvingBody(StatusEvolver(status, now=datetime.now(UTC)), speed)


def serve_forever_until_signal(
    server: FakeZuulServer, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
) -> int:
    """Serve until one of ``signals`` arrives, then shut down cleanly.

    Must be called from the main thread. Returns the number of the signal.
    """
    received: list[int] = []
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {signum: signal.signal(signum, _on_signal) for signum in signals}
    # A short poll interval makes shutdown() return soon after the signal.
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},
        name="fake-upstream",
    )
    thread.start()
    log.info("fake upstream serving %s", server.url)
    try:
        stop.wait()
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    log.info("fake upstream stopped by signal %s", received[0] if received else None)
    return received[0] if received else 0


def write_sample(path: Path, seed: int = 0, shape: str = "v3") -> Path:
    """Write a freshly generated status body to ``path``."""
    path = Path(path)
    path.write_bytes(orjson.dumps(generate_status(seed=seed, shape=shape)))
    return path


# The name the command line calls.
serve_until_signal = serve_forever_until_signal
