"""The status simulator: generated documents, and documents made to evolve."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recorder.simulator import StatusEvolver, generate_status

NOW = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)
NOW_S = NOW.timestamp()
HOURS_S = 3600
CAPTURE = (
    Path(__file__).resolve().parent.parent.parent
    / "shared/fixtures/zuul-status/zuul2.0.0-2015-04-openstack-full.json"
)
needs_capture = pytest.mark.skipif(
    not CAPTURE.is_file(), reason=f"the shared capture {CAPTURE} is absent"
)
UUID = re.compile(r"^[0-9a-f]{32}$")
CHANGE_ID = re.compile(r"^\d+,\d+$")


def items_of(document):
    """Every (pipeline, queue, chain, item) of a document."""
    for pipeline in document["pipelines"]:
        for queue in pipeline["change_queues"]:
            for chain in queue["heads"]:
                for item in chain:
                    yield pipeline, queue, chain, item


def jobs_of(document):
    """Every (pipeline name, item, job) of a document."""
    for pipeline, _queue, _chain, item in items_of(document):
        for job in item["jobs"]:
            yield pipeline["name"], item, job


def state_of(job) -> str:
    """finished, running or waiting, as SCHEMA-NOTES.md defines them."""
    if job.get("result") is not None:
        return "finished"
    if job.get("elapsed_time") is not None or job.get("start_time") is not None:
        return "running"
    return "waiting"


def builds(document, state):
    """The jobs of a document in one state, by build uuid."""
    return {
        job["uuid"]: job for _p, _i, job in jobs_of(document) if state_of(job) == state
    }


def live_items(document):
    """Every live item of a document, keyed by pipeline, id and enqueue time."""
    return {
        (pipeline["name"], item["id"], item["enqueue_time"]): item
        for pipeline, _q, _c, item in items_of(document)
        if item.get("live", True)
    }


def keys_by_level(document) -> dict[str, set[str]]:
    """The keys used at each level of a document."""
    levels = {"top": set(document), "pipeline": set(), "queue": set()}
    levels.update(item=set(), job=set())
    for pipeline, queue, _chain, item in items_of(document):
        levels["pipeline"] |= set(pipeline)
        levels["queue"] |= set(queue)
        levels["item"] |= set(item)
        for job in item["jobs"]:
            levels["job"] |= set(job)
    for pipeline in document["pipelines"]:
        levels["pipeline"] |= set(pipeline)
    return levels


def snapshots(evolver, steps, seconds=30.0):
    """The evolver's document after each of ``steps`` steps, parsed again."""
    for _ in range(steps):
        evolver.advance(seconds)
        yield json.loads(evolver.body())


# Generated documents.


@pytest.mark.parametrize("shape", ["v3", "v10"])
def test_a_generated_document_nests_pipelines_queues_chains_items_and_jobs(shape):
    document = generate_status(seed=0, now=NOW, shape=shape)

    names = [pipeline["name"] for pipeline in document["pipelines"]]
    assert names == [
        "check",
        "gate",
        "post",
        "periodic",
        "experimental",
        "release",
        "tag",
    ]
    assert isinstance(document["zuul_version"], str)
    assert isinstance(document["trigger_event_queue"]["length"], int)
    assert isinstance(document["management_event_queue"]["length"], int)
    assert ("result_event_queue" in document) == (shape == "v3")
    for pipeline in document["pipelines"]:
        assert isinstance(pipeline["description"], str)
        for queue in pipeline["change_queues"]:
            assert isinstance(queue["heads"], list)
            assert all(isinstance(chain, list) for chain in queue["heads"])
    assert sum(1 for _ in items_of(document)) >= 10
    assert all(isinstance(job["name"], str) for _p, _i, job in jobs_of(document))
    empty = [p["name"] for p in document["pipelines"] if not p["change_queues"]]
    assert {"experimental", "release", "tag"} <= set(empty)


def test_check_gives_each_item_its_own_queue_named_after_its_project():
    document = generate_status(seed=4, now=NOW)
    check = document["pipelines"][0]

    names = []
    for queue in check["change_queues"]:
        assert queue["window"] == 0
        assert len(queue["heads"]) == 1
        *ahead, live = queue["heads"][0]
        assert live["live"] is True
        assert live["jobs"]
        assert queue["name"] == live["project"]
        assert all(item["live"] is False and item["jobs"] == [] for item in ahead)
        names.append(queue["name"])
    assert any(len(queue["heads"][0]) > 1 for queue in check["change_queues"])
    assert all(name.startswith("demo/") for name in names)


@pytest.mark.parametrize("seed", range(6))
def test_gate_items_share_the_integrated_queue_and_link_to_each_other(seed):
    document = generate_status(seed=seed, now=NOW)
    gate = document["pipelines"][1]
    integrated = [q for q in gate["change_queues"] if q["name"] == "integrated"]

    assert len(integrated) == 1
    assert integrated[0]["window"] > 0
    order = [item["id"] for chain in integrated[0]["heads"] for item in chain]
    for chain in integrated[0]["heads"]:
        assert chain[0]["item_ahead"] is None
        for item in chain:
            ahead, behind = item["item_ahead"], item["items_behind"]
            position = order.index(item["id"])
            assert ahead is None or order.index(ahead) < position
            assert all(order.index(other) > position for other in behind)
            if not behind and item is not chain[-1]:
                assert item["failing_reasons"], "only a failing item is a dead end"


def test_a_failing_gate_item_is_a_dead_end_that_the_item_ahead_lists_first():
    found = 0
    for seed in range(12):
        document = generate_status(seed=seed, now=NOW)
        items = {item["id"]: item for _p, _q, _c, item in items_of(document)}
        for _p, queue, _chain, item in items_of(document):
            if queue["name"] != "integrated" or not item["failing_reasons"]:
                continue
            found += 1
            assert item["items_behind"] == []
            if item["item_ahead"] is not None:
                ahead = items[item["item_ahead"]]
                assert ahead["items_behind"][0] == item["id"]
            failed = [j for j in item["jobs"] if j["result"] not in (None, "SUCCESS")]
            assert failed
            assert all(j["voting"] for j in failed)
    assert found >= 2


@pytest.mark.parametrize("shape", ["v3", "v10"])
def test_times_are_milliseconds_and_seconds_as_zuul_writes_them(shape):
    document = generate_status(seed=1, now=NOW, shape=shape)
    now_ms = NOW_S * 1000

    assert type(document["last_reconfigured"]) is int
    assert now_ms - 2 * 86400_000 < document["last_reconfigured"] < now_ms
    for _p, _q, _c, item in items_of(document):
        assert type(item["enqueue_time"]) is int
        assert now_ms - 3 * HOURS_S * 1000 < item["enqueue_time"] <= now_ms
    for _pipeline, _item, job in jobs_of(document):
        state = state_of(job)
        if state == "running":
            assert type(job["elapsed_time"]) is int
            assert type(job["start_time"]) is float
            assert type(job["remaining_time"]) is int
            assert job["remaining_time"] >= 0
            assert NOW_S - 3 * HOURS_S < job["start_time"] < NOW_S
            assert job["start_time"] + job["elapsed_time"] / 1000 == pytest.approx(
                NOW_S, abs=0.01
            )
            assert type(job["estimated_time"]) is float
            assert job["estimated_time"] < 86400
        elif state == "finished" and job["uuid"] is not None:
            assert type(job["end_time"]) is float
            assert job["start_time"] < job["end_time"] <= NOW_S
            duration_ms = (job["end_time"] - job["start_time"]) * 1000
            assert job["elapsed_time"] == pytest.approx(duration_ms, abs=1)
            assert job["remaining_time"] == 0
        elif state == "waiting":
            assert job["uuid"] is None
            assert job["elapsed_time"] is None


def test_an_item_has_a_remaining_time_only_once_all_its_jobs_started():
    document = generate_status(seed=3, now=NOW)
    for _p, _q, _c, item in items_of(document):
        if not item["live"]:
            continue
        unfinished = [j for j in item["jobs"] if j["result"] is None]
        if any(j["start_time"] is None for j in unfinished):
            assert item["remaining_time"] is None
        else:
            expected = max([j["remaining_time"] for j in unfinished], default=0)
            assert item["remaining_time"] == expected


@pytest.mark.parametrize("shape", ["v3", "v10"])
def test_running_urls_are_relative_streams_and_finished_urls_are_absolute_logs(shape):
    document = generate_status(seed=5, now=NOW, shape=shape)

    for uuid, job in builds(document, "running").items():
        assert job["url"] == f"stream/{uuid}?logfile=console.log"
        assert job["finger_url"].startswith("finger://")
    for uuid, job in builds(document, "finished").items():
        if uuid is None:
            continue
        for key in ("url", "report_url"):
            assert job[key].startswith("https://logs.example.org/")
            assert uuid[:7] in job[key]


@pytest.mark.parametrize("seed", range(5))
def test_every_seed_shows_every_kind_of_job_and_non_live_items(seed):
    document = generate_status(seed=seed, now=NOW)
    jobs = [job for _p, _i, job in jobs_of(document)]

    assert {state_of(job) for job in jobs} == {"waiting", "running", "finished"}
    results = {job["result"] for job in jobs}
    assert {"SUCCESS", "FAILURE", "SKIPPED"} <= results
    assert any(job["voting"] is False for job in jobs)
    assert any(job["dependencies"] for job in jobs)
    non_live = [i for _p, _q, _c, i in items_of(document) if i["live"] is False]
    assert non_live
    assert all(item["jobs"] == [] for item in non_live)
    for _p, _q, chain, item in items_of(document):
        if item["live"] is False:
            assert item is not chain[-1], "a non-live item stands ahead of a change"


def test_the_same_seed_and_time_give_the_same_document():
    first = generate_status(seed=7, now=NOW)

    assert generate_status(seed=7, now=NOW) == first
    assert generate_status(seed=8, now=NOW) != first


def test_the_tenant_names_projects_and_jobs():
    document = generate_status(seed=0, now=NOW, tenant="acme")

    assert all(i["project"].startswith("acme/") for _p, _q, _c, i in items_of(document))
    assert all(j["name"].startswith("acme-") for _p, _i, j in jobs_of(document))


def test_v10_items_hold_their_changes_in_refs_and_link_by_item_uuid():
    document = generate_status(seed=2, now=NOW, shape="v10")

    assert "connection_event_queues" in document
    managers = {p["name"]: p["manager"] for p in document["pipelines"]}
    assert managers["gate"] == "dependent"
    assert managers["check"] == "independent"
    for _pipeline, queue, _chain, item in items_of(document):
        assert queue["heads"]
        assert "branch" in queue
        assert UUID.match(item["id"])
        assert not {"project", "url", "ref", "owner"} & set(item)
        (ref,) = item["refs"]
        assert ref["project"].startswith("demo/")
        assert ref["id"] is None or CHANGE_ID.match(ref["id"]) or len(ref["id"]) == 40
        in_queue = {other["id"] for chain in queue["heads"] for other in chain}
        assert item["item_ahead"] is None or item["item_ahead"] in in_queue
        assert set(item["items_behind"]) <= in_queue
    for _pipeline, _item, job in jobs_of(document):
        assert "waiting_status" in job
        assert "pre_fail" in job
        assert not {"worker", "node_name", "node_labels"} & set(job)
        if state_of(job) == "waiting":
            assert job["waiting_status"].startswith(
                ("node request: ", "dependencies: ")
            )


def test_v3_and_v10_of_one_seed_hold_the_same_changes():
    v3 = generate_status(seed=9, now=NOW)
    v10 = generate_status(seed=9, now=NOW, shape="v10")

    changes_v3 = sorted(str(i["id"]) for _p, _q, _c, i in items_of(v3))
    changes_v10 = sorted(str(i["refs"][0]["id"]) for _p, _q, _c, i in items_of(v10))
    assert changes_v3 == changes_v10


def test_an_unknown_shape_is_refused():
    with pytest.raises(ValueError, match="v4"):
        generate_status(shape="v4")


# Evolving documents.


def test_advancing_moves_the_clock_and_every_running_build_by_the_step():
    evolver = StatusEvolver(generate_status(seed=2, now=NOW), seed=2, now=NOW)
    before = builds(json.loads(evolver.body()), "running")

    evolver.advance(30)
    after = builds(json.loads(evolver.body()), "running")

    assert evolver.now == NOW + timedelta(seconds=30)
    still_running = before.keys() & after.keys()
    assert still_running
    for uuid in still_running:
        assert after[uuid]["elapsed_time"] - before[uuid]["elapsed_time"] == 30_000
        assert after[uuid]["start_time"] == before[uuid]["start_time"]
        expected = max(before[uuid]["remaining_time"] - 30_000, 0)
        assert after[uuid]["remaining_time"] == expected


def test_over_hours_builds_finish_and_start_and_items_come_and_go():
    document = generate_status(seed=6, now=NOW)
    evolver = StatusEvolver(document, seed=6, now=NOW)
    previous = document
    initial = len(live_items(document))
    finished = started = arrived = departed = 0

    for step, current in enumerate(snapshots(evolver, 480), start=1):
        now_s = NOW_S + 30 * step
        running_before = builds(previous, "running")
        for uuid, job in builds(current, "finished").items():
            if uuid in running_before:
                finished += 1
                assert now_s - 30 < job["end_time"] <= now_s
                assert job["report_url"].startswith("https://logs.example.org/")
        started += len(builds(current, "running").keys() - running_before.keys())
        items_before, items_now = live_items(previous), live_items(current)
        for key in items_now.keys() - items_before.keys():
            arrived += 1
            assert items_now[key]["enqueue_time"] == pytest.approx(now_s * 1000, abs=1)
            assert all(state_of(job) == "waiting" for job in items_now[key]["jobs"])
        departed += len(items_before.keys() - items_now.keys())
        assert initial / 2 <= len(items_now) <= initial * 2
        previous = current

    assert finished > 50
    assert started > 50
    assert arrived > 10
    assert departed > 10


def test_a_failing_gate_item_stays_put_and_the_items_behind_it_restart():
    evolver = StatusEvolver(generate_status(seed=11, now=NOW), seed=11, now=NOW)
    previous = json.loads(evolver.body())
    observed = None

    for current in snapshots(evolver, 2880):
        observed = _gate_failure(previous, current)
        if observed:
            break
        previous = current

    assert observed, "no gate item failed in a simulated day"
    failing, behind = observed
    assert failing["items_behind"] == []
    old_uuids = {j["uuid"] for _p, _i, j in jobs_of(previous) if j["uuid"]}
    for item in behind:
        assert all(job["uuid"] not in old_uuids for job in item["jobs"])
        assert all(state_of(job) == "waiting" for job in item["jobs"])


def _gate_failure(previous, current):
    """A gate item that started failing between two documents, if any.

    Returns the failing item and the items that were behind it, as they are
    in ``current``.
    """
    before = {i["id"]: i for p, _q, _c, i in items_of(previous) if p["name"] == "gate"}
    now = {i["id"]: i for p, _q, _c, i in items_of(current) if p["name"] == "gate"}
    for item_id, item in now.items():
        old = before.get(item_id)
        if not item["failing_reasons"] or old is None or old["failing_reasons"]:
            continue
        behind = [now[b] for b in old["items_behind"] if b in now]
        behind = [b for b in behind if not b["failing_reasons"]]
        if behind:
            assert behind[0]["item_ahead"] == item["item_ahead"]
            return item, behind
    return None


def test_the_same_seed_evolves_the_same_way():
    document = generate_status(seed=3, now=NOW)
    first = StatusEvolver(document, seed=1, now=NOW)
    second = StatusEvolver(document, seed=1, now=NOW)
    other = StatusEvolver(document, seed=2, now=NOW)

    bodies = _bodies(first, 60)
    assert _bodies(second, 60) == bodies
    assert _bodies(other, 60) != bodies


def _bodies(evolver, steps):
    """The bodies of ``steps`` 30-second steps."""
    result = []
    for _ in range(steps):
        evolver.advance(30)
        result.append(evolver.body())
    return result


def test_the_evolver_leaves_the_document_it_was_given_alone():
    document = generate_status(seed=3, now=NOW)
    untouched = json.dumps(document)

    evolver = StatusEvolver(document, now=NOW)
    evolver.advance(3600)

    assert json.dumps(document) == untouched


def test_a_v10_document_keeps_its_shape_while_it_evolves():
    document = generate_status(seed=4, now=NOW, shape="v10")
    levels = keys_by_level(document)
    evolver = StatusEvolver(document, seed=4)

    for current in snapshots(evolver, 300):
        for _pipeline, queue, _chain, item in items_of(current):
            assert queue["heads"], "Zuul 11.1 and later leave empty queues out"
            assert UUID.match(item["id"])
            assert "project" not in item
            in_queue = {other["id"] for chain in queue["heads"] for other in chain}
            assert item["item_ahead"] is None or item["item_ahead"] in in_queue
        for level, keys in keys_by_level(current).items():
            assert keys <= levels[level], level


@needs_capture
def test_evolving_the_2015_capture_keeps_the_keys_of_its_era():
    document = json.loads(CAPTURE.read_bytes())
    levels = keys_by_level(document)
    uuids_before = set(builds(document, "running"))
    items_before = len(live_items(document))

    started = time.perf_counter()
    evolver = StatusEvolver(document, seed=0)
    for _ in range(100):
        evolver.advance(30)
        body = evolver.body()
    print(
        f"evolved 100 steps of {CAPTURE.name} in {time.perf_counter() - started:.2f} s"
    )

    current = json.loads(body)
    for level, keys in keys_by_level(current).items():
        assert keys <= levels[level], level
    assert current["zuul_version"] == "2.0.0"
    running = builds(current, "running")
    assert running.keys() != uuids_before
    assert all(job["url"].startswith("https://jenkins") for job in running.values())
    assert items_before / 2 <= len(live_items(current)) <= items_before * 2


@needs_capture
def test_a_capture_starts_at_the_moment_it_was_taken():
    document = json.loads(CAPTURE.read_bytes())
    taken_s = max(
        job["start_time"] + job["elapsed_time"] / 1000
        for _p, _i, job in jobs_of(document)
        if state_of(job) == "running" and job["start_time"] is not None
    )

    evolver = StatusEvolver(document)

    assert evolver.now.timestamp() == pytest.approx(taken_s, abs=0.001)
    assert evolver.now.tzinfo is UTC


@needs_capture
def test_a_capture_given_a_time_is_moved_to_that_time():
    document = json.loads(CAPTURE.read_bytes())
    captured = StatusEvolver(document)
    latest_ms = max(i["enqueue_time"] for _p, _q, _c, i in items_of(document))
    age_s = captured.now.timestamp() - latest_ms / 1000

    moved = json.loads(StatusEvolver(document, now=NOW).body())

    latest_moved_ms = max(i["enqueue_time"] for _p, _q, _c, i in items_of(moved))
    assert NOW_S - latest_moved_ms / 1000 == pytest.approx(age_s, abs=0.01)
