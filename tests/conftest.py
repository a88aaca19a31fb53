"""Shared fixtures: real databases, the real captures, and loopback servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = PROJECT_ROOT.parent / "shared" / "fixtures" / "zuul-status"
CAPTURES = sorted(FIXTURES.glob("*.json")) if FIXTURES.is_dir() else []
LARGEST_CAPTURE = FIXTURES / "zuul2.0.0-2015-04-openstack-full.json"
PG_CANDIDATES = (
    os.environ.get("ZUUL_STATUS_TEST_PG", ""),
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)


def capture_params():
    """One pytest param per real capture, or one skipped param when absent."""
    if not CAPTURES:
        return [
            pytest.param(None, marks=pytest.mark.skip(reason=f"{FIXTURES} is absent"))
        ]
    return [pytest.param(path, id=path.stem) for path in CAPTURES]


def _find_postgres() -> tuple[str | None, str]:
    errors = []
    for url in filter(None, PG_CANDIDATES):
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return url, ""
        except Exception as error:  # noqa: BLE001 - any failure means "not here"
            errors.append(f"{url.split('@')[-1]}: {type(error).__name__}")
        finally:
            engine.dispose()
    return None, "no PostgreSQL reachable (" + "; ".join(errors) + ")"


_POSTGRES = None


def postgres_url() -> tuple[str | None, str]:
    global _POSTGRES
    if _POSTGRES is None:
        _POSTGRES = _find_postgres()
    return _POSTGRES


# Each test run works in a schema of its own, so that two runs on one server
# (a developer's and CI's, say) never see each other's tables.
PG_SCHEMA = f"zuul_status_test_{os.getpid()}"


def reset_postgres(url: str) -> str:
    """Empty this run's schema; return a URL whose connections use only it."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {PG_SCHEMA}"))
    engine.dispose()
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{PG_SCHEMA}"


@pytest.fixture(scope="session", autouse=True)
def _drop_postgres_schema():
    yield
    url, _ = postgres_url() if _POSTGRES else (None, "")
    if url:
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
        engine.dispose()


@pytest.fixture(autouse=True)
def _close_database_connections():
    """Return each test's PostgreSQL connections, so that none pile up."""
    yield
    from recorder.db import dispose_all_engines

    dispose_all_engines()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path) -> str:
    """The URL of an empty database: a SQLite file, then the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'zuul-status.sqlite'}"
    url, reason = postgres_url()
    if url is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {reason}")
        pytest.skip(reason)
    return reset_postgres(url)


@pytest.fixture
def database_url(empty_database_url) -> str:
    """An empty database, migrated to the latest schema."""
    from recorder.migrate import upgrade

    upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A migrated SQLite file, for tests that do not depend on the backend."""
    from recorder.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'zuul-status.sqlite'}"
    upgrade(url)
    return url
