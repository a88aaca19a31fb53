"""Upstreams that misbehave on purpose, and status documents that are hostile.

Everything here is a real loopback server (built on ``tests/upstream.py``) or
a document served by one: the fault tests and the soak (``bench/soak.py``)
break the recorder's surroundings for real instead of mocking them.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gzip
import math
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

import orjson

from recorder.simulator import generate_status
from tests.upstream import Behaviour, Upstream, hang, send_body, trickle

UNRESOLVABLE_URL = "http://no-such-host.invalid/api/tenant/demo/status"
# Every test and the soak see the same tenant, taken at the same moment.
TAKEN = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
# A body larger than this is refused by the sources of the fault tests.
MAX_BYTES = 8_000_000


class FaultyUpstream(Upstream):
    """``Upstream`` that shuts down in a few milliseconds rather than half a second.

    ``behaviour`` may be changed at any time; the next request uses it.
    """

    def __init__(self, behaviour: Behaviour):
        super().__init__(behaviour)
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )


def good_document(seed: int = 7) -> dict:
    """A realistic, busy Zuul 3 status document."""
    return generate_status(seed=seed, now=TAKEN)


def good_body(seed: int = 7) -> bytes:
    return orjson.dumps(good_document(seed))


# Places that are not an HTTP server at all.


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """A port that completes the TCP handshake and then never reads or answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:
        port = listener.getsockname()[1]
        yield f"http://127.0.0.1:{port}/api/tenant/demo/status"


@contextlib.contextmanager
def refusing_port() -> Iterator[str]:
    """A loopback port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield f"http://127.0.0.1:{port}/api/tenant/demo/status"


@contextlib.contextmanager
def unresolvable_host() -> Iterator[str]:
    yield UNRESOLVABLE_URL


# Behaviours: how an upstream answers one request.


def status_line_only(handler: BaseHTTPRequestHandler) -> None:
    """Send the status line, then never finish the headers."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    handler.wfile.flush()
    handler.server.closing.wait(120)


def close_at_once(handler: BaseHTTPRequestHandler) -> None:
    """Read the request and close the connection without a word."""
    handler.close_connection = True


def truncated(body: bytes, sent_bytes: int | None = None) -> Behaviour:
    """Declare the whole body's length, send only its start, then close."""
    sent = body[: sent_bytes if sent_bytes is not None else len(body) // 2]

    def behaviour(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(sent)
        handler.close_connection = True

    return behaviour


def unsized(body: bytes, content_encoding: str | None = None) -> Behaviour:
    """Send ``body`` without a length, ended by closing the connection."""

    def behaviour(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if content_encoding:
            handler.send_header("Content-Encoding", content_encoding)
        handler.end_headers()
        handler.wfile.write(body)
        handler.close_connection = True

    return behaviour


def reset_mid_body(body: bytes) -> Behaviour:
    """Send half the body, then reset the connection (RST, not FIN)."""

    def behaviour(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2])
        handler.wfile.flush()
        linger = struct.pack("ii", 1, 0)
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        handler.close_connection = True

    return behaviour


LOOP_PATH = "/redirect-loop"


def redirect_to(location: str = LOOP_PATH) -> Behaviour:
    """Redirect to ``location``; by default to a path that redirects to itself.

    The loop goes through a path of its own, so that behaviours taking turns
    (``in_turn``, ``RandomlyFaulty``) know a redirected request for the
    continuation of the one before, not as a new poll.
    """

    def behaviour(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return behaviour


def rate_limited(retry_after: str) -> Behaviour:
    return send_body(b"slow down", 429, "text/plain", {"Retry-After": retry_after})


def error_status(status: int) -> Behaviour:
    page = b"<html><body><h1>%d</h1>Zuul is unwell</body></html>" % status
    return send_body(page, status, "text/html")


@functools.cache
def gzip_bomb_body(decoded_bytes: int = 40_000_000) -> bytes:
    """A gzip body of a few tens of kilobytes that inflates to ``decoded_bytes``."""
    return gzip.compress(b"{" + b" " * (decoded_bytes - 2) + b"}", compresslevel=9)


def gzip_bomb(handler: BaseHTTPRequestHandler) -> None:
    body = gzip_bomb_body()
    send_body(body, headers={"Content-Encoding": "gzip"})(handler)


def not_gzip_at_all(handler: BaseHTTPRequestHandler) -> None:
    send_body(b"this is not gzip", headers={"Content-Encoding": "gzip"})(handler)


def is_new_poll(handler: BaseHTTPRequestHandler) -> bool:
    """Whether a request is a poll of the status URL, not a redirect followed."""
    return urlsplit(handler.path).path != LOOP_PATH


def in_turn(*behaviours: Behaviour) -> Behaviour:
    """The n-th poll gets the n-th behaviour; later ones get the last."""
    turn = [0]

    def behaviour(handler: BaseHTTPRequestHandler) -> None:
        if is_new_poll(handler):
            turn[0] += 1
        behaviours[min(max(turn[0], 1), len(behaviours)) - 1](handler)

    return behaviour


# Hostile documents: valid JSON that Zuul would never send.


def _jobs(document: dict) -> Iterator[dict]:
    for item in _items(document):
        yield from item.get("jobs") or []


def _items(document: dict) -> Iterator[dict]:
    for pipeline in document["pipelines"]:
        for change_queue in pipeline.get("change_queues") or []:
            for head in change_queue.get("heads") or []:
                yield from head


def with_nulls(document: dict) -> bytes:
    """Every value but the containers that hold pipelines, queues and heads is null."""
    document = copy.deepcopy(document)
    document["zuul_version"] = None
    document["last_reconfigured"] = None
    for pipeline in document["pipelines"]:
        pipeline["name"] = None
        for change_queue in pipeline["change_queues"]:
            change_queue.update(name=None, window=None)
            change_queue["heads"].append(None)
            for head in change_queue["heads"]:
                for item in head or []:
                    for key in item:
                        if key != "jobs":
                            item[key] = None
                    item["jobs"] = [dict.fromkeys(job, None) for job in item["jobs"]]
                    item["jobs"].append(None)
    return orjson.dumps(document)


def with_strings_for_numbers(document: dict) -> bytes:
    """Numbers and booleans written as strings, some of them not numbers at all."""
    document = copy.deepcopy(document)
    for index, item in enumerate(_items(document)):
        item["enqueue_time"] = str(item.get("enqueue_time"))
        item["live"] = str(item.get("live")).lower()
        for job in item.get("jobs") or []:
            for key in ("elapsed_time", "remaining_time", "start_time", "end_time"):
                job[key] = str(job.get(key)) if index % 3 else "soon"
            job["voting"] = "maybe" if index % 2 else "false"
    return orjson.dumps(document)


def with_absurd_times(document: dict) -> bytes:
    """Times before 1970 and after the year 10000, durations negative and huge."""
    document = copy.deepcopy(document)
    document["last_reconfigured"] = -(2**62)
    values = (-1, -(2**62), 2**62, 1e300, -1e300, 253402300800, 0)
    for index, item in enumerate(_items(document)):
        item["enqueue_time"] = values[index % len(values)]
        item["remaining_time"] = values[(index + 1) % len(values)]
        for offset, job in enumerate(item.get("jobs") or []):
            for key in ("elapsed_time", "remaining_time", "start_time", "end_time"):
                job[key] = values[(index + offset + len(key)) % len(values)]
    return orjson.dumps(document)


ODD_NAMES = (
    "ünïcødé-jöb-名前-имя-🚦",
    "nul\x00inside",
    "bell\x07escape\x1b[31mred\x1b[0m",
    "right-to-left\u202eelbat",
    "zero\u200bwidth",
    "line\nbreak\ttab\rreturn",
    "x" * 5000,
)


def with_odd_names(document: dict) -> bytes:
    """Names with unicode, control characters, NUL and great length."""
    document = copy.deepcopy(document)
    names = iter(ODD_NAMES * 1000)
    for pipeline in document["pipelines"]:
        pipeline["name"] = next(names)
        for change_queue in pipeline["change_queues"]:
            change_queue["name"] = next(names)
    for item in _items(document):
        item["project"] = next(names)
        for job in item.get("jobs") or []:
            job["name"] = next(names)
    return orjson.dumps(document)


def many_items(count: int = 10_000) -> bytes:
    """One pipeline with ``count`` live items of one job each, in 100 queues."""
    start_ms = int(TAKEN.timestamp() * 1000) - 3_600_000
    queues = []
    for queue_number in range(100):
        head = []
        for number in range(count // 100):
            change = queue_number * 1000 + number
            head.append(
                {
                    "id": f"{change},1",
                    "project": f"demo/project-{queue_number}",
                    "live": True,
                    "enqueue_time": start_ms + change,
                    "jobs": [{"name": "tox-py311", "uuid": f"a{change:031x}"}],
                }
            )
        queues.append({"name": f"queue-{queue_number}", "heads": [head]})
    return orjson.dumps({"pipelines": [{"name": "check", "change_queues": queues}]})


# The table the fault tests and the soak draw from.


@dataclass(frozen=True)
class Fault:
    """One way for an upstream to misbehave, and how the recorder should take it.

    ``reason`` is a regular expression that the poll's error must match
    (``None`` where the poll is stored and has no error). A fault has either a
    ``behaviour`` (how the usual upstream answers) or an ``address`` (a
    context manager yielding another URL to poll instead).
    """

    name: str
    outcome: str
    reason: str | None
    behaviour: Behaviour | None = None
    address: Callable[[], contextlib.AbstractContextManager[str]] | None = None
    retry_after_s: float = 0.0
    # Seconds that storing what the fault brings may take, beyond the fetch.
    store_allowance_s: float = 0.0
    # The whole body a client receives with status 200, when there is one.
    body: bytes | None = None

    @contextlib.contextmanager
    def injected(self, upstream: Upstream) -> Iterator[str]:
        """Make ``upstream`` misbehave (or point elsewhere); yield the URL to poll."""
        if self.address is not None:
            with self.address() as url:
                yield url
            return
        previous, upstream.behaviour = upstream.behaviour, self.behaviour
        try:
            yield upstream.url
        finally:
            upstream.behaviour = previous


DEADLINE = r"^deadline (of [0-9.]+ s exceeded|exceeded while reading the body)$"


def answering(
    name: str, outcome: str, reason: str | None, body: bytes, **fields
) -> Fault:
    """A fault that answers 200 with a whole ``body`` that is not good status."""
    content_type = "text/html" if body.startswith(b"<") else "application/json"
    return Fault(
        name,
        outcome,
        reason,
        send_body(body, content_type=content_type),
        body=body,
        **fields,
    )


def faults() -> list[Fault]:
    """Every fault of issue 7, and a few more of the same families."""
    body = good_body()
    document = good_document()
    half = body[: len(body) // 2]
    return [
        Fault("no answer at all", "failed", DEADLINE, address=silent_listener),
        Fault("headers never sent", "failed", DEADLINE, behaviour=hang),
        Fault("status line then silence", "failed", DEADLINE, status_line_only),
        Fault("one byte a second", "failed", DEADLINE, trickle(body, 1.0)),
        Fault(
            "unresolvable host",
            "failed",
            f"^host name does not resolve$|{DEADLINE}",
            address=unresolvable_host,
        ),
        Fault(
            "connection refused",
            "failed",
            "^connection refused$",
            address=refusing_port,
        ),
        Fault(
            "closed without an answer",
            "failed",
            "^connection closed without an answer$",
            close_at_once,
        ),
        Fault(
            "HTTP 500", "failed", "^HTTP 500 Internal Server Error$", error_status(500)
        ),
        Fault("HTTP 502", "failed", "^HTTP 502 Bad Gateway$", error_status(502)),
        Fault(
            "HTTP 503", "failed", "^HTTP 503 Service Unavailable$", error_status(503)
        ),
        Fault("HTTP 404", "failed", "^HTTP 404 Not Found$", error_status(404)),
        Fault(
            "HTTP 429 with Retry-After",
            "failed",
            "^HTTP 429 Too Many Requests$",
            rate_limited("3"),
            retry_after_s=3.0,
        ),
        answering(
            "HTML page with status 200",
            "unparsed",
            "^invalid JSON",
            b"<html><body>Zuul is down for maintenance</body></html>",
        ),
        answering("invalid JSON", "unparsed", "^invalid JSON", b'{"pipelines": ['),
        answering("empty body", "unparsed", "^invalid JSON", b""),
        answering(
            "JSON nested too deep",
            "unparsed",
            "^invalid JSON",
            b"[" * 100_000 + b"]" * 100_000,
        ),
        Fault("truncated body", "failed", "^body cut short: ", truncated(body)),
        Fault(
            "connection reset in the body",
            "failed",
            # Whether the reset overtakes the data already sent is up to the
            # kernel: either way the poll names a broken body.
            "^(connection broken while reading the body|body cut short)",
            reset_mid_body(body),
        ),
        Fault(
            "body cut short without a length",
            "unparsed",
            "^invalid JSON",
            unsized(half),
            body=half,
        ),
        Fault(
            "gzip body cut short without a length",
            "unparsed",
            "^invalid JSON",
            unsized(gzip.compress(body)[:2000], content_encoding="gzip"),
        ),
        Fault(
            "body over the size limit",
            "failed",
            f"over the limit of {MAX_BYTES}",
            send_body(b" " * (MAX_BYTES + 1)),
        ),
        Fault(
            "body over the size limit without a length",
            "failed",
            f"over the limit of {MAX_BYTES}",
            unsized(b" " * (MAX_BYTES + 1)),
        ),
        Fault("gzip bomb", "failed", f"over the limit of {MAX_BYTES}", gzip_bomb),
        Fault(
            "gzip that is not gzip",
            "failed",
            "^body could not be decoded",
            not_gzip_at_all,
        ),
        Fault("redirect loop", "failed", "^too many redirects$", redirect_to()),
        Fault(
            "redirect to a file URL",
            "failed",
            "^unsupported URL",
            redirect_to("file:///etc/passwd"),
        ),
        answering(
            "a JSON list", "unparsed", "^expected a JSON object, got a list$", b"[]"
        ),
        answering(
            "a JSON string",
            "unparsed",
            "^expected a JSON object, got a string$",
            b'"pipelines"',
        ),
        answering(
            "an empty object",
            "unparsed",
            "^no 'pipelines' list in the document$",
            b"{}",
        ),
        answering(
            "pipelines missing",
            "unparsed",
            "^no 'pipelines' list in the document$",
            orjson.dumps({"zuul_version": "11.3.0", "message": "hi"}),
        ),
        answering(
            "pipelines not a list",
            "unparsed",
            "^no 'pipelines' list in the document$",
            b'{"pipelines": {"check": []}}',
        ),
        answering("nulls everywhere", "stored", None, with_nulls(document)),
        answering(
            "strings for numbers", "stored", None, with_strings_for_numbers(document)
        ),
        answering(
            "negative and huge times", "stored", None, with_absurd_times(document)
        ),
        answering(
            "unicode and control characters in names",
            "stored",
            None,
            with_odd_names(document),
        ),
        answering(
            "ten thousand items",
            "stored",
            None,
            many_items(),
            store_allowance_s=15.0,
        ),
    ]


def soak_faults() -> list[Fault]:
    """The faults a single upstream can play at random (no other address)."""
    return [fault for fault in faults() if fault.behaviour is not None]


def lateness_s(
    polls: list[tuple[datetime, int, int | None]],
    interval_s: float,
    retry_after_s: float = 0.0,
) -> list[float]:
    """How late each poll after the first started, against the scheduler's ticks.

    ``polls`` are ``(started_at, duration_ms, http_status)`` in order; ticks
    are counted from the first poll. A poll is due at the first tick after
    the previous one's own tick and after its fetch ended (a tick during a
    poll is skipped: ``max_instances=1``), and after the Retry-After of a
    429, counted from when that answer came.
    """
    first = polls[0][0]
    late = []
    for (started_at, duration_ms, http_status), (next_started_at, _, _) in zip(
        polls, polls[1:], strict=False
    ):
        offset_s = (started_at - first).total_seconds()
        allowed_s = offset_s + duration_ms / 1000
        if http_status == 429:
            allowed_s += retry_after_s
        tick = max(
            round(offset_s / interval_s) + 1,
            math.ceil(allowed_s / interval_s - 0.01),
        )
        late.append((next_started_at - first).total_seconds() - tick * interval_s)
    return late


class RandomlyFaulty:
    """A behaviour that misbehaves at random, and otherwise serves ``serve_good``.

    It remembers the bodies it served successfully, so that a soak can check
    that every one of them was stored.
    """

    def __init__(
        self,
        serve_good: Callable[[], bytes],
        fault_list: list[Fault],
        fault_ratio: float = 1 / 3,
        seed: int = 0,
    ):
        self.serve_good = serve_good
        self.faults = fault_list
        self.fault_ratio = fault_ratio
        self.rng = random.Random(seed)  # noqa: S311 - a soak, not cryptography
        self.lock = threading.Lock()
        self.served: list[bytes] = []
        self.played: dict[str, int] = {}
        self.current: Fault | None = None
        # (monotonic arrival, fault name or None) of every poll, in order.
        self.polls: list[tuple[float, str | None]] = []

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        with self.lock:
            if self.current is not None and not is_new_poll(handler):
                fault = self.current  # a redirect of the fault being played
            elif self.rng.random() < self.fault_ratio:
                fault = self.rng.choice(self.faults)
                self.played[fault.name] = self.played.get(fault.name, 0) + 1
            else:
                fault = None
            if self.current is None or is_new_poll(handler):
                self.polls.append((time.monotonic(), fault and fault.name))
            self.current = fault
            body = fault.body if fault is not None else self.serve_good()
        if fault is not None:
            fault.behaviour(handler)
        else:
            send_body(body)(handler)
        if body is not None:
            handler.wfile.flush()
            # Counted once the whole body is on its way: a client that gave
            # up before then never had it to store.
            with self.lock:
                self.served.append(body)
