"""Job pages and CSV export benchmark: one million build rows.

Builds a database of one million realistic build rows (inserted straight into
``builds`` with executemany in batches, in the order a recorder would have
seen them over 90 days of a busy tenant, one job with exactly 100,000 runs),
once per backend (a temporary SQLite file, a temporary PostgreSQL schema),
then prints in one run, for SQLite and for PostgreSQL:

- the rate and peak memory (max RSS) of ``zuul-status export-csv`` exporting
  every row, run as its own process;
- the time ``sqlite3``'s own ``.mode csv`` (and ``psql``'s ``\\copy ... csv``)
  takes to export the same query: the floor;
- the median server-side time of ``/jobs`` (default range: last week) and of
  ``/jobs/<name>`` for the job with 100,000 runs, all of them and the last
  week's, through Flask's test client.

    .venv/bin/python bench/jobs.py [--rows N] [--postgres URL | --no-postgres]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, inspect, text

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from recorder import export  # noqa: E402
from recorder.db import (  # noqa: E402
    make_engine,
    make_sessionmaker,
    normalise_url,
    session_scope,
)
from recorder.migrate import upgrade  # noqa: E402
from recorder.models import Build  # noqa: E402
from recorder.settings import Settings  # noqa: E402
from recorder.store import get_or_create_source, store_body  # noqa: E402

ZUUL_STATUS = PROJECT_ROOT / ".venv" / "bin" / "zuul-status"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PAGE_SAMPLES = 15
# The indexes the job pages and the API are built on (migrations 0001, 0003): the
# bench checks that the schema has them, so that its figures are the schema's.
NEEDED_INDEXES = {
    "ix_builds_job_end": [
        *("job", "end_time", "duration_s", "result", "enqueue_time", "start_time")
    ],
    "ix_builds_end_seen": ["end_time", "last_seen"],
}
# Runs a command as its only child and reports that child's wall time, CPU
# time and peak memory, which RUSAGE_CHILDREN then holds alone.
MEASURE_CHILD = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
subprocess.run(sys.argv[1:], check=True)
elapsed = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = usage.ru_utime + usage.ru_stime
print(json.dumps({"seconds": elapsed, "cpu_s": cpu, "max_rss_kb": usage.ru_maxrss}))
"""


END = datetime(2026, 6, 1, tzinfo=UTC)
DAYS = 90
BIG_JOB = "tempest-full-py3"
BIG_JOB_RUNS = 100_000
JOB_COUNT = 400
BATCH = 10_000


def chooser(weighted) -> tuple[list, list[float]]:
    """Choices and their cumulative weights, for ``random.choices``."""
    choices, weights = zip(*weighted, strict=True)
    return list(choices), list(itertools.accumulate(weights))


def pick(rng: random.Random, table: tuple[list, list[float]]):
    return rng.choices(table[0], cum_weights=table[1])[0]


RESULTS = chooser(
    (
        ("SUCCESS", 0.84),
        ("FAILURE", 0.09),
        ("POST_FAILURE", 0.01),
        ("TIMED_OUT", 0.005),
        ("NODE_FAILURE", 0.005),
        ("RETRY_LIMIT", 0.003),
        ("SKIPPED", 0.025),
        ("CANCELED", 0.012),
        ("ABORTED", 0.01),
    )
)
PIPELINES = chooser(
    (("check", 0.55), ("gate", 0.3), ("post", 0.08), ("periodic", 0.07))
)
BRANCHES = chooser((("master", 0.85), ("stable/2025.2", 0.1), ("stable/2025.1", 0.05)))
# The latest snapshot: builds still running or queued at END are marked so.
LATEST_BODY = b'{"zuul_version": "11.2.0", "pipelines": []}'


def job_table(rng: random.Random) -> tuple[list, list[float]]:
    """Every job but the big one, with a typical duration and a Zipf-like weight."""
    stems = ("tempest", "tox", "grenade", "devstack", "build", "unit", "func", "docs")
    flavours = ("py310", "py311", "py312", "full", "multinode", "ipv6", "slow", "arm")
    jobs = []
    for rank in range(1, JOB_COUNT):
        name = f"{rng.choice(stems)}-{rng.choice(flavours)}-{rank:03d}"
        jobs.append(((name, rng.lognormvariate(7.0, 0.8)), 1 / rank**0.8))
    return chooser(jobs)


def build_values(
    rng: random.Random, job: str, typical_s: float, enqueue: datetime
) -> dict:
    """One build of ``job`` enqueued at ``enqueue``, as of the snapshot at END."""
    build_uuid = uuid.UUID(int=rng.getrandbits(128)).hex
    project = f"openstack/project-{rng.randrange(60):02d}"
    number, patchset = rng.randrange(800_000, 990_000), rng.randrange(1, 12)
    pipeline, result = pick(rng, PIPELINES), pick(rng, RESULTS)
    duration_s = min(typical_s * rng.lognormvariate(0.0, 0.25), 4 * 3600.0)
    if result != "SUCCESS":
        duration_s *= rng.uniform(0.2, 1.0)
    start = enqueue + timedelta(seconds=rng.lognormvariate(4.5, 1.0))
    end = start + timedelta(seconds=duration_s)
    state = "finished"
    if result == "SKIPPED" or (result == "CANCELED" and rng.random() < 0.5):
        start = end = duration_s = None
    elif start > END:
        state, result, start, end, duration_s = "waiting", None, None, None, None
    elif end > END:
        state, result, end, duration_s = "running", None, None, None
    last_seen = END if state != "finished" else end or enqueue
    return {
        "key": f"u:{build_uuid}",
        "pipeline": pipeline,
        "queue": "integrated" if pipeline == "gate" else project,
        "project": project,
        "change": f"{number},{patchset}" if pipeline in ("check", "gate") else None,
        "ref": f"refs/changes/{number % 100:02d}/{number}/{patchset}",
        "branch": pick(rng, BRANCHES),
        "job": job,
        "voting": rng.random() > 0.05,
        "state": state,
        "result": result,
        "enqueue_time": enqueue,
        "start_time": start,
        "end_time": end,
        "duration_s": duration_s,
        "log_url": f"https://logs.example.org/{build_uuid[:3]}/{build_uuid}/",
        "uuid": build_uuid if start is not None else None,
        "first_snapshot_id": 0,
        "last_snapshot_id": 0,
        "first_seen": enqueue,
        "last_seen": min(last_seen, END),
    }


def fill(url: str, rows: int, seed: int = 2026) -> None:
    """Insert ``rows`` builds in batches, oldest first, and the latest snapshot."""
    rng = random.Random(seed)
    jobs = job_table(rng)
    # Every tenth build is the big job's: 100,000 of a million.
    every = max(1, rows // BIG_JOB_RUNS, 10)
    step_s = DAYS * 86400 / rows
    engine = make_engine(url, writer=True)
    sessions = make_sessionmaker(engine)
    with session_scope(sessions) as session:
        source = get_or_create_source(session, "openstack", "https://zuul.example/")
        store_body(session, source, LATEST_BODY, END)
        source_id = source.id
    start = END - timedelta(days=DAYS, hours=2)
    batch = []
    for index in range(rows):
        big = index % every == 0 and index // every < BIG_JOB_RUNS
        name, typical_s = (BIG_JOB, 5400.0) if big else pick(rng, jobs)
        enqueue = start + timedelta(seconds=index * step_s)
        row = build_values(rng, name, typical_s, enqueue)
        row["source_id"] = source_id
        if row["state"] != "finished":
            # Still shown by the latest snapshot: the recorder leaves both unset.
            row["last_snapshot_id"] = row["last_seen"] = None
        batch.append(row)
        if len(batch) == BATCH or index == rows - 1:
            with session_scope(sessions) as session:
                session.execute(insert(Build), batch)
            batch = []
    engine.dispose()


def check_indexes(url: str) -> None:
    """Stop unless the schema has the indexes; then refresh planner statistics."""
    engine = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    found = {
        index["name"]: index["column_names"]
        for index in inspect(engine).get_indexes("builds")
    }
    for name, columns in NEEDED_INDEXES.items():
        if found.get(name) != columns:
            raise SystemExit(f"the schema lacks {name} on builds ({columns})")
    with engine.connect() as connection:
        postgres = engine.dialect.name == "postgresql"
        connection.execute(text("VACUUM ANALYZE builds" if postgres else "ANALYZE"))
    engine.dispose()


def measure(command: list[str], workdir: Path, stdin: str = "", env=None) -> dict:
    """Wall seconds, CPU seconds and peak MB of ``command``, run as a process."""
    measured = subprocess.run(
        [sys.executable, "-c", MEASURE_CHILD, *command],
        check=True,
        capture_output=True,
        text=True,
        input=stdin,
        cwd=workdir,
        env=env,
    )
    figures = json.loads(measured.stdout.splitlines()[-1])
    figures["max_rss_mb"] = figures.pop("max_rss_kb") / 1024
    return figures


def export_cli(url: str, workdir: Path) -> tuple[dict, Path]:
    """``zuul-status export-csv --range all`` measured, and the file it wrote."""
    output = workdir / "export.csv"
    environment = dict(os.environ, ZUUL_STATUS_DATABASE_URL=url)
    environment.pop("ZUUL_STATUS_CONFIG", None)
    command = [str(ZUUL_STATUS), "export-csv", "--range", "all", "-o", str(output)]
    return measure(command, workdir, env=environment), output


def export_sql(url: str) -> str:
    """The export's own query, with its parameters written in."""
    engine = make_engine(url)
    with make_sessionmaker(engine)() as session:
        query = export.csv_select(session, export.parse_filters({"range": "all"}))
        sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    engine.dispose()
    return " ".join(sql.split())


def floor_sqlite(database: Path, sql: str, workdir: Path) -> dict | None:
    """``sqlite3`` running the same query in ``.mode csv`` into a file, measured."""
    if shutil.which("sqlite3") is None:
        return None
    output = workdir / "floor.csv"
    script = f".headers on\n.mode csv\n.output {output}\n{sql};\n"
    return measure(["sqlite3", str(database)], workdir, stdin=script)


def floor_postgres(url: str, schema: str, sql: str, workdir: Path) -> dict | None:
    """``psql``'s ``\\copy (query) to file csv`` (its CPU leaves out the server's)."""
    if shutil.which("psql") is None:
        return None
    plain = url.split("?")[0].replace("postgresql+psycopg://", "postgresql://")
    output = workdir / "floor-pg.csv"
    copy = f"\\copy ({sql}) to '{output}' with (format csv, header)"
    environment = dict(os.environ, PGOPTIONS=f"-csearch_path={schema}")
    return measure(["psql", "-X", "-q", plain, "-c", copy], workdir, env=environment)


def page_times(url: str, paths: list[str]) -> dict[str, tuple[float, int]]:
    """Median milliseconds and response size of each page (after a warm-up)."""
    from webui import create_app

    client = create_app(Settings(database_url=url)).test_client()
    figures = {}
    for path in paths:
        for _ in range(2):
            client.get(path).get_data()
        samples = []
        for _ in range(PAGE_SAMPLES):
            started = time.perf_counter()
            response = client.get(path)
            size = len(response.get_data())
            samples.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise SystemExit(f"{path}: HTTP {response.status_code}")
        figures[path] = (statistics.median(samples) * 1000, size)
    return figures


def python_reference_s() -> float:
    """A fixed pure-Python workload, to tell a slow or busy machine apart."""
    started = time.perf_counter()
    total = 0
    for number in range(10_000_000):
        total += number
    return time.perf_counter() - started


def run_backend(name: str, url: str, rows: int, workdir: Path, floor_of) -> None:
    started = time.perf_counter()
    upgrade(url)
    fill(url, rows)
    check_indexes(url)
    print(
        f"\n== {name}: {rows:,} builds written in {time.perf_counter() - started:.0f} s"
    )

    ours, output = export_cli(url, workdir)
    lines = output.read_bytes().count(b"\r\n") - 1
    print(
        f"{'export-csv, every build':<44}{lines / ours['seconds']:>12,.0f} rows/s   "
        f"{ours['seconds']:.1f} s for {lines:,} rows, "
        f"{output.stat().st_size / 1e6:.0f} MB of CSV (target >= 100,000 rows/s)"
    )
    print(
        f"{'export-csv, per second of its own CPU':<44}"
        f"{lines / ours['cpu_s']:>12,.0f} rows/s   {ours['cpu_s']:.1f} s of CPU"
    )
    print(
        f"{'export-csv, peak memory (max RSS)':<44}{ours['max_rss_mb']:>12.0f} MB"
        "       (target < 150 MB)"
    )
    floor = floor_of(url, export_sql(url), workdir)
    if floor is None:
        print("floor: skipped, the database's command line client is absent")
    else:
        print(
            f"{'floor: the same query by the db client':<44}"
            f"{lines / floor['seconds']:>12,.0f} rows/s   {floor['seconds']:.1f} s, "
            f"{floor['cpu_s']:.1f} s of CPU; ours takes "
            f"{ours['seconds'] / floor['seconds']:.1f}x as long"
        )

    pages = [
        "/jobs",
        f"/jobs/{BIG_JOB}?range=all",
        f"/jobs/{BIG_JOB}",
        "/api/builds?limit=100",
    ]
    for path, (median_ms, size) in page_times(url, pages).items():
        print(
            f"{path:<44}{median_ms:>12.0f} ms median ({size / 1e3:.0f} kB; "
            "target < 200 ms)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    reference = python_reference_s()
    print(
        f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
        f"10M-step Python loop {reference:.2f} s (about 0.4 s on an idle laptop)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        database = workdir / "bench.sqlite"
        run_backend(
            "SQLite",
            f"sqlite:///{database}",
            args.rows,
            workdir,
            lambda url, sql, where: floor_sqlite(database, sql, where),
        )
        if not args.no_postgres:
            run_postgres(args.postgres, args.rows, workdir)
    print(
        f"\nafterwards: load {os.getloadavg()[0]:.1f}; "
        f"10M-step Python loop {python_reference_s():.2f} s"
    )
    return 0


def run_postgres(server_url: str, rows: int, workdir: Path) -> None:
    """The same on PostgreSQL, in a schema of its own, dropped at the end."""
    schema = f"bench_jobs_{os.getpid()}"
    admin = create_engine(normalise_url(server_url))
    try:
        with admin.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as error:  # noqa: BLE001 - any failure means "no server"
        print(f"\n== PostgreSQL: skipped, {server_url} unusable: {error}")
        return
    separator = "&" if "?" in server_url else "?"
    url = f"{server_url}{separator}options=-csearch_path%3D{schema}"
    try:
        run_backend(
            "PostgreSQL",
            url,
            rows,
            workdir,
            lambda url, sql, where: floor_postgres(server_url, schema, sql, where),
        )
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
