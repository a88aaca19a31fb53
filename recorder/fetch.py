"""Fetching a status URL under a hard deadline and a byte budget."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests

USER_AGENT = "zuul-status-recorder/0.1"
CHUNK_BYTES = 64 * 1024
MAX_REDIRECTS = 5
# A Retry-After longer than this is shortened to it: a hostile or confused
# upstream must not stop recording for days (or, with "inf", for ever).
MAX_RETRY_AFTER_S = 3600.0
_INCOMPLETE_READ = re.compile(r"IncompleteRead\((\d+) bytes read, (\d+) more expected")
# Control characters sent by the upstream (in a reason phrase, a redirect)
# never reach the database (PostgreSQL refuses NUL in text) or the log.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(slots=True)
class FetchResult:
    """The outcome of one fetch: a body, or the reason there is none."""

    started_at: datetime
    duration_ms: int = 0
    http_status: int | None = None
    body: bytes | None = None
    error: str | None = None
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.body is not None


@dataclass
class _Attempt:
    """State shared between the waiting caller and the worker thread."""

    response: requests.Response | None = None
    result: FetchResult | None = None
    done: threading.Event = field(default_factory=threading.Event)


def fetch(
    url: str,
    connect_timeout_s: float = 5.0,
    deadline_s: float = 30.0,
    max_bytes: int = 64 * 1024 * 1024,
    cancel: threading.Event | None = None,
) -> FetchResult:
    """Fetch ``url``; return within ``deadline_s`` whatever the server or DNS does.

    The request runs in a worker thread. Name resolution and a server that
    trickles bytes are not bounded by socket timeouts, so the caller waits on
    the deadline and, when it passes, closes the connection under the worker
    and abandons it.
    """
    started_at = datetime.now(UTC)
    start = time.monotonic()
    attempt = _Attempt()
    worker = threading.Thread(
        target=_run,
        args=(attempt, url, connect_timeout_s, start + deadline_s, max_bytes),
        name="zuul-status-fetch",
        daemon=True,
    )
    worker.start()

    if not _wait(attempt.done, start + deadline_s, cancel):
        _abandon(attempt)
        canceled = cancel is not None and cancel.is_set()
        error = "canceled" if canceled else f"deadline of {deadline_s:g} s exceeded"
        result = FetchResult(started_at, error=error)
        if attempt.response is not None:
            result.http_status = attempt.response.status_code
    else:
        result = attempt.result
    if result.error:
        result.error = _CONTROL.sub(" ", result.error)
    result.started_at = started_at
    result.duration_ms = int((time.monotonic() - start) * 1000)
    return result


def _wait(
    done: threading.Event, deadline: float, cancel: threading.Event | None
) -> bool:
    """Wait for ``done`` until the deadline, or until ``cancel`` is set."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (cancel is not None and cancel.is_set()):
            return done.is_set()
        if done.wait(min(remaining, 0.1) if cancel is not None else remaining):
            return True


def _abandon(attempt: _Attempt) -> None:
    """Wake the worker by shutting its socket down; closing would wait on its lock."""
    response = attempt.response
    connection = getattr(getattr(response, "raw", None), "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _run(
    attempt: _Attempt,
    url: str,
    connect_timeout_s: float,
    deadline: float,
    max_bytes: int,
) -> None:
    started_at = datetime.now(UTC)
    try:
        attempt.result = _get(attempt, url, connect_timeout_s, deadline, max_bytes)
    except requests.exceptions.TooManyRedirects:
        attempt.result = FetchResult(started_at, error="too many redirects")
    except requests.exceptions.ConnectTimeout:
        attempt.result = FetchResult(
            started_at, error=f"connect timeout after {connect_timeout_s:g} s"
        )
    except requests.exceptions.ConnectionError as error:
        attempt.result = FetchResult(started_at, error=_connection_reason(error))
    except requests.exceptions.ChunkedEncodingError as error:
        attempt.result = FetchResult(started_at, error=_broken_body_reason(error))
    except requests.exceptions.ContentDecodingError as error:
        attempt.result = FetchResult(
            started_at, error=f"body could not be decoded: {str(error)[:300]}"
        )
    except (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL) as error:
        # Only a redirect can lead here: the configured URL is checked at start.
        attempt.result = FetchResult(
            started_at, error=f"unsupported URL: {str(error)[:300]}"
        )
    except requests.exceptions.RequestException as error:
        attempt.result = FetchResult(started_at, error=f"request failed: {error}")
    except Exception as error:  # noqa: BLE001 - any failure is a failed poll
        attempt.result = FetchResult(
            started_at, error=f"{type(error).__name__}: {error}"
        )
    finally:
        attempt.done.set()


def _get(
    attempt: _Attempt,
    url: str,
    connect_timeout_s: float,
    deadline: float,
    max_bytes: int,
) -> FetchResult:
    started_at = datetime.now(UTC)
    # The caller's deadline is the bound; the socket timeout only makes sure an
    # abandoned worker ends soon after it, so it is set a little later.
    read_timeout = max(0.1, deadline - time.monotonic()) + 0.5
    with requests.Session() as session:
        session.max_redirects = MAX_REDIRECTS
        response = session.get(
            url,
            stream=True,
            timeout=(connect_timeout_s, read_timeout),
            headers={"Accept-Encoding": "gzip", "User-Agent": USER_AGENT},
        )
        attempt.response = response
        with response:
            result = FetchResult(started_at, http_status=response.status_code)
            if response.status_code != 200:
                reason = (response.reason or "")[:100]
                result.error = f"HTTP {response.status_code} {reason}".strip()
                result.retry_after_s = _retry_after(response)
                return result
            result.body, result.error = _read_body(response, deadline, max_bytes)
            return result


def _read_body(
    response: requests.Response, deadline: float, max_bytes: int
) -> tuple[bytes | None, str | None]:
    declared = response.headers.get("Content-Length")
    encoded = response.headers.get("Content-Encoding")
    if declared and declared.isdigit() and not encoded and int(declared) > max_bytes:
        return None, f"body of {declared} bytes is over the limit of {max_bytes}"

    chunks, size = [], 0
    # iter_content yields decoded bytes, so a small gzip body that inflates
    # without bound is caught by the same budget.
    for chunk in response.iter_content(CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            return None, f"body over the limit of {max_bytes} bytes"
        if time.monotonic() > deadline:
            return None, "deadline exceeded while reading the body"
        chunks.append(chunk)
    return b"".join(chunks), None


def _retry_after(response: requests.Response) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), capped."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)
    else:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - datetime.now(UTC)).total_seconds()
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def _connection_reason(error: requests.exceptions.ConnectionError) -> str:
    text = str(error)
    if "NameResolutionError" in text or "Name or service not known" in text:
        return "host name does not resolve"
    if "Connection refused" in text:
        return "connection refused"
    if "Read timed out" in text:
        return "read timeout"
    if "RemoteDisconnected" in text:
        return "connection closed without an answer"
    if "IncompleteRead" in text or "ProtocolError" in text:
        return f"connection broken: {text[:300]}"
    return f"connection failed: {text[:300]}"


def _broken_body_reason(error: requests.exceptions.ChunkedEncodingError) -> str:
    text = str(error)
    match = _INCOMPLETE_READ.search(text)
    if match:
        read, missing = match.groups()
        return f"body cut short: {read} bytes read, {missing} more expected"
    return f"connection broken while reading the body: {text[:300]}"
