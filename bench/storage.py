"""Storage benchmark: a busy day of snapshots of the largest real capture.

Evolves the largest capture in ../shared/fixtures/zuul-status/ through a day
at a 30-second interval (running jobs advance, jobs finish and start, items
arrive and leave), records every body as the recorder does, and prints in one
run: raw bytes, stored bytes and their ratio; the same for gzip of each body
alone (what a naive recorder reaches); the median time to store a snapshot
against the median ``json.loads`` of the same body; the median time to read a
snapshot back; and the projected size of a year at one poll a minute.

    .venv/bin/python bench/storage.py [--hours 24] [--database-url URL]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from recorder import chain, store  # noqa: E402
from recorder.db import make_engine, make_sessionmaker, session_scope  # noqa: E402
from recorder.migrate import upgrade  # noqa: E402
from recorder.models import Snapshot  # noqa: E402
from recorder.simulator import StatusEvolver  # noqa: E402

CAPTURE = (
    PROJECT_ROOT.parent
    / "shared/fixtures/zuul-status/zuul2.0.0-2015-04-openstack-full.json"
)
START = datetime(2026, 11, 2, tzinfo=UTC)
MINUTES_A_YEAR = 365 * 24 * 60


def make_day(hours: float, step_s: float) -> list[bytes]:
    """Bodies of the evolving capture, one per step."""
    evolver = StatusEvolver(json.loads(CAPTURE.read_bytes()), seed=2015, now=START)
    bodies = []
    for _ in range(int(hours * 3600 / step_s)):
        bodies.append(evolver.body())
        evolver.advance(step_s)
    return bodies


def record(url: str, bodies: list[bytes], step_s: float) -> tuple[list, list]:
    """Store each body in its own transaction, as the recorder does.

    Returns the store times and, measured right before each, the
    ``json.loads`` time of the same body: pairs, so that their ratio holds
    however the machine's speed drifts.
    """
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url, writer=True))
    cache = store.BuildCache()
    store_times, loads_times = [], []
    for index, body in enumerate(bodies):
        taken_at = START + timedelta(seconds=index * step_s)
        started = time.perf_counter()
        json.loads(body)
        loads_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        with session_scope(sessions) as session:
            source = store.get_or_create_source(session, "openstack", "http://zuul/")
            store.store_body(session, source, body, taken_at, cache=cache)
        store_times.append(time.perf_counter() - started)
    return store_times, loads_times


def stored_bytes(url: str) -> int:
    with make_sessionmaker(make_engine(url))() as session:
        return session.scalar(select(func.sum(func.length(Snapshot.body))))


def read_back_times(url: str, bodies: list[bytes], samples: int = 200) -> list[float]:
    """Cold reads (no body cache) of evenly spread snapshots, checked byte for byte."""
    sessions = make_sessionmaker(make_engine(url))
    with sessions() as session:
        ids = session.scalars(select(Snapshot.id).order_by(Snapshot.taken_at)).all()
    times = []
    for index in range(0, len(ids), max(1, len(ids) // samples)):
        chain.body_cache.bodies.clear()
        started = time.perf_counter()
        with sessions() as session:
            body = store.read_body(session, session.get(Snapshot, ids[index]))
        times.append(time.perf_counter() - started)
        assert body == bodies[index], f"snapshot {ids[index]} differs"
    return times


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--step", type=float, default=30.0, help="seconds")
    parser.add_argument("--database-url", help="default: a temporary SQLite file")
    args = parser.parse_args()
    if not CAPTURE.exists():
        print(f"skipped: {CAPTURE} is absent")
        return 0

    print(f"capture: {CAPTURE.name} ({CAPTURE.stat().st_size:,} bytes as stored)")
    started = time.perf_counter()
    bodies = make_day(args.hours, args.step)
    print(
        f"evolved {len(bodies)} bodies ({args.hours:g} h every {args.step:g} s) "
        f"in {time.perf_counter() - started:.1f} s"
    )

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.sqlite"
        store_times, loads_times = record(url, bodies, args.step)
        raw = sum(map(len, bodies))
        ours = stored_bytes(url)
        gzipped = sum(len(gzip.compress(body, 6)) for body in bodies)
        read_times = read_back_times(url, bodies)
        database_file = Path(url.removeprefix("sqlite:///"))
        file_bytes = database_file.stat().st_size if url.startswith("sqlite") else None

        minute_url = f"sqlite:///{tmp}/minute.sqlite"
        minute_bodies = bodies[
            : int(6 * 3600 / args.step) : max(1, int(60 / args.step))
        ]
        record(minute_url, minute_bodies, 60)
        per_minute = stored_bytes(minute_url) / len(minute_bodies)
        minute_file = Path(minute_url.removeprefix("sqlite:///")).stat().st_size

    store_ms, loads_ms = median_ms(store_times), median_ms(loads_times)
    ratios = [a / b for a, b in zip(store_times, loads_times, strict=True)]
    read_ms = median_ms(read_times)
    print()
    print(f"{'raw bytes':<40}{raw:>16,}")
    print(
        f"{'stored bytes (ours)':<40}{ours:>16,}   raw/ours = {raw / ours:,.0f}x "
        "(target >= 100x)"
    )
    print(
        f"{'gzip of each body alone (anchor)':<40}{gzipped:>16,}   raw/gzip = "
        f"{raw / gzipped:,.1f}x; gzip/ours = {gzipped / ours:,.1f}x (target >= 5x)"
    )
    if file_bytes:
        print(f"{'SQLite file, all tables and indexes':<40}{file_bytes:>16,}")
    print(
        f"{'store one snapshot, median':<40}{store_ms:>13.1f} ms   "
        f"json.loads median {loads_ms:.1f} ms; median of paired ratios "
        f"{statistics.median(ratios):.2f} (target <= 3)"
    )
    print(
        f"{'read one snapshot back, median (cold)':<40}{read_ms:>13.1f} ms   "
        f"max {max(read_times) * 1000:.1f} ms (target < 50 ms)"
    )
    year_bodies = per_minute * MINUTES_A_YEAR
    year_file = minute_file / len(minute_bodies) * MINUTES_A_YEAR
    print(
        f"{'a year at one poll a minute':<40}{year_bodies / 1e9:>13.2f} GB   "
        f"of bodies; {year_file / 1e9:.2f} GB of SQLite file with builds and "
        f"counts (raw JSON: {len(bodies[0]) * MINUTES_A_YEAR / 1e9:,.0f} GB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
