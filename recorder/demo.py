"""``zuul-status demo``: a fake upstream, the recorder and the web UI, on SQLite."""

from __future__ import annotations

import fcntl
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from recorder.db import make_engine
from recorder.migrate import upgrade

STARTUP_DEADLINE_S = 60.0
POLL_INTERVAL_S = 10


def free_port(preferred: int = 0, host: str = "127.0.0.1") -> int:
    """``preferred`` or one of the next ten ports if free, otherwise any free port."""
    nearby = range(preferred, min(preferred + 11, 65536)) if preferred else ()
    for candidate in (*nearby, 0):
        with socket.socket() as probe:
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError("no free TCP port")


def write_config(directory: Path, upstream_port: int) -> Path:
    database = (directory / "zuul-status.sqlite").resolve()
    config = directory / "zuul-status.toml"
    config.write_text(
        f'database_url = "sqlite:///{database}"\n\n'
        "[[sources]]\n"
        'name = "demo"\n'
        f'url = "{_status_url(upstream_port)}"\n'
        f"interval = {POLL_INTERVAL_S}\n"
        "deadline = 8\n"
    )
    return config


def run_demo(directory: Path, web_port: int) -> int:
    """Start the three processes, print the URL, and stop them all on Ctrl-C."""
    from recorder.fake_upstream import write_sample

    directory.mkdir(parents=True, exist_ok=True)
    # One demo per directory: a second would rewrite the first one's
    # configuration and wait forever behind its recorder's lock.
    lock = _hold_lock(directory)
    sample = directory / "sample.json"
    write_sample(sample, seed=1)
    upstream_port, web_port = free_port(), free_port(web_port)
    config = write_config(directory, upstream_port)
    database_url = f"sqlite:///{(directory / 'zuul-status.sqlite').resolve()}"
    upgrade(database_url)

    command = [sys.executable, "-m", "recorder", "--config", str(config)]
    upstream = [
        *command,
        "fake-upstream",
        str(sample),
        "--port",
        str(upstream_port),
        "--speed",
        "1",
    ]
    url = f"http://127.0.0.1:{web_port}/"
    children = []
    try:
        children.append(subprocess.Popen(upstream))
        # The recorder's first poll must find the fake upstream listening.
        _wait_for_upstream(_status_url(upstream_port), children[0])
        children.append(subprocess.Popen([*command, "record"]))
        children.append(subprocess.Popen([*command, "web", "--port", str(web_port)]))
        _wait_until_ready(database_url, url, children)
        lock.truncate(0)
        lock.write(url)
        lock.flush()
        print(
            f"\nzuul-status demo is running: open {url}\n"
            f"(a new snapshot every {POLL_INTERVAL_S} s; Ctrl-C stops it)\n",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(children)
        lock.close()


def _hold_lock(directory: Path):
    """The open lock file of the demo in ``directory``; exit if one runs there."""
    lock = (directory / "demo.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        running = lock.read().strip() or "(still starting)"
        lock.close()
        raise SystemExit(
            f"a demo is already running in {directory} at {running}; "
            "stop it with Ctrl-C, or give this one another --dir"
        ) from None
    lock.truncate(0)  # what an earlier demo wrote
    return lock


def _status_url(upstream_port: int) -> str:
    return f"http://127.0.0.1:{upstream_port}/api/tenant/demo/status"


def _wait_for_upstream(url: str, upstream) -> None:
    """Return once the fake upstream answers ``url``; exit if it cannot."""
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if upstream.poll() is not None:
            raise SystemExit("the fake upstream exited early; see the messages above")
        if _answers(url):
            return
        time.sleep(0.1)
    raise SystemExit(
        f"the fake upstream did not answer within {STARTUP_DEADLINE_S:g} s"
    )


def _wait_until_ready(database_url: str, url: str, children) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    engine = make_engine(database_url)
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            raise SystemExit("a demo process exited early; see the messages above")
        if _has_snapshot(engine) and _answers(url):
            engine.dispose()
            return
        time.sleep(0.2)
    raise SystemExit(f"the demo was not ready within {STARTUP_DEADLINE_S:g} s")


def _has_snapshot(engine) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.exec_driver_sql("SELECT count(*) FROM snapshots").scalar()
        )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
            return response.status == 200
    except OSError:
        return False


def _stop(children) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
