"""Two recorders on one database: one polls, the other takes over when it dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from recorder.cli import main
from recorder.db import make_engine
from recorder.leader import FileSourceLock, Leadership, lock_key, make_lock_engine
from recorder.models import Poll, Snapshot
from tests.conftest import postgres_url
from tests.upstream import Upstream, send_body, wait_for

INTERVAL_S = 1.0
ZUUL_STATUS = Path(sys.executable).with_name("zuul-status")
TOOK_LOCK = "took the lock of source demo"
STORED = "poll demo stored"


def changing_status(handler) -> None:
    """A valid status body that differs on every request."""
    body = {
        "zuul_version": f"failover-{handler.server.requests}",
        "pipelines": [{"name": "check", "change_queues": []}],
    }
    send_body(json.dumps(body).encode())(handler)


class RecorderProcess:
    """``zuul-status record`` in a subprocess, logging at DEBUG to a file."""

    def __init__(self, config: Path, log_path: Path):
        self.log_path = log_path
        with log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [ZUUL_STATUS, "--config", config, "--log-level", "DEBUG", "record"],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self, needle: str) -> list[str]:
        return [line for line in self.log().splitlines() if needle in line]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def write_config(tmp_path: Path, database_url: str, url: str) -> Path:
    config = tmp_path / "zuul-status.toml"
    config.write_text(
        f'database_url = "{database_url}"\n[[sources]]\nname = "demo"\n'
        f'url = "{url}"\ninterval = {INTERVAL_S}\ndeadline = 5\nconnect_timeout = 1\n'
    )
    return config


def poll_times(engine) -> list[datetime]:
    with engine.connect() as connection:
        return list(
            connection.scalars(select(Poll.started_at).order_by(Poll.started_at))
        )


def test_only_one_recorder_polls_and_the_other_takes_over_when_it_is_killed(
    database_url, tmp_path
):
    engine = make_engine(database_url)
    with Upstream(changing_status) as upstream:
        config = write_config(tmp_path, database_url, upstream.url)
        recorders = [
            RecorderProcess(config, tmp_path / f"recorder-{index}.log")
            for index in (1, 2)
        ]
        try:
            # Whichever took the lock first is the leader; it polls a few times
            # while the other keeps finding the lock taken.
            wait_for(
                lambda: any(r.lines(TOOK_LOCK) for r in recorders),
                timeout_s=30,
                what="a recorder to take the lock",
            )
            leader, follower = sorted(recorders, key=lambda r: not r.lines(TOOK_LOCK))
            wait_for(
                lambda: len(poll_times(engine)) >= 3,
                timeout_s=15,
                what="three polls by the leader",
            )
            wait_for(
                lambda: follower.lines("skipped: another recorder holds its lock"),
                timeout_s=5,
                what="the follower to find the lock taken",
            )
            assert not follower.lines(TOOK_LOCK)
            assert not follower.lines(STORED)

            killed_at = datetime.now(UTC)
            leader.process.send_signal(signal.SIGKILL)
            leader.process.wait(timeout=10)
            polls_by_leader = len(poll_times(engine))

            wait_for(
                lambda: len(poll_times(engine)) >= polls_by_leader + 3,
                timeout_s=10,
                what="three polls by the follower",
            )
        finally:
            exit_codes = [recorder.stop() for recorder in recorders]
        requests = upstream.requests

    assert exit_codes[recorders.index(follower)] == 0
    assert len(follower.lines(TOOK_LOCK)) == 1

    # The follower took over within two intervals of the kill.
    times = poll_times(engine)
    first_after_kill = min(t for t in times if t > killed_at)
    assert first_after_kill - killed_at <= timedelta(seconds=2 * INTERVAL_S)

    # One poller at a time: one request per poll (the killed leader may have
    # fetched once without storing), every poll logged by exactly one of the
    # two, and polls about an interval apart except once, at the handover.
    assert len(times) <= requests <= len(times) + 1
    logged = len(leader.lines(STORED)) + len(follower.lines(STORED))
    assert logged <= len(times) <= logged + 1
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    short = [gap for gap in gaps if gap < timedelta(seconds=INTERVAL_S / 4)]
    assert len(short) <= 1, f"polls closer than a quarter interval: {short}"

    # No snapshot was recorded twice.
    with engine.connect() as connection:
        snapshots = connection.scalar(select(func.count()).select_from(Snapshot))
        distinct = connection.scalar(
            select(func.count()).select_from(
                select(Snapshot.source_id, Snapshot.sha256).distinct().subquery()
            )
        )
        distinct_times = connection.scalar(
            select(func.count()).select_from(
                select(Snapshot.source_id, Snapshot.taken_at).distinct().subquery()
            )
        )
    engine.dispose()
    assert snapshots == distinct == distinct_times == len(times)


def test_a_source_lock_is_held_by_one_leadership_at_a_time(database_url):
    first, second = Leadership(database_url), Leadership(database_url)
    try:
        assert first.holds("demo")
        assert not second.holds("demo")
        assert second.holds("other"), "each source has a lock of its own"
        assert first.holds("demo"), "a held lock stays held"

        first.release_all()
        assert second.holds("demo")
    finally:
        first.release_all()
        second.release_all()


def test_reindex_and_import_refuse_a_source_a_recorder_polls(database_url, tmp_path):
    config = tmp_path / "zuul-status.toml"
    config.write_text(f'database_url = "{database_url}"\n')
    body = tmp_path / "status.json"
    body.write_bytes(b'{"pipelines": []}')
    cli = CliRunner()
    imported = cli.invoke(
        main, ["--config", str(config), "import", "--source", "demo", str(body)]
    )
    recorder = Leadership(database_url)
    try:
        assert recorder.holds("demo")
        busy = [
            CliRunner().invoke(main, ["--config", str(config), *args])
            for args in (
                ["reindex", "--source", "demo"],
                ["import", "--source", "demo", str(body)],
            )
        ]
        free = CliRunner().invoke(
            main, ["--config", str(config), "import", "--source", "other", str(body)]
        )
    finally:
        recorder.release_all()
    after = cli.invoke(main, ["--config", str(config), "reindex", "--source", "demo"])

    for result in busy:
        assert result.exit_code == 1, result.output
        assert "a recorder is recording source 'demo': stop it first" in result.output
    assert imported.exit_code == 0, imported.output
    assert free.exit_code == 0, free.output
    assert after.exit_code == 0, after.output
    assert "reindexed 1 snapshot of 1 source" in after.output
    assert recorder.holds("demo"), "the commands let the lock go"
    recorder.release_all()


def test_the_sqlite_lock_file_lies_next_to_the_database(tmp_path):
    database = tmp_path / "zuul-status.sqlite"
    leadership = Leadership(f"sqlite:///{database}")
    try:
        assert leadership.holds("demo")
        assert (tmp_path / "zuul-status.sqlite.demo.lock").exists()
    finally:
        leadership.release_all()


def test_a_replaced_lock_file_is_taken_again_rather_than_shared(tmp_path):
    path = tmp_path / "db.sqlite.demo.lock"
    first, second = FileSourceLock(path), FileSourceLock(path)
    try:
        assert first.hold()
        os.unlink(path)
        assert second.hold()
        assert not first.hold(), "the first must notice its file is gone"
    finally:
        first.release()
        second.release()


def test_the_server_ends_the_lock_session_of_a_vanished_recorder_within_seconds():
    database_url, reason = postgres_url()
    if database_url is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {reason}")
        pytest.skip(reason)
    engine = make_lock_engine(database_url)
    with engine.connect() as connection:
        settings = {
            name: connection.scalar(text(f"SHOW tcp_keepalives_{name}"))
            for name in ("idle", "interval", "count")
        }
    engine.dispose()
    # Over TCP; on a Unix socket the server reads them as 0 (no host to lose).
    assert settings == {"idle": "10", "interval": "5", "count": "3"}


def test_the_postgresql_key_of_a_source_is_a_stable_bigint():
    assert lock_key("demo") == lock_key("demo")
    assert lock_key("demo") != lock_key("demo2")
    assert -(2**63) <= lock_key("demo") < 2**63


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_needs_no_lock(url):
    leadership = Leadership(url)
    assert leadership.holds("demo")
    assert Leadership(url).holds("demo")
