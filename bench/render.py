"""Render benchmark: the history pages over a day of the largest real capture.

Evolves the largest capture in ../shared/fixtures/zuul-status/ through a day
at a 30-second interval (2,880 polls, with a 7-minute outage of failed polls
at 10:00), records it as the recorder does, and prints in one run the median
server-side time (Flask's test client: routing, queries, parsing, templates;
no network) of:

- the snapshot view of a snapshot in the middle of the day, with its
  timeline strip, and the latest view;
- the diff of two consecutive snapshots, and of two an hour apart;
- the story of the change seen longest in the day, and of the one with the
  most builds;

each against the 150 ms target, with the body cache emptied before every
request so that nothing is served warm. Then the page weight: the HTML, CSS
and JavaScript of the views, gzip-compressed, next to the gzipped JSON that
Zuul's own page downloads every few seconds, for a snapshot of the day and
for the capture file itself stored alone.

The database is built once (a few minutes) and kept in the temporary folder
for the next runs, keyed by the capture and the storage code it was built by.

    .venv/bin/python bench/render.py [--runs 30] [--rebuild] [--database-url URL]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
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

from recorder import store  # noqa: E402
from recorder.db import make_engine, make_sessionmaker, session_scope  # noqa: E402
from recorder.migrate import upgrade  # noqa: E402
from recorder.models import Build, Snapshot, build_last_snapshot_id  # noqa: E402
from recorder.settings import Settings, SourceSettings  # noqa: E402
from recorder.simulator import StatusEvolver  # noqa: E402
from webui import create_app  # noqa: E402

CAPTURE = (
    PROJECT_ROOT.parent
    / "shared/fixtures/zuul-status/zuul2.0.0-2015-04-openstack-full.json"
)
START = datetime(2026, 11, 2, tzinfo=UTC)
STEP_S = 30
POLLS = 2880
OUTAGE = range(1200, 1214)  # polls 10:00:00 to 10:06:30 fail
SOURCE = "openstack"
URL = "https://zuul.openstack.org/status.json"
TARGET_MS = 150.0
# What decides how the kept database reads back: its schema and the encoding
# of bodies. A change to either means building it again (or use --rebuild).
STORAGE_CODE = ("migrations/versions", "recorder/codec.py", "recorder/chain.py")


def database_path() -> Path:
    digest = hashlib.sha256(CAPTURE.read_bytes())
    for name in STORAGE_CODE:
        path = PROJECT_ROOT / name
        for part in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if part.exists():
                digest.update(part.read_bytes())
    folder = Path(tempfile.gettempdir()) / "zuul-status-bench"
    folder.mkdir(exist_ok=True)
    return folder / f"render-day-{digest.hexdigest()[:16]}.sqlite"


def build_day(url: str) -> None:
    """Record a day of the evolving capture, with an outage, poll by poll."""
    upgrade(url)
    engine = make_engine(url, writer=True)
    sessions = make_sessionmaker(engine)
    evolver = StatusEvolver(json.loads(CAPTURE.read_bytes()), seed=2015, now=START)
    cache = store.BuildCache()
    started = time.perf_counter()
    for index in range(POLLS):
        taken_at = START + timedelta(seconds=index * STEP_S)
        with session_scope(sessions) as session:
            source = store.get_or_create_source(session, SOURCE, URL)
            if index in OUTAGE:
                store.store_poll(
                    session, source, taken_at, 10_000, None, error="connection refused"
                )
            else:
                body = evolver.body()
                store.store_poll(session, source, taken_at, 900, body, 200, cache=cache)
        evolver.advance(STEP_S)
        if index % 480 == 479:
            elapsed = time.perf_counter() - started
            print(f"  recorded {index + 1} of {POLLS} polls in {elapsed:.0f} s")
    # Closing the last connection folds the write-ahead log into the file.
    engine.dispose()


def clear_body_cache() -> None:
    """Empty the recorder's cache of decoded bodies, wherever it lives."""
    for module_name in ("recorder.chain", "recorder.store"):
        module = sys.modules.get(module_name)
        for name in ("body_cache", "_body_cache"):
            cache = getattr(module, name, None)
            if cache is not None:
                cache.bodies.clear()


def measure(client, path: str, runs: int) -> tuple[float, float, int]:
    """Median wall and CPU milliseconds of ``runs`` cold requests, and the size."""
    walls, cpus, size = [], [], 0
    for _ in range(runs):
        clear_body_cache()
        wall, cpu = time.perf_counter(), time.process_time()
        response = client.get(path)
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
        if response.status_code != 200:
            raise SystemExit(f"{path}: HTTP {response.status_code}")
        size = len(response.data)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000, size


def pick_changes(url: str) -> tuple[str, str, int, int]:
    """The change seen longest in the day, and the one with the most builds."""
    sessions = make_sessionmaker(make_engine(url))
    with sessions() as session:
        rows = session.execute(
            select(
                Build.change,
                func.count(),
                func.min(Build.first_snapshot_id),
                func.max(build_last_snapshot_id()),
            )
            .where(Build.change.is_not(None))
            .group_by(Build.change)
        ).all()
    longest = max(rows, key=lambda row: (row[3] - row[2], row[1]))
    busiest = max(rows, key=lambda row: row[1])
    return longest[0], busiest[0], longest[3] - longest[2] + 1, busiest[1]


def middle_snapshots(url: str) -> tuple[int, int, int]:
    """A snapshot at midday, the one after it, and the one an hour before it."""
    sessions = make_sessionmaker(make_engine(url))
    with sessions() as session:
        ids = session.scalars(select(Snapshot.id).order_by(Snapshot.taken_at)).all()
    middle = len(ids) // 2
    return ids[middle], ids[middle + 1], ids[middle - 3600 // STEP_S]


def latest_id(url: str) -> int:
    sessions = make_sessionmaker(make_engine(url))
    with sessions() as session:
        return session.scalar(
            select(Snapshot.id).order_by(Snapshot.taken_at.desc()).limit(1)
        )


def report(label: str, wall_ms: float, cpu_ms: float, note: str = "") -> None:
    verdict = "ok" if wall_ms < TARGET_MS else "OVER"
    print(
        f"{label:<44}{wall_ms:>8.1f} ms  (CPU {cpu_ms:5.1f} ms)  "
        f"target < {TARGET_MS:.0f} ms: {verdict}{note}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--database-url", help="an already recorded database")
    args = parser.parse_args()
    if not CAPTURE.exists():
        print(f"skipped: {CAPTURE} is absent")
        return 0

    url = args.database_url or kept_database(args.rebuild)
    print(f"database: {url}")
    settings = Settings(
        database_url=url, sources=(SourceSettings(name=SOURCE, url=URL),)
    )
    client = create_app(settings).test_client()
    client.get("/")  # let the templates compile once
    print(f"{args.runs} cold requests each, median (server side, Flask test client):")
    print()
    render_times(client, url, args.runs)
    print()
    page_weight(client, middle_snapshots(url)[0], latest_id(url))
    return 0


def kept_database(rebuild: bool) -> str:
    """The URL of the day's database, built first if it is not kept yet."""
    path = database_path()
    if rebuild or not path.exists():
        print(f"building {path} ({POLLS} polls of {CAPTURE.name}) once")
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        build_day(f"sqlite:///{partial}")
        partial.rename(path)
        for suffix in ("-wal", "-shm"):
            Path(f"{partial}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def render_times(client, url: str, runs: int) -> None:
    """Time each page of the issue against the target, and print it."""
    middle, after, hour_before = middle_snapshots(url)
    longest, busiest, longest_span, busiest_builds = pick_changes(url)
    pages = (
        ("snapshot view (with its timeline strip)", f"/snapshots/{middle}", ""),
        ("latest view", "/", ""),
        ("diff of two consecutive snapshots", f"/diff/{middle}/{after}", ""),
        ("diff of two snapshots an hour apart", f"/diff/{hour_before}/{middle}", ""),
        (
            f"change story, longest seen ({longest})",
            f"/changes/{longest}",
            f"; seen in {longest_span} snapshots",
        ),
        (
            f"change story, most builds ({busiest})",
            f"/changes/{busiest}",
            f"; {busiest_builds} builds",
        ),
    )
    for label, path, note in pages:
        wall, cpu, _ = measure(client, f"{path}?source={SOURCE}", runs)
        report(label, wall, cpu, note)


def page_weight(client, snapshot_id: int, latest_id: int) -> None:
    """Gzipped HTML, CSS and JS of the views against the gzipped status JSON."""
    css = gzipped(client.get("/static/style.css").data)
    script = gzipped(client.get("/static/app.js").data)
    print("page weight, gzip -6 (what a browser downloads), against the gzipped")
    print("status JSON of the same snapshot (what Zuul's page downloads each time):")
    for label, path, shown_id, parts in (
        ("latest view", f"/?source={SOURCE}", latest_id, (css, script)),
        ("snapshot view", f"/snapshots/{snapshot_id}", snapshot_id, (css,)),
    ):
        html = gzipped(client.get(path).data)
        raw = client.get(f"/api/snapshots/{shown_id}/raw").data
        ours, zuul = html + sum(parts), gzipped(raw)
        names = "HTML+CSS+JS" if len(parts) > 1 else "HTML+CSS"
        sizes = " + ".join(f"{n:,}" for n in (html, *parts))
        print(
            f"  {label:<14} {names} {sizes} = {ours:,} bytes; JSON {zuul:,} "
            f"({len(raw):,} raw); ours/JSON = {ours / zuul:.2f} "
            f"(target < 1: {'ok' if ours < zuul else 'OVER'})"
        )
    capture_weight(css, script)


def capture_weight(css: int, script: int) -> None:
    """The same for the capture file itself, stored alone as it was received."""
    body = CAPTURE.read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/capture.sqlite"
        upgrade(url)
        engine = make_engine(url, writer=True)
        with session_scope(make_sessionmaker(engine)) as session:
            source = store.get_or_create_source(session, SOURCE, URL)
            store.store_body(session, source, body, START)
        engine.dispose()
        settings = Settings(
            database_url=url, sources=(SourceSettings(name=SOURCE, url=URL),)
        )
        html = gzipped(create_app(settings).test_client().get("/").data)
    ours, zuul = html + css + script, gzipped(body)
    print(
        f"  the capture file HTML+CSS+JS {html:,} + {css:,} + {script:,} = "
        f"{ours:,} bytes; JSON {zuul:,} ({len(body):,} raw); ours/JSON = "
        f"{ours / zuul:.2f} (target < 1: {'ok' if ours < zuul else 'OVER'})"
    )


def gzipped(data: bytes) -> int:
    return len(gzip.compress(data, 6))


if __name__ == "__main__":
    sys.exit(main())
