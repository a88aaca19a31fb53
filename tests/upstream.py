"""A loopback HTTP upstream for tests, whose behaviour each test sets."""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Behaviour = Callable[[BaseHTTPRequestHandler], None]


def send_body(
    body: bytes,
    status: int = 200,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Behaviour:
    """Answer with ``body`` at once."""

    def behaviour(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    return behaviour


def send_gzip(body: bytes) -> Behaviour:
    """Answer with ``body`` gzip-encoded."""
    return send_body(gzip.compress(body), headers={"Content-Encoding": "gzip"})


def trickle(body: bytes, bytes_per_second: float = 1.0) -> Behaviour:
    """Send headers, then the body one byte at a time, slowly."""

    def behaviour(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for index in range(len(body)):
            handler.wfile.write(body[index : index + 1])
            handler.wfile.flush()
            if handler.server.closing.wait(1 / bytes_per_second):
                return

    return behaviour


def hang(handler: BaseHTTPRequestHandler) -> None:
    """Accept the request and never answer, until the server closes."""
    handler.server.closing.wait(120)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.server.requests += 1
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.server.behaviour(self)

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


class Upstream(ThreadingHTTPServer):
    """A server on 127.0.0.1 whose ``behaviour`` answers every request."""

    daemon_threads = True

    def __init__(self, behaviour: Behaviour):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = behaviour
        self.requests = 0
        self.closing = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_port}/api/tenant/demo/status"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.closing.set()
        self.shutdown()
        self.server_close()


def wait_for(
    condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds, failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)
