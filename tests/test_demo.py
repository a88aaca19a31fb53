"""``zuul-status demo``: the one command a newcomer runs first, for real."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from recorder.demo import free_port

DEADLINE_S = 90.0


def _start(directory: Path, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("ZUUL_STATUS_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "recorder", "demo", "--dir", str(directory)]
        + ["--port", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def _wait_for_url(process: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = re.search(r"demo is running: open (http://\S+)", log.read_text())
        if found:
            return found.group(1)
        assert process.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"no URL within {DEADLINE_S:g} s:\n{log.read_text()}")


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return response.status, response.read().decode()


def test_the_demo_serves_recorded_status_and_a_second_one_says_it_runs(tmp_path):
    directory = tmp_path / "demo"
    port = free_port()
    first = _start(directory, port, tmp_path / "first.log")
    try:
        url = _wait_for_url(first, tmp_path / "first.log")
        status, html = _get(url)
        assert url == f"http://127.0.0.1:{port}/"
        assert status == 200
        assert "demo" in html
        assert "<h2>check" in html
        assert _get(url + "jobs")[0] == 200
        config = (directory / "zuul-status.toml").read_text()

        second = subprocess.run(
            [sys.executable, "-m", "recorder", "demo", "--dir", str(directory)],
            capture_output=True,
            text=True,
            timeout=60,
        )

        assert second.returncode != 0
        assert f"a demo is already running in {directory} at {url}" in second.stderr
        # The first demo's configuration is untouched and it still answers.
        assert (directory / "zuul-status.toml").read_text() == config
        assert _get(url)[0] == 200
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=30)
