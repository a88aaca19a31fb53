"""The production front, end to end: the distribution's nginx and uWSGI from PyPI,
started from the shipped nginx/default.conf and uwsgi.ini, with the recorder
polling a fake Zuul that serves the largest real capture.

``ProductionStack`` is also what bench/load.py runs.
"""

from __future__ import annotations

import configparser
import functools
import grp
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from recorder.demo import free_port
from recorder.fake_upstream import FakeZuulServer, make_server
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import LARGEST_CAPTURE, postgres_url
from tests.upstream import wait_for

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_UWSGI_INI = PROJECT_ROOT / "uwsgi.ini"
SHIPPED_NGINX_SITE = PROJECT_ROOT / "nginx" / "default.conf"
DEBIAN_NGINX_CONF = Path("/etc/nginx/nginx.conf")

BIN = Path(sys.executable).parent
STARTUP_DEADLINE_S = 60.0

pytestmark = pytest.mark.nginx


def nginx_binary() -> str | None:
    """The distribution's nginx, which is often outside a user's PATH."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def require_nginx() -> str:
    nginx = nginx_binary()
    if nginx is None:
        if os.geteuid() == 0:
            pytest.fail("nginx is absent although we are root: run `make system-deps`")
        pytest.skip("nginx is not installed and only root can install it")
    return nginx


# --- Accounts ----------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """A user and group that processes of the test run as."""

    user: str
    group: str

    def popen_options(self) -> dict:
        """Options for subprocess to run as this account (only root can switch)."""
        if os.geteuid() != 0 or self.user == "root":
            return {}
        return {"user": self.user, "group": self.group, "extra_groups": []}


@functools.cache
def service_account() -> Account:
    """Who runs uWSGI and the recorder: as in production, an unprivileged user.

    As root that is ``nobody``, when ``nobody`` can run this virtualenv's Python;
    a Python installed under root's private home cannot be, and then the
    services stay root, with nobody's group on the socket, and a warning says so.
    """
    if os.geteuid() != 0:
        return Account(
            pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name
        )
    nobody = pwd.getpwnam("nobody")
    account = Account("nobody", grp.getgrgid(nobody.pw_gid).gr_name)
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import webui, recorder"],
            capture_output=True,
            timeout=60,
            **account.popen_options(),
        )
        usable = probe.returncode == 0
    except OSError:
        usable = False
    if usable:
        return account
    warnings.warn(
        f"nobody cannot run {sys.executable} (it lives under a private home), "
        "so uWSGI and the recorder run as root in this test",
        stacklevel=1,
    )
    return Account("root", account.group)


def nginx_worker_account(service: Account) -> Account:
    """nginx's workers: www-data (as on Debian), in the service's group."""
    user = "www-data"
    try:
        pwd.getpwnam(user)
    except KeyError:
        user = "nobody"
    return Account(user, service.group)


# --- The shipped files, with only ports, paths and the user changed ---------
#
# rewrite_uwsgi_ini and rewrite_nginx_site are the only difference between
# what the tests run and what ships. They may change ports, paths and the
# user, and nothing else: a setting that the tests need changed some other way
# is a setting that does not work in production either. (nginx_main_conf
# stands in for Debian's own /etc/nginx/nginx.conf, which does not ship here.)


def rewrite_uwsgi_ini(
    text: str, run_dir: Path, config_dir: Path, account: Account
) -> str:
    """The shipped uwsgi.ini with its sockets, its directory (which holds
    zuul-status.toml) and its user moved."""
    replacements = {
        "socket": str(run_dir / "uwsgi.sock"),
        "stats": str(run_dir / "stats.sock"),
        "chdir": str(config_dir),
        "uid": account.user,
        "gid": account.group,
        "chown-socket": f"{account.user}:{account.group}",
    }
    return _rewrite_options(
        text, r"^(?P<key>[a-z0-9-]+)\s*=\s*(?P<value>.*)$", replacements
    )


def rewrite_nginx_site(text: str, run_dir: Path, port: int) -> str:
    """The shipped nginx site with its port, socket and file paths moved."""
    replacements = {
        "listen 80 default_server;": f"listen 127.0.0.1:{port} default_server;",
        "listen [::]:80 default_server;": f"listen [::1]:{port} default_server;",
        "server unix:/run/zuul-status/uwsgi.sock;": (
            f"server unix:{run_dir}/uwsgi.sock;"
        ),
        "root /opt/zuul-status/src/nginx;": f"root {PROJECT_ROOT}/nginx;",
        "alias /opt/zuul-status/src/webui/static/;": (
            f"alias {PROJECT_ROOT}/webui/static/;"
        ),
        "uwsgi_cache_path /var/lib/nginx/zuul-status-cache levels=1:2": (
            f"uwsgi_cache_path {run_dir}/nginx/cache levels=1:2"
        ),
    }
    lines, done = [], set()
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if not stripped.startswith("#") and stripped in replacements:
            line = line.replace(stripped, replacements[stripped])
            done.add(stripped)
        lines.append(line)
    missing = set(replacements) - done
    assert not missing, f"nginx/default.conf no longer has {sorted(missing)}"
    return "".join(lines)


def _rewrite_options(text: str, pattern: str, replacements: dict[str, str]) -> str:
    lines, done = [], set()
    for line in text.splitlines(keepends=True):
        match = re.match(pattern, line.strip())
        if match and match["key"] in replacements:
            key = match["key"]
            assert key not in done, f"{key} is set twice"
            line = f"{key} = {replacements[key]}\n"
            done.add(key)
        lines.append(line)
    missing = set(replacements) - done
    assert not missing, f"uwsgi.ini no longer sets {sorted(missing)}"
    return "".join(lines)


def nginx_main_conf(site: Path, work_dir: Path, workers: Account | None) -> str:
    """Debian's own nginx.conf around the site, with its logs and pid moved.

    Only the include of sites-enabled is replaced by the site under test (and
    conf.d dropped, so that nothing else on this host interferes).
    """
    if DEBIAN_NGINX_CONF.is_file():
        text = DEBIAN_NGINX_CONF.read_text()
    else:
        text = (
            "user www-data;\nworker_processes auto;\npid /run/nginx.pid;\n"
            "error_log /var/log/nginx/error.log;\nevents {}\nhttp {\n"
            "\tinclude /etc/nginx/mime.types;\n"
            "\tdefault_type application/octet-stream;\n"
            "\taccess_log /var/log/nginx/access.log;\n"
            "\tinclude /etc/nginx/sites-enabled/*;\n}\n"
        )
    user = f"user {workers.user} {workers.group};" if workers else ""
    temp_paths = "".join(
        f"\t{kind}_temp_path {work_dir / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = re.sub(r"(?m)^user\s+[^;]+;", user, text)
    text = re.sub(r"(?m)^pid\s+[^;]+;", f"pid {work_dir / 'nginx.pid'};", text)
    text = re.sub(
        r"(?m)^(\s*error_log)\s+[^;]+;", rf"\1 {work_dir / 'error.log'};", text
    )
    text = re.sub(
        r"(?m)^(\s*access_log)\s+[^;]+;", rf"\1 {work_dir / 'access.log'};", text
    )
    text = re.sub(r"(?m)^\s*include /etc/nginx/conf\.d/[^;]*;\n", "", text)
    text = re.sub(
        r"(?m)^(\s*)include /etc/nginx/sites-enabled/[^;]*;",
        lambda m: f"{temp_paths}{m[1]}include {site};",
        text,
    )
    assert f"include {site};" in text, "the main configuration did not include the site"
    return text


# --- The stack ---------------------------------------------------------------


@dataclass
class ProductionStack:
    """nginx, uWSGI and the recorder in one temporary run directory."""

    run_dir: Path
    database_url: str
    upstream_url: str
    interval_s: float
    account: Account = field(default_factory=service_account)
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    upstream: FakeZuulServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.run_dir / "zuul-status.toml"

    def prepare(self) -> None:
        """Files and permissions: the service user owns the run directory, and
        nginx's workers reach the socket in it through the service's group."""
        self.run_dir.chmod(0o770)
        nginx_dir = self.run_dir / "nginx"
        nginx_dir.mkdir()
        workers = nginx_worker_account(self.account) if os.geteuid() == 0 else None
        if workers:
            shutil.chown(self.run_dir, self.account.user, self.account.group)
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (nginx_dir / kind).mkdir()
                shutil.chown(nginx_dir / kind, workers.user, workers.group)
        self.config.write_text(
            f'database_url = "{self.database_url}"\n\n[[sources]]\nname = "demo"\n'
            f'url = "{self.upstream_url}"\ninterval = {self.interval_s}\n'
            "deadline = 10\n"
        )
        self.config.chmod(0o644)
        ini = rewrite_uwsgi_ini(
            SHIPPED_UWSGI_INI.read_text(), self.run_dir, self.run_dir, self.account
        )
        (self.run_dir / "uwsgi.ini").write_text(ini)
        site = nginx_dir / "zuul-status.conf"
        site.write_text(
            rewrite_nginx_site(SHIPPED_NGINX_SITE.read_text(), self.run_dir, self.port)
        )
        (nginx_dir / "nginx.conf").write_text(nginx_main_conf(site, nginx_dir, workers))

    def zuul_status(self, *args: str) -> None:
        """Run a ``zuul-status`` command as the service user."""
        result = subprocess.run(
            [BIN / "zuul-status", "--config", self.config, *args],
            capture_output=True,
            text=True,
            timeout=120,
            **self.account.popen_options(),
        )
        assert result.returncode == 0, f"zuul-status {args}: {result.stderr}"

    def start(self, name: str) -> None:
        """Start ``recorder``, ``uwsgi`` or ``nginx``, logging to the run directory."""
        commands = {
            "recorder": [BIN / "zuul-status", "--config", self.config, "record"],
            "uwsgi": [BIN / "uwsgi", "--ini", self.run_dir / "uwsgi.ini"],
            "nginx": [
                nginx_binary(),
                "-p", self.run_dir / "nginx",
                "-c", self.run_dir / "nginx" / "nginx.conf",
                "-g", "daemon off;",
            ],
        }  # fmt: skip
        # The recorder runs as the service user; uWSGI and nginx start as the
        # invoking user and drop to the users of their configuration.
        options = self.account.popen_options() if name == "recorder" else {}
        with (self.run_dir / f"{name}.log").open("ab") as log_file:
            self.processes[name] = subprocess.Popen(
                commands[name],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                **options,
            )

    def stop(self, name: str, timeout_s: float = 20.0) -> int:
        """Stop one process with SIGTERM (SIGQUIT for nginx: a graceful stop)."""
        process = self.processes.pop(name)
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT if name == "nginx" else signal.SIGTERM)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise

    def stop_all(self) -> None:
        for name in ("nginx", "uwsgi", "recorder"):
            if name in self.processes:
                with suppress(subprocess.TimeoutExpired):
                    self.stop(name)

    def get(self, path: str, timeout: float = 10, **options) -> requests.Response:
        return requests.get(self.base_url + path, timeout=timeout, **options)

    def wait_until(self, condition, what: str, timeout_s: float = STARTUP_DEADLINE_S):
        """``wait_for``, failing with the logs of the stack attached."""
        try:
            wait_for(self._alive_and(condition), timeout_s=timeout_s, what=what)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.logs()}") from None

    def _alive_and(self, condition):
        def check() -> bool:
            dead = [n for n, p in self.processes.items() if p.poll() is not None]
            if dead:
                raise AssertionError(f"{', '.join(dead)} exited\n{self.logs()}")
            return condition()

        return check

    def logs(self, lines: int = 30) -> str:
        parts = []
        for path in sorted(self.run_dir.glob("*.log")) + [
            self.run_dir / "nginx" / "error.log"
        ]:
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def explain(self, response: requests.Response) -> str:
        """A failure message: what came back, and the logs of the stack."""
        return f"{response.status_code} {response.text[:500]}\n{self.logs()}"

    def answers(self, path: str, status: int = 200) -> bool:
        try:
            return self.get(path, timeout=2).status_code == status
        except requests.RequestException:
            return False

    def stats(self) -> dict:
        """uWSGI's stats, read from its stats socket."""
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(str(self.run_dir / "stats.sock"))
            return json.loads(b"".join(iter(lambda: client.recv(65536), b"")))

    def snapshot_ids(self) -> list[int]:
        response = self.get("/api/snapshots?limit=1000")
        return [entry["id"] for entry in response.json()] if response.ok else []


@contextmanager
def production_stack(
    upstream_url: str,
    database_url: str | None = None,
    interval_s: float = 2.0,
    record: bool = True,
):
    """Prepare and start the whole stack; stop it and remove its files after.

    Without ``database_url``, the database is a SQLite file in the run
    directory, where the service user can write it and its WAL files.
    """
    run_dir = Path(tempfile.mkdtemp(prefix="zuul-status-e2e-"))
    database_url = database_url or f"sqlite:///{run_dir / 'zuul-status.sqlite'}"
    stack = ProductionStack(run_dir, database_url, upstream_url, interval_s)
    try:
        stack.prepare()
        stack.zuul_status("db", "upgrade")
        if record:
            stack.start("recorder")
        stack.start("uwsgi")
        stack.start("nginx")
        stack.wait_until(lambda: stack.answers("/healthz"), "nginx and uWSGI to answer")
        yield stack
    finally:
        stack.stop_all()
        shutil.rmtree(run_dir, ignore_errors=True)


@contextmanager
def private_postgres():
    """A database of its own on the test suite's PostgreSQL, dropped after.

    The stack runs for a whole module in processes pytest does not control;
    a database of its own keeps other tests, and other runs against the same
    server, from resetting it underneath.
    """
    url, reason = postgres_url()
    if url is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {reason}")
        pytest.skip(reason)
    name = f"zuul_status_e2e_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def serve_in_thread(server: FakeZuulServer) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    return thread


def capture_job_names() -> set[str]:
    """Every job name in the largest capture."""
    document = json.loads(LARGEST_CAPTURE.read_bytes())
    return {
        job["name"]
        for pipeline in document["pipelines"]
        for queue in pipeline["change_queues"]
        for head in queue["heads"]
        for item in head
        for job in item.get("jobs") or []
    }


def assert_security_headers(response: requests.Response) -> None:
    """Each header once (a repeated header arrives joined by a comma)."""
    headers = response.headers
    csp = headers.get("Content-Security-Policy", "")
    assert csp.count("default-src") == 1, f"CSP {csp!r}"
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert headers.get("Referrer-Policy") == "same-origin"
    assert "nginx/" not in headers.get("Server", ""), "nginx hides its version"


# --- Tests -------------------------------------------------------------------


def test_nginx_accepts_the_shipped_site_inside_debians_main_configuration(tmp_path):
    nginx = require_nginx()
    main_conf = tmp_path / "nginx.conf"
    # The shipped file itself, unchanged: `nginx -t` neither binds its ports
    # nor needs its socket or its directories.
    main_conf.write_text(nginx_main_conf(SHIPPED_NGINX_SITE, tmp_path, workers=None))
    result = subprocess.run(
        [nginx, "-t", "-p", tmp_path, "-c", main_conf],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def test_the_test_copies_differ_from_the_shipped_files_only_in_ports_paths_and_user(
    tmp_path,
):
    account = Account("nobody", "nogroup")
    shipped = SHIPPED_UWSGI_INI.read_text()
    ini = rewrite_uwsgi_ini(shipped, tmp_path, tmp_path, account)
    changed = [
        a for a, b in zip(shipped.splitlines(), ini.splitlines(), strict=True) if a != b
    ]
    keys = {line.split("=")[0].strip() for line in changed}
    assert keys == {"socket", "stats", "chdir", "uid", "gid", "chown-socket"}

    shipped = SHIPPED_NGINX_SITE.read_text()
    site = rewrite_nginx_site(shipped, tmp_path, 8123)
    changed = [
        a
        for a, b in zip(shipped.splitlines(), site.splitlines(), strict=True)
        if a != b
    ]
    assert [line.split()[0] for line in changed] == [
        "server", "uwsgi_cache_path", "listen", "listen", "root", "alias"
    ]  # fmt: skip


def test_the_systemd_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    copies = []
    for unit in sorted((PROJECT_ROOT / "deploy").glob("*.service")):
        # Only the virtualenv's path changes: verify checks that ExecStart exists.
        copy = tmp_path / unit.name
        copy.write_text(
            unit.read_text().replace("/opt/zuul-status/venv/bin/", f"{BIN}/")
        )
        copies.append(copy)
    assert [copy.name for copy in copies] == [
        "zuul-status-recorder.service",
        "zuul-status-web.service",
    ]
    result = subprocess.run(
        [analyze, "verify", *copies], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "zuul-status" not in result.stderr, result.stderr


@pytest.mark.parametrize("name", ["recorder", "web"])
def test_each_systemd_unit_runs_unprivileged_restarts_and_stops_in_time(name):
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read(PROJECT_ROOT / "deploy" / f"zuul-status-{name}.service")
    service = parser["Service"]
    assert (service["User"], service["Group"]) == ("zuul-status", "zuul-status")
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 30
    # Only the web UI owns /run/zuul-status/: systemd removes a unit's
    # RuntimeDirectory when it stops, so sharing it would lose the socket.
    assert service.get("RuntimeDirectory") == ("zuul-status" if name == "web" else None)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request):
    """The whole stack on one backend, recording the largest capture as it evolves."""
    require_nginx()
    if not LARGEST_CAPTURE.is_file():
        pytest.skip(f"{LARGEST_CAPTURE} is absent")
    with ExitStack() as resources:
        database_url = None
        if request.param == "postgresql":
            database_url = resources.enter_context(private_postgres())
        # A single file evolves between polls, so every poll stores a new snapshot.
        upstream = make_server(LARGEST_CAPTURE, speed=30)
        serve_in_thread(upstream)
        resources.callback(upstream.server_close)
        resources.callback(upstream.shutdown)
        running = resources.enter_context(production_stack(upstream.url, database_url))
        running.upstream = upstream
        running.wait_until(
            lambda: len(running.snapshot_ids()) >= 2, "two recorded snapshots"
        )
        yield running


def test_the_status_page_shows_the_latest_snapshot_of_the_largest_capture(stack):
    page = stack.get("/")
    assert page.status_code == 200, stack.explain(page)
    assert page.headers["Content-Type"].startswith("text/html")
    present = {name for name in capture_job_names() if name in page.text}
    assert present, "no job name of the capture on the status page"


def test_a_past_snapshot_is_served_with_a_link_to_the_next(stack):
    oldest = stack.snapshot_ids()[-1]
    page = stack.get(f"/snapshots/{oldest}")
    assert page.status_code == 200, stack.explain(page)
    assert f"snapshot {oldest}" in page.text
    assert 'rel="next"' in page.text


def test_the_health_check_reports_a_fresh_source(stack):
    health = stack.get("/healthz")
    assert health.status_code == 200, stack.explain(health)
    body = health.json()
    assert body["ok"] is True
    assert body["sources"]["demo"]["age_s"] < 60
    assert health.headers["Cache-Control"] == "no-store"


def test_the_csv_export_is_streamed_through_nginx(stack):
    response = stack.get("/export/builds.csv", stream=True)
    if response.status_code == 404:
        response.close()
        pytest.skip("the web UI has no /export/builds.csv yet")
    with response:
        assert response.status_code == 200, stack.explain(response)
        assert response.headers["Content-Type"].startswith("text/csv")
        # Streamed: nginx passes chunks on as they come, with no length known.
        assert "Content-Length" not in response.headers
        assert response.headers.get("Transfer-Encoding") == "chunked"
        first_line = next(response.iter_lines())
    assert b"job" in first_line


def test_a_reader_leaving_mid_export_is_not_logged_as_a_server_error(stack):
    uwsgi_log = stack.run_dir / "uwsgi.log"
    logged_before = uwsgi_log.stat().st_size
    response = stack.get("/export/builds.csv?reader=leaves", stream=True)
    if response.status_code == 404:
        response.close()
        pytest.skip("the web UI has no /export/builds.csv yet")
    assert response.status_code == 200, stack.explain(response)
    next(response.iter_content(1024))
    response.close()

    access_log = stack.run_dir / "nginx" / "access.log"
    stack.wait_until(
        lambda: (
            "reader=leaves" in access_log.read_text(errors="replace")
            and all(worker["status"] == "idle" for worker in stack.stats()["workers"])
        ),
        "nginx and uWSGI to finish with the request",
        timeout_s=30,
    )
    with uwsgi_log.open("rb") as log_file:
        log_file.seek(logged_before)
        new_lines = log_file.read().decode(errors="replace")
    for sign in ("Traceback", "OSError", "error", "Broken pipe", "SIGPIPE"):
        assert sign not in new_lines, new_lines


def test_csv_exports_are_rate_limited_per_client_with_a_friendly_429(stack):
    # 2 per second with a burst of 10: of twenty asked at once, the burst and
    # what the rate refills meanwhile pass, and the others are refused.
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(
            pool.map(lambda n: stack.get(f"/export/builds.csv?n={n}"), range(20))
        )
    elapsed_s = time.monotonic() - started
    statuses = [response.status_code for response in responses]
    limited = [response for response in responses if response.status_code == 429]
    assert limited, statuses
    assert 20 - len(limited) <= 11 + 2 * elapsed_s, statuses
    assert "Too many exports" in limited[0].text
    assert_security_headers(limited[0])


def test_security_headers_are_on_pages_and_on_errors(stack):
    page = stack.get("/")
    missing = stack.get("/no-such-page")
    assert page.status_code == 200, stack.explain(page)
    assert missing.status_code == 404, stack.explain(missing)
    assert_security_headers(page)
    assert_security_headers(missing)


def test_nginx_renders_a_page_once_for_many_readers_and_keeps_its_headers(stack):
    path = f"/snapshots/{stack.snapshot_ids()[0]}?reader=many"
    first, second = stack.get(path), stack.get(path)
    assert first.status_code == 200, stack.explain(first)
    assert second.status_code == 200, stack.explain(second)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert first.text == second.text
    assert_security_headers(second)
    assert stack.get("/healthz").headers["X-Cache"] != "HIT", "health is never cached"


def test_pages_stylesheets_and_json_are_gzipped(stack):
    raw = f"/api/snapshots/{stack.snapshot_ids()[0]}/raw"
    for path in ("/", "/static/style.css", raw):
        response = stack.get(path, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200, stack.explain(response)
        assert response.headers.get("Content-Encoding") == "gzip", path
        assert "Accept-Encoding" in response.headers.get("Vary", ""), path


def test_static_files_are_served_by_nginx_with_a_long_cache_lifetime(stack):
    response = stack.get("/static/style.css")
    assert response.status_code == 200, stack.explain(response)
    assert response.content == (PROJECT_ROOT / "webui/static/style.css").read_bytes()
    max_age = re.search(r"max-age=(\d+)", response.headers.get("Cache-Control", ""))
    assert max_age, response.headers.get("Cache-Control")
    assert int(max_age[1]) >= 24 * 3600
    assert response.headers.get("ETag")
    assert_security_headers(response)
    assert stack.get("/static/no-such-file.css").status_code == 404


def test_uwsgi_runs_as_the_configured_user_behind_a_group_only_socket(stack):
    stats = stack.stats()
    assert len(stats["workers"]) == 4
    uwsgi_log = (stack.run_dir / "uwsgi.log").read_text()
    assert "listen backlog is limited to 1024 connections" in uwsgi_log
    account = pwd.getpwnam(stack.account.user)
    assert stats["uid"] == account.pw_uid
    assert stats["gid"] == grp.getgrnam(stack.account.group).gr_gid
    mode = (stack.run_dir / "uwsgi.sock").stat()
    assert oct(mode.st_mode & 0o777) == oct(0o660)
    assert mode.st_gid == grp.getgrnam(stack.account.group).gr_gid


@pytest.mark.browser
def test_the_pages_break_no_rule_of_their_content_security_policy(stack):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent")
    from playwright.sync_api import sync_playwright

    violations = []
    paths = ["/", f"/snapshots/{stack.snapshot_ids()[-1]}", "/jobs"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda message: (
                    violations.append(f"{page.url}: {message.text}")
                    if "Content Security Policy" in message.text
                    else None
                ),
            )
            for path in paths:
                response = page.goto(stack.base_url + path, wait_until="load")
                assert response.status in (200, 404), f"{path}: {response.status}"
        finally:
            browser.close()
    assert not violations, "\n".join(violations)


def test_pages_answer_within_200_ms_once_the_upstream_is_gone(stack):
    oldest = stack.snapshot_ids()[-1]
    stack.upstream.shutdown()
    stack.upstream.server_close()
    stack.wait_until(
        lambda: (
            stack.get("/healthz").json()["sources"]["demo"]["last_poll_outcome"]
            == "failed"
        ),
        "the recorder to see the upstream gone",
        timeout_s=30,
    )
    paths = ("/", f"/snapshots/{oldest}", "/healthz")
    # Fill nginx's cache, and the uWSGI workers' caches of snapshot bodies.
    for _ in range(3):
        for path in paths:
            stack.get(path)
    for path in paths:
        for _ in range(5):
            started = time.monotonic()
            response = stack.get(path)
            elapsed_ms = (time.monotonic() - started) * 1000
            assert response.status_code == 200, stack.explain(response)
            assert elapsed_ms < 200, f"{path} took {elapsed_ms:.0f} ms"


def test_without_uwsgi_nginx_serves_static_files_and_a_friendly_502_page(stack):
    # die-on-term: SIGTERM stops uWSGI (instead of reloading it) promptly.
    assert stack.stop("uwsgi", timeout_s=15) == 0
    assert not (stack.run_dir / "uwsgi.sock").exists(), "vacuum removes the socket"

    # A page nginx has not cached (a cached one is still served for a few s).
    page = stack.get("/?source=demo&uncached")
    assert page.status_code == 502, stack.explain(page)
    assert "not available right now" in page.text
    assert_security_headers(page)
    assert stack.get("/errors/502.html").status_code == 404, "only as an error page"

    stylesheet = stack.get("/static/style.css")
    assert stylesheet.status_code == 200, stack.explain(stylesheet)
    assert stylesheet.content == (PROJECT_ROOT / "webui/static/style.css").read_bytes()
