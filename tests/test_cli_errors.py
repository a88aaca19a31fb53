"""What the command line says when the user's database or configuration is unusable.

Each mistake gets one line naming it, exit status 1, no traceback, and leaves
nothing behind (no empty SQLite file where a path was mistyped).
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from recorder.cli import main
from recorder.settings import ConfigError, load_settings
from tests.conftest import postgres_url

# Every command that reads or writes the database, with the arguments it needs.
DATABASE_COMMANDS = {
    "import": ["import", "--source", "demo", "{body}"],
    "reindex": ["reindex"],
    "prune": ["prune"],
    "export-csv": ["export-csv", "--range", "all"],
    "record": ["record", "--once"],
    "web": ["web", "--port", "0"],
}


def run(config, *args):
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    return result


def write_config(tmp_path, database_url: str, extra: str = "") -> str:
    config = tmp_path / "zuul-status.toml"
    config.write_text(
        f'database_url = "{database_url}"\n'
        "[[sources]]\n"
        'name = "demo"\n'
        'url = "http://127.0.0.1:9/api/status"\n' + extra
    )
    return config


def command_args(name: str, tmp_path) -> list[str]:
    body = tmp_path / "status.json"
    body.write_bytes(b'{"pipelines": []}')
    return [arg.replace("{body}", str(body)) for arg in DATABASE_COMMANDS[name]]


def assert_one_clear_line(result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: "), result.output
    for word in words:
        assert word in error, result.output


@pytest.mark.parametrize("name", sorted(DATABASE_COMMANDS))
def test_a_missing_sqlite_file_is_named_and_not_created(name, tmp_path):
    database = tmp_path / "typo" / "zuul-status.sqlite"
    config = write_config(tmp_path, f"sqlite:///{database}")

    result = run(config, *command_args(name, tmp_path))

    assert_one_clear_line(result, f"no database at {database}", "db upgrade")
    assert not database.exists()


@pytest.mark.parametrize("name", ["db-upgrade", *sorted(DATABASE_COMMANDS)])
def test_a_file_that_is_not_a_database_is_named_and_left_intact(name, tmp_path):
    database = tmp_path / "notes.txt"
    content = b"these are my notes, not a database\n" * 200
    database.write_bytes(content)
    config = write_config(tmp_path, f"sqlite:///{database}")
    args = ["db", "upgrade"] if name == "db-upgrade" else command_args(name, tmp_path)

    result = run(config, *args)

    assert_one_clear_line(result, "database unusable", "not a database")
    assert database.read_bytes() == content


@pytest.mark.parametrize("name", sorted(DATABASE_COMMANDS))
def test_an_old_schema_is_refused_with_the_command_that_fixes_it(name, tmp_path):
    database = tmp_path / "zuul-status.sqlite"
    config = write_config(tmp_path, f"sqlite:///{database}")
    assert run(config, "db", "upgrade", "--revision", "0001").exit_code == 0

    result = run(config, *command_args(name, tmp_path))

    assert_one_clear_line(result, "schema is missing or old", "zuul-status db upgrade")
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        revision = connection.execute(text("SELECT version_num FROM alembic_version"))
        assert revision.scalar_one() == "0001"
    engine.dispose()


def test_an_unknown_postgresql_database_is_named(tmp_path):
    url, reason = postgres_url()
    if url is None:
        pytest.skip(reason)
    missing = make_url(url).set(database="zuul_status_no_such_database")
    config = write_config(tmp_path, missing.render_as_string(hide_password=False))

    for args in (["db", "upgrade"], ["prune"], ["export-csv", "--range", "all"]):
        result = run(config, *args)
        assert_one_clear_line(result, "database unusable")
        assert "zuul_status_no_such_database" in result.output


def test_a_postgresql_server_that_is_not_listening_is_named(tmp_path):
    # Port 9 (discard) has no PostgreSQL behind it on loopback.
    config = write_config(tmp_path, "postgresql://postgres@127.0.0.1:9/test")

    result = run(config, "db", "upgrade")

    assert_one_clear_line(result, "database unusable", "127.0.0.1")


def test_import_refuses_a_source_name_that_sources_cannot_have(tmp_path):
    database = tmp_path / "zuul-status.sqlite"
    config = write_config(tmp_path, f"sqlite:///{database}")
    assert run(config, "db", "upgrade").exit_code == 0
    body = tmp_path / "status.json"
    body.write_bytes(b'{"pipelines": []}')

    result = run(config, "import", "--source", "bad name!", str(body))

    assert_one_clear_line(result, "--source", "'bad name!'")


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    config = tmp_path / "zuul-status.toml"
    config.write_bytes(b'database_url = "sqlite:///caf\xe9.sqlite"\n')

    with pytest.raises(ConfigError, match="not UTF-8") as raised:
        load_settings(config, environ={})

    assert str(config) in str(raised.value)
    assert_one_clear_line(run(config, "prune"), "not UTF-8")


@pytest.mark.parametrize(
    ("table", "line", "key"),
    [
        ("[[sources]]", "interval = nan", "interval"),
        ("[[sources]]", "deadline = inf", "deadline"),
        ("[[sources]]", "connect_timeout = -inf", "connect_timeout"),
        ("[[sources]]", "max_bytes = 1e400", "max_bytes"),
        ("[[sources]]", "max_bytes = 99999999999999999999", "max_bytes"),
        ("[retention]", "keep_all_days = nan", "keep_all_days"),
        ("[retention]", "hourly_days = inf", "hourly_days"),
    ],
)
def test_numbers_that_are_not_finite_are_refused(tmp_path, table, line, key):
    config = tmp_path / "zuul-status.toml"
    source = 'name = "demo"\nurl = "http://127.0.0.1:9/api/status"\n'
    config.write_text(f"{table}\n{source if 'sources' in table else ''}{line}\n")

    with pytest.raises(ConfigError, match=f"'{key}' must be a finite"):
        load_settings(config, environ={})


def test_zuul_status_url_replaces_the_file_sources_without_reading_them(tmp_path):
    config = tmp_path / "zuul-status.toml"
    config.write_text('[[sources]]\nname = "bad name!"\nurl = "ftp://nowhere"\n')
    url = "https://zuul.example.org/api/tenant/openstack/status"

    with pytest.raises(ConfigError, match="'name' must be"):
        load_settings(config, environ={})
    settings = load_settings(config, environ={"ZUUL_STATUS_URL": url})

    assert [(s.name, s.url) for s in settings.sources] == [("openstack", url)]


def test_a_tenant_name_with_escapes_names_its_source_unescaped(tmp_path):
    url = "https://zuul.example.org/api/tenant/my%20tenant/status"

    config = tmp_path / "zuul-status.toml"
    config.write_text("")

    settings = load_settings(config, environ={"ZUUL_STATUS_URL": url})

    assert [source.name for source in settings.sources] == ["my-tenant"]


@pytest.mark.parametrize(
    ("lines", "deadline"),
    [
        ("interval = 2", 2.0),
        ("interval = 600", 30.0),
        ("interval = 2\ndeadline = 9", 9),
    ],
)
def test_the_deadline_defaults_to_the_interval_up_to_30_s(tmp_path, lines, deadline):
    config = tmp_path / "zuul-status.toml"
    source = 'name = "demo"\nurl = "http://127.0.0.1:9/api/status"\n'
    config.write_text(f"[[sources]]\n{source}{lines}\n")

    (loaded,) = load_settings(config, environ={}).sources

    assert loaded.deadline_s == deadline


def test_fake_upstream_names_an_empty_directory(tmp_path):
    empty = tmp_path / "bodies"
    empty.mkdir()

    result = CliRunner().invoke(main, ["fake-upstream", str(empty)])

    assert result.exit_code == 1
    assert f"{empty}: a directory without *.json files" in result.output
