"""Soak: the real recorder against an upstream that misbehaves, the UI under load.

Runs ``zuul-status record`` (interval 2 s, deadline 1.5 s) for MINUTES against
a loopback upstream that plays one of the faults of ``tests/faults.py`` at
random a third of the time and otherwise serves a status that evolves as a
busy tenant's would (``StatusEvolver``). Meanwhile ``zuul-status web`` serves
the same database to a few threads asking for ``/``, ``/healthz`` and
``/snapshots/<id>``.

At the end it reports polls attempted, stored, failed and late (started more
than a second after their tick, from the spacing of ``Poll.started_at``
against the interval), UI requests and errors, and snapshots lost: bodies the
upstream served whole that the database does not hold. Exits 1 when a UI
request failed or a snapshot was lost.

    .venv/bin/python bench/soak.py [--minutes 10] [--seed 0] [--database-url URL]
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import requests  # noqa: E402 - after the path that finds the project
from sqlalchemy import select  # noqa: E402

from recorder import codec  # noqa: E402
from recorder.db import make_engine, make_sessionmaker  # noqa: E402
from recorder.migrate import upgrade  # noqa: E402
from recorder.models import Poll, Snapshot, Source  # noqa: E402
from recorder.simulator import StatusEvolver  # noqa: E402
from tests.faults import (  # noqa: E402
    MAX_BYTES,
    FaultyUpstream,
    RandomlyFaulty,
    error_status,
    good_document,
    lateness_s,
    soak_faults,
)
from tests.upstream import wait_for  # noqa: E402

INTERVAL_S = 2.0
DEADLINE_S = 1.5
FAULT_RATIO = 1 / 3
UI_TIMEOUT_S = 10.0
SOURCE = "soak"


class EvolvingStatus:
    """The good answer: a busy tenant that moves on by the wall-clock time."""

    def __init__(self, seed: int):
        now = datetime.now(UTC)
        self.evolver = StatusEvolver(good_document(seed), seed=seed, now=now)
        self.last = time.monotonic()

    def __call__(self) -> bytes:
        now = time.monotonic()
        self.evolver.advance(now - self.last)
        self.last = now
        return self.evolver.body()


@dataclass
class UiLoad:
    """Threads that read pages until told to stop, counting what went wrong."""

    base_url: str
    threads: int
    seed: int
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: collections.Counter = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    snapshot_ids: list[int] = field(default_factory=list)

    def start(self) -> list[threading.Thread]:
        workers = [
            threading.Thread(target=self._run, args=(index,), daemon=True)
            for index in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        return workers

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        with requests.Session() as session:
            while not self.stop.is_set():
                path = self._pick(rng, session)
                self._get(session, path)

    def _pick(self, rng: random.Random, session: requests.Session) -> str:
        choice = rng.choice(("/", "/healthz", "/snapshots", "/api/snapshots"))
        if choice == "/api/snapshots":
            response = self._get(session, "/api/snapshots?limit=50")
            if response is not None and response.status_code == 200:
                with self.lock:
                    self.snapshot_ids = [entry["id"] for entry in response.json()]
            return "/healthz"
        if choice == "/snapshots":
            with self.lock:
                ids = list(self.snapshot_ids)
            return f"/snapshots/{rng.choice(ids)}" if ids else "/"
        return choice

    def _get(self, session: requests.Session, path: str) -> requests.Response | None:
        start = time.monotonic()
        kind = path.split("?")[0].rstrip("0123456789") or "/"
        try:
            response = session.get(self.base_url + path, timeout=UI_TIMEOUT_S)
            problem = None
            # "/" answers 404 until the first snapshot: that is no error.
            if response.status_code >= 500 or (
                response.status_code >= 400 and self.snapshot_ids
            ):
                problem = f"{path}: HTTP {response.status_code}"
            if b"Traceback" in response.content:
                problem = f"{path}: a traceback in the page"
        except requests.RequestException as error:
            response, problem = None, f"{path}: {type(error).__name__}: {error}"
        elapsed_ms = (time.monotonic() - start) * 1000
        with self.lock:
            self.requests[kind] += 1
            self.latencies_ms.append(elapsed_ms)
            if problem:
                self.errors.append(problem)
        return response


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(folder: Path, database_url: str, upstream_url: str) -> Path:
    config = folder / "zuul-status.toml"
    config.write_text(
        f'database_url = "{database_url}"\n'
        f'[[sources]]\nname = "{SOURCE}"\nurl = "{upstream_url}"\n'
        f"interval = {INTERVAL_S}\ndeadline = {DEADLINE_S}\nmax_bytes = {MAX_BYTES}\n"
    )
    return config


def zuul_status(config: Path, *args: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "recorder", "--config", str(config), *args]
    return subprocess.Popen(command, stderr=log.open("wb"), stdout=subprocess.DEVNULL)


def polls_of(sessions) -> list[Poll]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Poll)
                .join(Source, Poll.source_id == Source.id)
                .where(Source.name == SOURCE)
                .order_by(Poll.started_at)
            )
        )


def stored_shas(sessions) -> set[str]:
    with sessions() as session:
        return set(session.scalars(select(Snapshot.sha256)))


def drain(upstream: FaultyUpstream, sessions, started: float) -> None:
    """Answer 503 until a poll of it is recorded: every poll before is done."""
    upstream.behaviour = error_status(503)
    drained_at = datetime.now(UTC)
    wait_for(
        lambda: any(
            poll.started_at >= drained_at and poll.http_status == 503
            for poll in polls_of(sessions)[-3:]
        ),
        60,
        "a poll after the upstream was drained",
    )
    print(f"drained after {(time.monotonic() - started) / 60:.1f} min", flush=True)


def watch(recorder: subprocess.Popen, sessions, ui: UiLoad, until: float) -> None:
    """Report progress every 30 s until ``until``; fail if the recorder exits."""
    started = time.monotonic()
    while (remaining_s := until - time.monotonic()) > 0:
        try:
            code = recorder.wait(timeout=min(30.0, remaining_s))
        except subprocess.TimeoutExpired:
            elapsed_min = (time.monotonic() - started) / 60
            print(
                f"{elapsed_min:.1f} min: {len(polls_of(sessions))} polls, "
                f"{ui.requests.total()} UI requests, {len(ui.errors)} UI errors",
                flush=True,
            )
            continue
        raise RuntimeError(f"the recorder exited early with {code}")


def summarise(polls, upstream_faults, served, shas, ui, skipped_ticks) -> dict:
    outcomes = collections.Counter(poll.outcome for poll in polls)
    late = lateness_s(
        [(p.started_at, p.duration_ms, p.http_status) for p in polls],
        INTERVAL_S,
        retry_after_s=3.0,
    )
    late_after = collections.Counter(
        _kind(previous)
        for previous, lateness in zip(polls, late, strict=False)
        if lateness > 1.0
    )
    served_shas = {codec.sha256_hex(body) for body in served}
    latencies = sorted(ui.latencies_ms)
    return {
        "polls_attempted": len(polls),
        "polls_stored": outcomes["stored"] + outcomes["unchanged"],
        "polls_unparsed": outcomes["unparsed"],
        "polls_failed": outcomes["failed"],
        "polls_late": sum(lateness > 1.0 for lateness in late),
        "late_after": dict(late_after),
        "max_lateness_s": round(max(late), 3) if late else None,
        "ticks_skipped_for_retry_after": skipped_ticks,
        "faults_played": dict(sorted(upstream_faults.items())),
        "bodies_served_whole": len(served),
        "distinct_bodies_served": len(served_shas),
        "snapshots_lost": len(served_shas - shas),
        "ui_requests": dict(ui.requests),
        "ui_requests_total": sum(ui.requests.values()),
        "ui_errors": len(ui.errors),
        "ui_error_samples": ui.errors[:10],
        "ui_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "ui_p99_ms": round(latencies[int(len(latencies) * 0.99)], 1)
        if latencies
        else None,
        "ui_max_ms": round(latencies[-1], 1) if latencies else None,
    }


def upstream_lateness(polls: list[tuple[float, str | None]]) -> dict:
    """Late polls as the upstream saw them arrive, rows or no rows.

    A poll whose storing failed leaves no row in the database; the upstream
    still saw it. Each poll is due one interval after the one before, or at
    the first tick after a 429's Retry-After (the fetch itself never lasts
    an interval: the deadline is shorter).
    """
    late = collections.Counter()
    worst_s = 0.0
    for (arrived, fault), (next_arrived, _) in zip(polls, polls[1:], strict=False):
        wait_s = 3.0 if fault == "HTTP 429 with Retry-After" else 0.0
        # A tick at exactly the end of the wait comes a moment too early.
        ticks = max(1, math.ceil((wait_s + 1e-3) / INTERVAL_S))
        lateness = next_arrived - arrived - ticks * INTERVAL_S
        worst_s = max(worst_s, lateness)
        if lateness > 1.0:
            late[fault or "a good body"] += 1
    return {
        "upstream_polls": len(polls),
        "upstream_polls_late": sum(late.values()),
        "upstream_late_after": dict(late),
        "upstream_max_lateness_s": round(worst_s, 3),
    }


def _kind(poll: Poll) -> str:
    if poll.outcome == "failed":
        return f"failed: {(poll.error or '')[:40]}"
    return f"{poll.outcome} ({(poll.size_bytes or 0) // 1000} kB)"


def run(minutes: float, seed: int, database_url: str | None, ui_threads: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="zuul-status-soak-"))
    database_url = database_url or f"sqlite:///{folder / 'soak.sqlite'}"
    upgrade(database_url)
    sessions = make_sessionmaker(make_engine(database_url))
    behaviour = RandomlyFaulty(EvolvingStatus(seed), soak_faults(), FAULT_RATIO, seed)
    port = free_port()
    print(f"soak for {minutes:g} min in {folder}", flush=True)

    with FaultyUpstream(behaviour) as upstream:
        config = write_config(folder, database_url, upstream.url)
        recorder = zuul_status(config, "record", log=folder / "record.log")
        web = zuul_status(config, "web", "--port", str(port), log=folder / "web.log")
        ui = UiLoad(f"http://127.0.0.1:{port}", ui_threads, seed)
        workers: list[threading.Thread] = []
        try:
            wait_for(lambda: _answers(ui.base_url), 30, "the web UI")
            workers = ui.start()
            started = time.monotonic()
            watch(recorder, sessions, ui, started + minutes * 60)
            drain(upstream, sessions, started)
        finally:
            recorder.send_signal(signal.SIGTERM)
            ui.stop.set()
            for worker in workers:
                worker.join(timeout=UI_TIMEOUT_S + 5)
            web.send_signal(signal.SIGTERM)
            for process in (recorder, web):
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()

    log = (folder / "record.log").read_text(errors="replace")
    with behaviour.lock:
        served, played = list(behaviour.served), dict(behaviour.played)
        upstream_polls = list(behaviour.polls)
    report = summarise(
        polls_of(sessions),
        played,
        served,
        stored_shas(sessions),
        ui,
        skipped_ticks=log.count("skipped: upstream asked to wait"),
    )
    report |= upstream_lateness(upstream_polls)
    report["recorder_exit_code"] = recorder.returncode
    report["store_errors_logged"] = log.count(f"poll {SOURCE} error:")
    report["folder"] = str(folder)
    return report


def _answers(base_url: str) -> bool:
    try:
        return requests.get(base_url + "/healthz", timeout=2).status_code < 500
    except requests.RequestException:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ui-threads", type=int, default=4)
    parser.add_argument(
        "--database-url", help="default: a SQLite file in a new temporary folder"
    )
    args = parser.parse_args()
    report = run(args.minutes, args.seed, args.database_url, args.ui_threads)
    print(json.dumps(report, indent=2))
    ok = report["ui_errors"] == 0 and report["snapshots_lost"] == 0
    print("soak passed" if ok else "soak FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
