"""The parser against every real capture and against hand-made edge cases."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from recorder.parser import ParseError, parse_status
from tests.conftest import CAPTURES, FIXTURES, capture_params


def expected_counts_from_sources_md() -> dict[str, dict[str, int]]:
    """The per-capture counts that SOURCES.md states, read from its table."""
    table = (FIXTURES / "SOURCES.md").read_text()
    row = re.compile(
        r"^\| `(?P<file>[^`]+\.json)` \|[^|]*\|[^|]*\| "
        r"(?P<pipelines>\d+) \((?P<busy>\d+)\) "
        r"\| (?P<queues>[\d,]+) \| (?P<items>\d+) \| (?P<jobs>\d+)"
        r"(?: \((?P<finished>\d+)/(?P<running>\d+)/(?P<waiting>\d+)\))? \|",
        re.MULTILINE,
    )
    counts = {}
    for match in row.finditer(table):
        numbers = {
            k: int(v.replace(",", ""))
            for k, v in match.groupdict("0").items()
            if k != "file"
        }
        counts[match["file"]] = numbers
    return counts


@pytest.fixture(scope="module")
def sources_md_counts():
    counts = expected_counts_from_sources_md()
    assert len(counts) == len(CAPTURES), "SOURCES.md should describe every capture"
    return counts


@pytest.mark.parametrize("capture", capture_params())
def test_parsed_counts_equal_the_counts_stated_in_sources_md(
    capture, sources_md_counts
):
    expected = sources_md_counts[capture.name]
    status = parse_status(capture.read_bytes())
    counts = status.counts()
    assert counts["items"] == expected["items"]
    assert counts["jobs"] == expected["jobs"]
    assert (counts["finished"], counts["running"], counts["waiting"]) == (
        expected["finished"],
        expected["running"],
        expected["waiting"],
    )
    assert len(status.pipelines) == expected["pipelines"]
    busy = sum(1 for p in status.pipelines if any(True for _ in p.items))
    assert busy == expected["busy"]
    assert sum(len(p.change_queues) for p in status.pipelines) == expected["queues"]


@pytest.mark.parametrize("capture", capture_params())
def test_every_job_name_of_the_raw_document_is_in_the_model(capture):
    raw = json.loads(capture.read_bytes())
    raw_names = sorted(
        job["name"]
        for pipeline in raw["pipelines"]
        for queue in pipeline["change_queues"]
        for head in queue["heads"]
        for item in head
        for job in item["jobs"]
    )
    status = parse_status(capture.read_bytes())
    parsed = sorted(job.name for _, _, item in status.iter_items() for job in item.jobs)
    assert parsed == raw_names


def test_every_chain_of_heads_is_read_not_only_the_first():
    body = _status([[_item("1,1")], [_item("2,1"), _item("3,1")]])
    status = parse_status(body)
    assert [i.change_id for _, _, i in status.iter_items()] == ["1,1", "2,1", "3,1"]


def test_queue_names_may_repeat_and_each_queue_is_kept():
    document = {
        "pipelines": [
            {
                "name": "check",
                "change_queues": [
                    {"name": "demo/nova", "heads": [[_item("1,1")]]},
                    {"name": "demo/nova", "heads": [[_item("2,1")]]},
                ],
            }
        ]
    }
    status = parse_status(json.dumps(document))
    assert [q.name for q in status.pipelines[0].change_queues] == ["demo/nova"] * 2
    assert status.counts()["items"] == 2


def test_milliseconds_and_seconds_are_normalised():
    job = {
        "name": "tox",
        "result": None,
        "elapsed_time": 90_000,
        "remaining_time": 30_000,
        "estimated_time": 120.5,
        "start_time": 1_700_000_000.25,
        "end_time": None,
        "uuid": "abc",
    }
    item = _item("1,1", jobs=[job], enqueue_time=1_700_000_000_000)
    parsed = parse_status(_status([[item]])).pipelines[0].change_queues[0].heads[0][0]
    assert parsed.enqueue_time == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    (parsed_job,) = parsed.jobs
    assert parsed_job.elapsed_s == 90.0
    assert parsed_job.remaining_s == 30.0
    assert parsed_job.estimated_s == 120.5
    assert parsed_job.start_time == datetime(
        2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC
    )
    assert parsed_job.state == "running"


def test_stringified_booleans_and_nulls_are_understood():
    job = {
        "name": "tox",
        "result": "null",
        "voting": "false",
        "elapsed_time": "null",
        "start_time": "null",
        "uuid": "null",
    }
    item = _item("1,1", jobs=[job], live="true", owner="someone")
    parsed = parse_status(_status([[item]])).pipelines[0].change_queues[0].heads[0][0]
    assert parsed.live is True
    assert parsed.ref.owner == "someone"
    (parsed_job,) = parsed.jobs
    assert (parsed_job.result, parsed_job.voting, parsed_job.uuid) == (
        None,
        False,
        None,
    )
    assert parsed_job.state == "waiting"


def test_zuul_10_refs_carry_the_change_and_the_item_id_is_a_uuid():
    item = {
        "id": "0f1e2d3c-uuid",
        "live": True,
        "jobs": [{"name": "tox"}],
        "refs": [
            {
                "id": "12345,6",
                "project": "demo/nova",
                "url": "https://r/12345",
                "ref": "refs/changes/45/12345/6",
                "owner": {"name": "Ann"},
            },
            {"id": "12346,1", "project": "demo/neutron"},
        ],
    }
    parsed = parse_status(_status([[item]])).pipelines[0].change_queues[0].heads[0][0]
    assert parsed.uuid == "0f1e2d3c-uuid"
    assert parsed.change_id == "12345,6"
    assert parsed.ref.change == "12345"
    assert parsed.ref.patchset == "6"
    assert [r.project for r in parsed.refs] == ["demo/nova", "demo/neutron"]
    assert parsed.ref.owner == "Ann"


def test_absurd_times_are_unknown_rather_than_errors():
    job = {
        "name": "tox",
        "start_time": -5,
        "end_time": 1e300,
        "elapsed_time": -1,
        "estimated_time": "soon",
    }
    item = _item("1,1", jobs=[job], enqueue_time=10**30)
    parsed = parse_status(_status([[item]])).pipelines[0].change_queues[0].heads[0][0]
    assert parsed.enqueue_time is None
    (parsed_job,) = parsed.jobs
    assert (parsed_job.start_time, parsed_job.end_time) == (None, None)
    assert (parsed_job.elapsed_s, parsed_job.estimated_s) == (None, None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>Service Unavailable</html>", "invalid JSON"),
        (b'{"pipelines": [', "invalid JSON"),
        (b"[]", "expected a JSON object, got a list"),
        (b"{}", "no 'pipelines' list"),
        (b'{"pipelines": "none"}', "no 'pipelines' list"),
    ],
)
def test_a_body_that_is_not_status_raises_a_specific_parse_error(body, message):
    with pytest.raises(ParseError, match=re.escape(message)):
        parse_status(body)


def _item(change_id, jobs=None, **extra):
    return {"id": change_id, "project": "demo/nova", "jobs": jobs or [], **extra}


def _status(heads):
    return json.dumps(
        {
            "pipelines": [
                {
                    "name": "gate",
                    "change_queues": [{"name": "integrated", "heads": heads}],
                }
            ]
        }
    ).encode()
