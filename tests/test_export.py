"""The CSV export, on the web and on the command line, on a planned history."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from recorder import export
from recorder.cli import main
from recorder.db import make_engine, make_sessionmaker
from tests.test_jobs import (
    FORMULA_JOBS,
    SOURCE,
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
    assert all(chunk.count("\r\n") <= 5 for chunk in chunks[1:])


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
