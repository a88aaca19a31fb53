"""Load on the latest-snapshot page, through nginx and uWSGI as they ship.

Starts nginx and uWSGI from nginx/default.conf and uwsgi.ini exactly as the
end-to-end test does (tests/test_production.py), with a database holding the
largest real capture, and runs CLIENTS concurrent clients for DURATION seconds
against ``/``: first with nothing else running, then while the recorder
stores a new snapshot every 5 seconds (a fake Zuul whose body evolves). A
third run asks for a different URL each time, so that nginx's micro-cache
never answers and every request is rendered by uWSGI: what the cache saves.

Uses ``wrk`` when it is installed (Debian: ``apt-get install wrk``), else a
pool of Python threads. Clients send ``Accept-Encoding: gzip``, as browsers
do. Exits 1 if the first two runs miss the target: no errors and a p99 under
500 ms.

    .venv/bin/python bench/load.py [--clients 50] [--duration 30]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import requests  # noqa: E402 - after the path that finds the project

from recorder.db import make_engine  # noqa: E402
from recorder.fake_upstream import make_server  # noqa: E402
from tests.conftest import LARGEST_CAPTURE  # noqa: E402
from tests.test_production import (  # noqa: E402
    production_stack,
    require_nginx,
    serve_in_thread,
)

TARGET_P99_MS = 500.0
RECORD_EVERY_S = 5.0
HEADERS = {"Accept-Encoding": "gzip"}
# Gives every request of a wrk thread its own URL (a cache miss each time).
# setup() runs once per thread in wrk's main Lua state and sets the global
# ``id`` in that thread's own state.
UNCACHED_LUA = """
local counter = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function request()
  counter = counter + 1
  return wrk.format(nil, "/?bench=" .. id .. "-" .. counter)
end
"""


@dataclass
class LoadResult:
    """What one run of the clients measured."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    tool: str

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def meets_target(self) -> bool:
        return self.errors == 0 and self.p99_ms < TARGET_P99_MS


def run_wrk(url: str, clients: int, duration_s: int, uncached: bool) -> LoadResult:
    """Run wrk and read its summary (with --latency for the percentiles)."""
    command = [
        "wrk", "--latency", "-t", "2", "-c", str(clients), "-d", f"{duration_s}s",
        "--timeout", "10s", "-H", "Accept-Encoding: gzip",
    ]  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if uncached:
            script.write(UNCACHED_LUA)
            script.flush()
            command += ["-s", script.name]
        output = subprocess.run(
            [*command, url], capture_output=True, text=True, check=True
        ).stdout
    return LoadResult(
        requests=int(re.search(r"(\d+) requests in", output)[1]),
        errors=_wrk_errors(output),
        seconds=_seconds(re.search(r"requests in ([\d.]+\w+),", output)[1]),
        p50_ms=_milliseconds(re.search(r"^\s+50%\s+(\S+)", output, re.M)[1]),
        p99_ms=_milliseconds(re.search(r"^\s+99%\s+(\S+)", output, re.M)[1]),
        tool="wrk",
    )


def _wrk_errors(output: str) -> int:
    errors = 0
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sockets:
        errors += sum(int(count) for count in sockets.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx[1])
    return errors


def _milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def _seconds(text: str) -> float:
    return _milliseconds(text) / 1000


def run_threads(url: str, clients: int, duration_s: int, uncached: bool) -> LoadResult:
    """The fallback without wrk: one thread and one HTTP session per client."""
    latencies_ms: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + duration_s

    def client(number: int) -> None:
        session = requests.Session()
        count = 0
        while time.monotonic() < deadline:
            count += 1
            target = f"{url}?bench={number}-{count}" if uncached else url
            started = time.monotonic()
            try:
                response = session.get(target, headers=HEADERS, timeout=10)
                response.content  # noqa: B018 - read the whole body
                failed = response.status_code != 200
            except requests.RequestException:
                failed = True
            elapsed_ms = (time.monotonic() - started) * 1000
            with lock:
                latencies_ms.append(elapsed_ms)
                errors[0] += failed

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    percentiles = (
        statistics.quantiles(latencies_ms, n=100) if latencies_ms else [0] * 99
    )
    return LoadResult(
        requests=len(latencies_ms),
        errors=errors[0],
        seconds=seconds,
        p50_ms=percentiles[49],
        p99_ms=percentiles[98],
        tool="python threads",
    )


def load(url: str, clients: int, duration_s: int, uncached: bool = False) -> LoadResult:
    if shutil.which("wrk"):
        return run_wrk(url, clients, duration_s, uncached)
    return run_threads(url, clients, duration_s, uncached)


def snapshot_count(stack) -> int:
    """Snapshots in the database, read directly (pages may be cached for 2 s)."""
    engine = make_engine(stack.database_url)
    try:
        with engine.connect() as connection:
            return connection.exec_driver_sql("SELECT count(*) FROM snapshots").scalar()
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=int, default=30, help="seconds per run")
    parser.add_argument(
        "--database-url", help="an empty database [default: SQLite in a temp dir]"
    )
    parser.add_argument(
        "--no-uncached",
        action="store_true",
        help="skip the run that bypasses the cache",
    )
    options = parser.parse_args()
    require_nginx()

    upstream = make_server(LARGEST_CAPTURE, speed=10)
    serve_in_thread(upstream)
    results: list[tuple[str, LoadResult, str]] = []
    with production_stack(
        upstream.url, options.database_url, interval_s=RECORD_EVERY_S, record=False
    ) as stack:
        # The database holds the largest capture as received, taken now.
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        stack.zuul_status(
            "import", "--source", "demo", "--taken-at", now, str(LARGEST_CAPTURE)
        )
        page = requests.get(stack.base_url + "/", headers=HEADERS, timeout=30)
        page.raise_for_status()
        gzipped = page.headers.get("Content-Encoding") == "gzip"
        print(
            f"latest page of {LARGEST_CAPTURE.name}: {len(page.content)} bytes of "
            f"HTML{' (sent gzipped)' if gzipped else ''}, through nginx on "
            f"{stack.base_url}",
            flush=True,
        )
        url = stack.base_url + "/"

        result = load(url, options.clients, options.duration)
        results.append(("latest page, recorder idle", result, ""))

        before = snapshot_count(stack)
        stack.start("recorder")
        stack.wait_until(lambda: snapshot_count(stack) > before, "the first recording")
        before = snapshot_count(stack)
        result = load(url, options.clients, options.duration)
        written = snapshot_count(stack) - before
        results.append(
            (f"latest page, recording every {RECORD_EVERY_S:g} s", result,
             f"{written} snapshot(s) written meanwhile")
        )  # fmt: skip

        if not options.no_uncached:
            result = load(url, options.clients, options.duration, uncached=True)
            results.append(("every request rendered by uWSGI", result, "no cache"))
    upstream.shutdown()
    upstream.server_close()

    report(results, options.clients)
    targets = [result.meets_target() for _, result, _ in results[:2]]
    return 0 if all(targets) else 1


def report(results: list[tuple[str, LoadResult, str]], clients: int) -> None:
    load_1m, load_5m, _ = os.getloadavg()
    print(
        f"\n{clients} concurrent clients, tool: {results[0][1].tool}, "
        f"{os.cpu_count()} CPUs, load average {load_1m:.2f} (1 min), "
        f"{load_5m:.2f} (5 min)"
    )
    print(
        f"{'run':<36} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'requests':>9}  note"
    )
    for name, result, note in results:
        print(
            f"{name:<36} {result.per_second:>8.1f} {result.p50_ms:>8.1f} "
            f"{result.p99_ms:>8.1f} {result.errors:>7} {result.requests:>9}  {note}"
        )
    for name, result, _ in results[:2]:
        verdict = "met" if result.meets_target() else "MISSED"
        print(f"target (0 errors, p99 < {TARGET_P99_MS:g} ms) {verdict}: {name}")


if __name__ == "__main__":
    sys.exit(main())
