"""The recorder under signals, a hanging upstream and a database that goes away."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, select

from recorder.db import make_engine, make_sessionmaker
from recorder.models import Poll, Snapshot
from recorder.service import Recorder
from recorder.settings import settings_from_mapping
from tests.conftest import postgres_url, reset_postgres
from tests.upstream import Upstream, hang, send_body, wait_for

BODY = b'{"pipelines": [{"name": "check", "change_queues": []}]}'


def recorder_command(config) -> list[str]:
    return [sys.executable, "-m", "recorder", "--config", str(config), "record"]


def write_config(tmp_path, database_url, url, interval=1, deadline=30):
    config = tmp_path / "zuul-status.toml"
    config.write_text(
        f'database_url = "{database_url}"\n[[sources]]\nname = "demo"\n'
        f'url = "{url}"\ninterval = {interval}\ndeadline = {deadline}\n'
    )
    return config


def count(url, model, *where) -> int:
    with make_sessionmaker(make_engine(url))() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def test_sigterm_during_a_hanging_poll_exits_within_five_seconds(sqlite_url, tmp_path):
    with Upstream(hang) as upstream:
        config = write_config(
            tmp_path, sqlite_url, upstream.url, interval=10, deadline=60
        )
        process = subprocess.Popen(recorder_command(config), stderr=subprocess.PIPE)
        wait_for(lambda: upstream.requests >= 1, 20, "the first request")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        elapsed = time.monotonic() - started
    log = process.stderr.read().decode()
    assert process.returncode == 0, log
    assert elapsed < 5.0
    assert "poll demo abandoned" in log
    assert "recorder stopped" in log


def test_sigkill_while_recording_leaves_a_consistent_database(sqlite_url, tmp_path):
    from tests.upstream import Upstream as Server

    counter = {"n": 0}

    def changing(handler):
        counter["n"] += 1
        body = BODY.replace(b"check", b"check-%d" % counter["n"])
        send_body(body)(handler)

    with Server(changing) as upstream:
        config = write_config(
            tmp_path, sqlite_url, upstream.url, interval=0.2, deadline=1
        )
        process = subprocess.Popen(recorder_command(config), stderr=subprocess.DEVNULL)
        wait_for(lambda: count(sqlite_url, Snapshot) >= 5, 30, "five snapshots")
        process.kill()
        process.wait(timeout=10)
        stored = count(sqlite_url, Snapshot)
        assert count(sqlite_url, Poll, Poll.outcome == "stored") == stored

        again = subprocess.Popen(recorder_command(config), stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: count(sqlite_url, Snapshot) >= stored + 3, 30, "more")
        finally:
            again.terminate()
            again.wait(timeout=10)
    assert count(sqlite_url, Poll, Poll.outcome == "stored") == count(
        sqlite_url, Snapshot
    )


class TcpProxy:
    """Forwards a loopback port to another; can be stopped and started again."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
        threading.Thread(
            target=self._accept, args=(self.listener,), daemon=True
        ).start()

    def stop(self) -> None:
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.sockets.clear()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, target):
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def postgres_through_proxy():
    url, reason = postgres_url()
    if url is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {reason}")
        pytest.skip(reason)
    schema_url = reset_postgres(url)
    proxy = TcpProxy(5432)
    proxy.start()
    from recorder.migrate import upgrade

    proxied = schema_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    upgrade(proxied)
    yield proxied, proxy
    proxy.stop()


def test_a_poll_made_while_postgresql_is_away_is_stored_once_it_is_back(
    postgres_through_proxy, caplog
):
    url, proxy = postgres_through_proxy
    gate = threading.Event()

    def answer_when_let(handler):
        if handler.server.requests > 1:
            gate.wait(20)
        send_body(BODY)(handler)

    with Upstream(answer_when_let) as upstream:
        settings = settings_from_mapping(
            {
                "database_url": url,
                "sources": [{"name": "demo", "url": upstream.url, "interval": 30}],
            }
        )
        caplog.set_level(logging.WARNING, logger="recorder.service")
        recorder = Recorder(settings)
        assert recorder.poll(settings.sources[0]) == "stored"

        outcome = {}
        poller = threading.Thread(
            target=lambda: outcome.update(value=recorder.poll(settings.sources[0]))
        )
        poller.start()
        wait_for(lambda: upstream.requests >= 2, 10, "the second fetch")
        proxy.stop()
        gate.set()
        wait_for(lambda: "database unavailable" in caplog.text, 20, "a failed store")
        assert "value" not in outcome
        proxy.start()
        poller.join(timeout=30)
        recorder.leadership.release_all()
    assert outcome["value"] == "unchanged"
    assert count(url, Poll) == 2
