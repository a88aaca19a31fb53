"""The CSV export, on the web and on the command line, on a planned history."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import insert

from recorder import export
from recorder.cli import main
from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.migrate import upgrade
from recorder.models import Build
from recorder.store import get_or_create_source
from tests.conftest import postgres_url, reset_postgres
from tests.test_jobs import (
    FORMULA_JOBS,
    SOURCE,
    T0,
    ZUUL_URL,
    Expected,
    History,
    make_client,
    plan_history,
    record,
)

COLUMNS = [
    "source",
    "pipeline",
    "queue",
    "project",
    "change",
    "ref",
    "branch",
    "job",
    "voting",
    "result",
    "enqueue_time",
    "start_time",
    "end_time",
    "duration_s",
    "wait_s",
    "build_uuid",
    "log_url",
    "first_seen",
    "last_seen",
]


def iso(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%f}Z"


def number(value: float | None) -> str:
    return "" if value is None else str(float(value))


def guarded(text: str | None) -> str:
    """A spreadsheet runs cells that start with these; an apostrophe stops it."""
    if text is None:
        return ""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def expected_row(build: Expected) -> list[str]:
    item, attempt = build.item, build.attempt
    started = attempt.start_s is not None
    return [
        SOURCE,
        item.pipeline,
        item.project,
        item.project,
        item.change,
        "",
        item.branch,
        guarded(build.job.name),
        "true" if build.job.voting else "false",
        attempt.result or "",
        iso(item.enqueue),
        iso(build.start),
        iso(build.end),
        number(build.duration_s),
        number(build.wait_s),
        attempt.uuid if started else "",
        f"https://logs.example.org/{attempt.uuid}/" if started else "",
        iso(build.first_seen),
        iso(build.last_seen),
    ]


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


@pytest.fixture
def history() -> History:
    return plan_history()


@pytest.fixture
def recorded(database_url, history):
    record(database_url, history)
    return database_url


def test_every_csv_row_equals_the_planned_build_column_by_column(recorded, history):
    response = make_client(recorded).get("/export/builds.csv?range=all")

    assert response.status_code == 200
    header, *rows = parse(response.get_data(as_text=True))
    assert header == COLUMNS
    assert sorted(rows) == sorted(expected_row(build) for build in history.builds)
    first_seen = [row[COLUMNS.index("first_seen")] for row in rows]
    assert first_seen == sorted(first_seen)  # in the order first recorded


def test_a_job_name_chosen_by_an_attacker_is_not_a_formula_in_the_csv(recorded):
    text = make_client(recorded).get("/export/builds.csv?range=all").get_data(True)

    header, *rows = parse(text)
    jobs = {row[header.index("job")] for row in rows}
    assert {"'" + name for name in FORMULA_JOBS} <= jobs
    assert '\'=HYPERLINK("https://evil.example/","click me")' in jobs
    for row in rows:
        for cell in row:
            assert cell[:1] not in ("=", "+", "@", "\t", "\r"), row
            assert not cell.startswith("-"), row


def test_the_web_export_streams_with_a_file_name_of_its_filters_and_date(recorded):
    before = datetime.now(UTC).date()
    response = make_client(recorded).get(
        "/export/builds.csv?source=openstack&pipeline=gate&range=all"
    )
    after = datetime.now(UTC).date()

    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["X-Accel-Buffering"] == "no"
    disposition = response.headers["Content-Disposition"]
    assert disposition in {
        f'attachment; filename="builds_openstack_gate_all_{day}.csv"'
        for day in (before, after)
    }
    rows = parse(response.get_data(as_text=True))[1:]
    assert rows
    assert {row[1] for row in rows} == {"gate"}


def test_the_export_reads_the_database_a_batch_of_rows_at_a_time(recorded, history):
    filters = export.parse_filters({"range": "all"})
    engine = make_engine(recorded)
    with make_sessionmaker(engine)() as session:
        chunks = list(export.csv_chunks(session, filters, rows_per_batch=5))
    engine.dispose()

    rows = len(history.builds)
    assert len(chunks) == 1 + -(-rows // 5)  # the header, then one per batch
    assert all(chunk.count(b"\r\n") <= 5 for chunk in chunks[1:])


def test_an_unknown_source_is_an_error_page_and_not_a_truncated_file(recorded):
    response = make_client(recorded).get("/export/builds.csv?source=nowhere")

    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "no source named &#39;nowhere&#39;" in response.get_data(as_text=True)


def test_the_command_line_writes_the_same_csv_as_the_web(recorded, tmp_path):
    config = tmp_path / "zuul-status.toml"
    config.write_text(f'database_url = "{recorded}"\n')
    output = tmp_path / "builds.csv"

    result = CliRunner().invoke(
        main,
        ["-c", str(config), "export-csv", "--pipeline", "check", "--range", "all"]
        + ["-o", str(output)],
    )

    assert result.exit_code == 0, result.output
    web = make_client(recorded).get("/export/builds.csv?pipeline=check&range=all")
    assert output.read_bytes() == web.get_data()
    rows = len(parse(output.read_bytes().decode())) - 1
    assert f"{rows} builds written to {output}" in result.output


def test_the_command_line_says_which_filter_is_wrong(recorded, tmp_path):
    config = tmp_path / "zuul-status.toml"
    config.write_text(f'database_url = "{recorded}"\n')

    result = CliRunner().invoke(
        main, ["-c", str(config), "export-csv", "--from", "last tuesday"]
    )

    assert result.exit_code == 1
    assert "'from' must be an ISO 8601 date or time" in result.output


def test_the_command_line_export_does_not_import_flask():
    code = (
        "import sys; from recorder import cli, export; sys.exit('flask' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def migrated_postgres() -> str:
    url, reason = postgres_url()
    if url is None:
        pytest.skip(reason)
    url = reset_postgres(url)
    upgrade(url)
    return url


def exported(url: str) -> bytes:
    stream = io.BytesIO()
    export.export_csv(url, export.parse_filters({"range": "all"}), stream)
    return stream.getvalue()


def test_postgresql_copy_and_sqlite_lines_write_the_same_bytes(sqlite_url, history):
    postgres = migrated_postgres()
    record(sqlite_url, history)
    record(postgres, history)

    from_sqlite, from_postgres = exported(sqlite_url), exported(postgres)

    assert from_postgres == from_sqlite
    # Both go past their fast path somewhere (a quoted, comma-holding job name).
    assert b'"\'=HYPERLINK(""https://evil.example/"",""click me"")"' in from_sqlite


# Floats as Python's repr() writes them, which PostgreSQL spells otherwise:
# whole numbers, the decade from 1e15, NaN and the infinities.
AWKWARD_FLOATS = (
    0.0,
    -0.0,
    900.0,
    -5.0,
    1234.5,
    0.1,
    1 / 3,
    1e-05,
    1.5e-07,
    123456789.123456,
    6128.037951435254,
    1e15,
    1e15 + 0.25,
    2e15 + 0.5,
    9999999999999998.0,
    1e16,
    1.5e16,
    1.2345678901234567e20,
    float("inf"),
    float("-inf"),
    float("nan"),
)


def test_postgresql_writes_every_float_as_the_csv_module_does():
    url = migrated_postgres()
    engine = make_engine(url, writer=True)
    with session_scope(make_sessionmaker(engine)) as session:
        source = get_or_create_source(session, SOURCE, ZUUL_URL)
        rows = [
            {
                "source_id": source.id,
                "key": f"u:{index}",
                "pipeline": "check",
                "job": "floats",
                "voting": True,
                "state": "finished",
                "duration_s": duration_s,
                "first_snapshot_id": 1,
                "last_snapshot_id": 1,
                "first_seen": T0,
                "last_seen": T0,
            }
            for index, duration_s in enumerate(AWKWARD_FLOATS)
        ]
        session.execute(insert(Build), rows)
    engine.dispose()

    header, *cells = parse(exported(url).decode())

    column = header.index("duration_s")
    written = [row[column] for row in cells]
    expected = []
    for value in AWKWARD_FLOATS:
        buffer = io.StringIO()
        csv.writer(buffer).writerow([value])
        expected.append(buffer.getvalue().strip())
    assert written == expected


@pytest.mark.parametrize("bound", ["--from", "--to"])
def test_the_command_line_refuses_a_range_with_a_from_or_to(recorded, tmp_path, bound):
    config = tmp_path / "zuul-status.toml"
    config.write_text(f'database_url = "{recorded}"\n')
    output = tmp_path / "builds.csv"

    result = CliRunner().invoke(
        main,
        ["-c", str(config), "export-csv", "--range", "day", bound, "2026-05-04"]
        + ["-o", str(output)],
    )

    assert result.exit_code == 2  # a usage error
    assert "give either --range or --from/--to, not both" in result.output
    assert not output.exists()


def test_the_command_line_reads_a_time_without_an_offset_as_utc(
    recorded, history, tmp_path
):
    config = tmp_path / "zuul-status.toml"
    config.write_text(f'database_url = "{recorded}"\n')
    since = datetime(2026, 5, 4, 14, 0, tzinfo=UTC)
    expected = [
        b
        for b in history.builds
        if b.first_seen is not None and (b.end or b.last_seen) >= since
    ]

    result = CliRunner().invoke(
        main,
        ["-c", str(config), "export-csv", "--from", "2026-05-04T14:00"]
        + ["-o", str(tmp_path / "builds.csv")],
    )

    assert result.exit_code == 0, result.output
    assert len(parse((tmp_path / "builds.csv").read_text())) - 1 == len(expected)
    # The web, asked in another zone with the same offset-less time, reads it there.
    web = make_client(recorded).get(
        "/export/builds.csv?from=2026-05-04T14:00&tz=Asia/Kolkata"
    )
    assert len(parse(web.get_data(as_text=True))) - 1 > len(expected)


def test_the_command_line_help_says_times_without_an_offset_are_utc():
    result = CliRunner().invoke(main, ["export-csv", "--help"])

    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "UTC unless it has an offset" in text
    assert "the command line has no reader's time zone" in text
    assert "not with --from or --to" in text
