"""Job statistics pages and the builds API, on a recorded history of known builds.

The history is planned here, build by build (when each item was enqueued,
when each build started and ended, with what result), turned into the status
bodies Zuul would have served at every moment something changed, and stored
through the recorder as snapshots. Every expected figure is computed from the
plan with the standard library, never with the code under test.
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from recorder import export
from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.models import Build
from recorder.settings import Settings, SourceSettings
from recorder.store import get_or_create_source, store_body
from webui import create_app, job_queries

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
SOURCE = "openstack"
ZUUL_URL = "https://zuul.example.org/api/tenant/openstack/status"
NEUTRAL = {"SKIPPED", "CANCELED", "ABORTED", "DEQUEUED", "RETRY"}
FORMULA_JOBS = (
    '=HYPERLINK("https://evil.example/","click me")',
    "+1+1",
    "-2+3",
    "@SUM(1,1)",
    "\tcmd",
    "\rcmd",
)


# --- planning a history -------------------------------------------------------


@dataclass
class Attempt:
    """One build of a job: the times are seconds after the item was enqueued."""

    uuid: str | None
    start_s: float | None = None
    end_s: float | None = None
    result: str | None = None
    # The result shows without a start (skipped, canceled before it started).
    result_s: float | None = None


@dataclass
class PlannedJob:
    name: str
    attempts: list[Attempt]
    voting: bool = True


@dataclass
class PlannedItem:
    change: str
    project: str
    pipeline: str
    branch: str
    enqueue: datetime
    jobs: list[PlannedJob]
    # Seconds after enqueue when the item leaves the pipeline (None: never).
    leave_s: float | None = None


@dataclass
class Expected:
    """A build as the recorder should have stored it, and when it was seen."""

    item: PlannedItem
    job: PlannedJob
    attempt: Attempt
    first_seen: datetime | None = None
    last_seen: datetime | None = None

    @property
    def start(self) -> datetime | None:
        return _at(self.item, self.attempt.start_s)

    @property
    def end(self) -> datetime | None:
        return _at(self.item, self.attempt.end_s)

    @property
    def duration_s(self) -> float | None:
        if self.attempt.start_s is None or self.attempt.end_s is None:
            return None
        return float(self.attempt.end_s - self.attempt.start_s)

    @property
    def wait_s(self) -> float | None:
        return None if self.attempt.start_s is None else float(self.attempt.start_s)


@dataclass
class History:
    items: list[PlannedItem]
    snapshot_times: list[datetime] = field(default_factory=list)
    builds: list[Expected] = field(default_factory=list)

    def of_job(self, name: str) -> list[Expected]:
        return [build for build in self.builds if build.job.name == name]

    @property
    def last_snapshot(self) -> datetime:
        """When the newest snapshot was last taken (by the final poll)."""
        return self.snapshot_times[-1]


def _at(item: PlannedItem, seconds: float | None) -> datetime | None:
    return None if seconds is None else item.enqueue + timedelta(seconds=seconds)


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def shown_attempt(job: PlannedJob, elapsed_s: float) -> Attempt:
    """The attempt Zuul shows for a job: the latest that has started, else the first."""
    started = [
        a for a in job.attempts if a.start_s is not None and a.start_s <= elapsed_s
    ]
    return started[-1] if started else job.attempts[0]


def job_entry(job: PlannedJob, item: PlannedItem, moment: datetime) -> dict:
    """The job as Zuul 2.5's status would show it at ``moment``."""
    elapsed_s = (moment - item.enqueue).total_seconds()
    attempt = shown_attempt(job, elapsed_s)
    entry = {"name": job.name, "voting": job.voting, "result": None, "url": None}
    if attempt.start_s is not None and attempt.start_s <= elapsed_s:
        entry["uuid"] = attempt.uuid
        entry["start_time"] = _at(item, attempt.start_s).timestamp()
        entry["url"] = f"https://logs.example.org/{attempt.uuid}/"
        if attempt.end_s is not None and attempt.end_s <= elapsed_s:
            entry["end_time"] = _at(item, attempt.end_s).timestamp()
            entry["result"] = attempt.result
    elif attempt.result_s is not None and attempt.result_s <= elapsed_s:
        entry["result"] = attempt.result
    return entry


def status_body(items: list[PlannedItem], moment: datetime) -> bytes:
    """The whole status at ``moment``: every item enqueued and not yet gone."""
    pipelines: dict[str, dict[tuple, list]] = {}
    for item in items:
        elapsed_s = (moment - item.enqueue).total_seconds()
        if elapsed_s < 0 or (item.leave_s is not None and elapsed_s >= item.leave_s):
            continue
        number = item.change.split(",")[0]
        raw = {
            "id": item.change,
            "project": item.project,
            "url": f"https://review.example.org/{number}",
            "live": True,
            "enqueue_time": _epoch_ms(item.enqueue),
            "jobs": [job_entry(job, item, moment) for job in item.jobs],
        }
        queue = (item.project, item.branch)
        pipelines.setdefault(item.pipeline, {}).setdefault(queue, []).append(raw)
    document = {
        "zuul_version": "2.5.2",
        "pipelines": [
            {
                "name": name,
                "change_queues": [
                    {"name": project, "branch": branch, "heads": [[i] for i in queue]}
                    for (project, branch), queue in queues.items()
                ],
            }
            for name, queues in pipelines.items()
        ],
    }
    return json.dumps(document).encode()


def event_times(items: list[PlannedItem], final: datetime) -> list[datetime]:
    """Every moment at which the status changes, up to the final snapshot."""
    moments = {final}
    for item in items:
        offsets = [0.0, item.leave_s]
        for job in item.jobs:
            for attempt in job.attempts:
                offsets += [attempt.start_s, attempt.end_s, attempt.result_s]
        moments.update(
            item.enqueue + timedelta(seconds=offset)
            for offset in offsets
            if offset is not None
        )
    return sorted(moment for moment in moments if moment <= final)


def track_sightings(history: History) -> None:
    """When each build row was first and last seen, as the recorder keys them."""
    for item in history.items:
        for job in item.jobs:
            for attempt in job.attempts:
                history.builds.append(Expected(item, job, attempt))
    # A poll whose body equals the previous one stores no new snapshot, and
    # the builds in it are not seen again.
    stored, previous = [], None
    for moment in history.snapshot_times:
        body = status_body(history.items, moment)
        if body != previous:
            stored.append(moment)
        previous = body
    for moment in stored:
        for build in history.builds:
            elapsed_s = (moment - build.item.enqueue).total_seconds()
            leave = build.item.leave_s
            if elapsed_s < 0 or (leave is not None and elapsed_s >= leave):
                continue
            if shown_attempt(build.job, elapsed_s) is build.attempt:
                build.first_seen = build.first_seen or moment
                build.last_seen = moment


def attempts(*triples) -> list[Attempt]:
    """Attempts from (wait, duration, result) triples, each with a fresh uuid."""
    planned = []
    for wait_s, duration_s, result in triples:
        uuid = f"{len(_UUIDS):032x}"
        _UUIDS.append(uuid)
        end_s = None if duration_s is None else wait_s + duration_s
        planned.append(Attempt(uuid, wait_s, end_s, result))
    return planned


_UUIDS: list[str] = []

TEMPEST = [
    (60, 600, "SUCCESS"),
    (65, 640, "SUCCESS"),
    (70, 700, "FAILURE"),
    (75, 720, "SUCCESS"),
    (80, 800, "SUCCESS"),
    (85, 810, "POST_FAILURE"),
    (90, 900, "SUCCESS"),
    (95, 1000, "SUCCESS"),
    (100, 1500, "TIMED_OUT"),
    (105, 2400, "SUCCESS"),
]
TOX = [(10, 100, "SUCCESS"), (12, 110, "FAILURE"), (14, 130, "SUCCESS")]
TOX += [(16, 150, "SUCCESS"), (18, 170, "SUCCESS"), (20, 400, "SUCCESS")]


def plan_history() -> History:
    """Two days of one tenant: known durations, a skip, a retry, a running build."""
    _UUIDS.clear()
    items = []
    for index, (wait_s, duration_s, result) in enumerate(TEMPEST):
        # Half on the first day, half a day later: "last day" sees the second half.
        day = timedelta(hours=30) if index >= 5 else timedelta(0)
        enqueue = T0 + day + timedelta(minutes=10 * index)
        jobs = [PlannedJob("tempest-full", attempts((wait_s, duration_s, result)))]
        leave_s = wait_s + duration_s + 30
        items.append(
            PlannedItem(
                f"{1001 + index},1", "openstack/nova", "check", "master", enqueue, jobs
            )
        )
        items[-1].leave_s = leave_s
    for index, triple in enumerate(TOX):
        enqueue = T0 + timedelta(hours=2, minutes=5 * index)
        jobs = [PlannedJob("tox-py311", attempts(triple), voting=index != 5)]
        item = PlannedItem(
            f"{2001 + index},2",
            "openstack/neutron",
            "gate",
            "stable/2025.1",
            enqueue,
            jobs,
        )
        item.leave_s = triple[0] + triple[1] + 30
        items.append(item)
    items.append(_skip_cancel_retry_item())
    items.append(_formula_item())
    items.extend(_unfinished_items(items))
    history = History(items)
    final = max(
        item.enqueue + timedelta(seconds=item.leave_s or 0) for item in items
    ) + timedelta(minutes=5)
    history.snapshot_times = event_times(items, final)
    track_sightings(history)
    return history


def _skip_cancel_retry_item() -> PlannedItem:
    retried = attempts((30, None, None), (400, 900, "SUCCESS"))
    retried[0].end_s = None
    jobs = [
        PlannedJob("tox-py311", [Attempt(None, result="SKIPPED", result_s=20)]),
        PlannedJob("tox-docs", [Attempt(None, result="CANCELED", result_s=25)]),
        PlannedJob("grenade", retried),
    ]
    enqueue = T0 + timedelta(hours=3)
    item = PlannedItem("3001,4", "openstack/nova", "gate", "master", enqueue, jobs)
    item.leave_s = 400 + 900 + 30
    return item


def _formula_item() -> PlannedItem:
    jobs = [
        PlannedJob(name, attempts((5 + index, 50 + index, "SUCCESS")))
        for index, name in enumerate(FORMULA_JOBS)
    ]
    enqueue = T0 + timedelta(hours=4)
    item = PlannedItem("4001,1", "openstack/nova", "check", "master", enqueue, jobs)
    item.leave_s = 200
    return item


def _unfinished_items(items: list[PlannedItem]) -> list[PlannedItem]:
    """A build still running and one still queued at the last snapshot."""
    last_leave = max(item.enqueue + timedelta(seconds=item.leave_s) for item in items)
    enqueue = last_leave - timedelta(minutes=2)
    running = PlannedJob("tempest-full", attempts((60, None, None)))
    queued = PlannedJob("tox-py311", [Attempt(None)])
    return [
        PlannedItem("5001,1", "openstack/nova", "check", "master", enqueue, [running]),
        PlannedItem(
            "5002,1", "openstack/neutron", "gate", "stable/2025.1", enqueue, [queued]
        ),
    ]


def record(url: str, history: History) -> None:
    """Store the status at every planned moment, as the recorder would."""
    engine = make_engine(url, writer=True)
    sessions = make_sessionmaker(engine)
    for moment in history.snapshot_times:
        with session_scope(sessions) as session:
            source = get_or_create_source(session, SOURCE, ZUUL_URL)
            store_body(session, source, status_body(history.items, moment), moment)
    engine.dispose()


def make_client(url: str):
    settings = Settings(
        database_url=url, sources=(SourceSettings(name=SOURCE, url=ZUUL_URL),)
    )
    return create_app(settings).test_client()


@pytest.fixture
def history() -> History:
    return plan_history()


@pytest.fixture
def recorded(database_url: str, history: History):
    record(database_url, history)
    return database_url


@pytest.fixture
def client(recorded: str):
    return make_client(recorded)


# --- independent expectations -------------------------------------------------


def is_failure(result: str | None) -> bool:
    return result is not None and result != "SUCCESS" and result not in NEUTRAL


def expected_percentiles(durations: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(durations, n=100, method="inclusive")
    return cuts[49], cuts[89], cuts[94]


def approx(value: float) -> object:
    return pytest.approx(value, rel=1e-9, abs=1e-6)


# --- /jobs ----------------------------------------------------------------------


# Every build of the history, asked for in ways that SQLite answers along
# different paths: the whole range; a range with a start (the job index);
# the same with a filter outside that index (the time index).
EVERY_BUILD = [
    {"range": "all"},
    {"from": "2000-01-01"},
    {"from": "2000-01-01", "source": SOURCE},
]


@pytest.mark.parametrize("args", EVERY_BUILD, ids=lambda args: "&".join(args))
def test_job_statistics_equal_the_ones_computed_from_the_planned_builds(
    recorded, history, args
):
    client = make_client(recorded)
    response = client.get("/jobs", query_string=args)
    assert response.status_code == 200

    with make_sessionmaker(make_engine(recorded))() as session:
        filters = export.parse_filters(args)
        stats = {entry.job: entry for entry in job_queries.job_stats(session, filters)}
    for name in ("tempest-full", "tox-py311", "grenade", *FORMULA_JOBS):
        builds = history.of_job(name)
        durations = sorted(b.duration_s for b in builds if b.duration_s is not None)
        results = [b.attempt.result for b in builds]
        finished = [r for r in results if r is not None]
        entry = stats[name]
        assert entry.runs == len(builds), name
        assert entry.finished == len(finished), name
        assert entry.succeeded == finished.count("SUCCESS"), name
        assert entry.failed == sum(map(is_failure, finished)), name
        assert entry.timed == len(durations), name
        if len(durations) >= 2:
            assert (entry.p50_s, entry.p90_s, entry.p95_s) == tuple(
                map(approx, expected_percentiles(durations))
            ), name
        elif durations:
            assert entry.p50_s == entry.p95_s == durations[0], name
        waits = [b.wait_s for b in builds if b.wait_s is not None]
        assert entry.median_wait_s == pytest.approx(statistics.median(waits), abs=2e-3)
        last = max(b.end or b.last_seen for b in builds)
        assert entry.last_run == last, name


def test_percentiles_of_tempest_are_the_hand_computed_values(recorded):
    # Ten durations, sorted: 600 640 700 720 800 810 900 1000 1500 2400.
    # p50 sits at 4.5 -> (800 + 810) / 2; p90 at 8.1 -> 1500 + 0.1 * 900;
    # p95 at 8.55 -> 1500 + 0.55 * 900.
    html = make_client(recorded).get("/jobs?range=all").get_data(as_text=True)
    row = re.search(
        r"<tr>\s*<th scope=\"row\"><a [^>]*>tempest-full</a>.*?</tr>", html, re.S
    )
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0), re.S)
    assert cells[:6] == [
        "11",  # ten finished runs and one still running
        "70.0 %",
        "30.0 %",
        "13 min 25 s",
        "26 min 30 s",
        "33 min 15 s",
    ]


def test_a_skipped_and_a_canceled_build_count_as_runs_but_have_no_duration(
    recorded, history
):
    client = make_client(recorded)
    builds = client.get("/api/builds?range=all&job=tox-py311&limit=1000").get_json()
    results = [build["result"] for build in builds["builds"]]
    assert results.count("SKIPPED") == 1
    skipped = next(b for b in builds["builds"] if b["result"] == "SKIPPED")
    assert skipped["duration_s"] is None
    assert skipped["start_time"] is None
    planned = history.of_job("tox-py311")
    assert len(builds["builds"]) == len(planned)

    docs = client.get("/api/builds?range=all&job=tox-docs").get_json()["builds"]
    assert [(b["result"], b["duration_s"]) for b in docs] == [("CANCELED", None)]


def test_a_retried_build_is_its_own_row_and_the_replaced_one_has_no_result(client):
    builds = client.get("/api/builds?range=all&job=grenade").get_json()["builds"]

    assert len(builds) == 2
    newest, replaced = builds
    assert newest["result"] == "SUCCESS"
    assert newest["duration_s"] == 900.0
    assert replaced["result"] is None
    assert replaced["state"] == "unknown"
    assert replaced["duration_s"] is None
    assert newest["build_uuid"] != replaced["build_uuid"]


def test_builds_running_or_queued_at_the_last_snapshot_are_marked_so(client):
    running = client.get("/api/builds?range=all&job=tempest-full&limit=1").get_json()
    assert running["builds"][0]["state"] == "running"
    assert running["builds"][0]["duration_s"] is None
    assert running["builds"][0]["end_time"] is None
    queued = client.get("/api/builds?range=all&job=tox-py311&limit=1").get_json()
    assert queued["builds"][0]["state"] == "waiting"

    html = client.get("/jobs/tempest-full?range=all").get_data(as_text=True)
    first_run = html.split("<tbody>")[-1].split("</tr>")[0]
    assert 'class="run"' in first_run
    assert ">running<" in first_run


def test_the_failure_rate_counts_only_builds_that_finished_with_a_result(client):
    html = client.get("/jobs/tempest-full?range=all").get_data(as_text=True)

    # Ten finished, three failed (FAILURE, POST_FAILURE, TIMED_OUT); the running
    # build is a run but not finished.
    assert re.search(r"<dt>runs</dt><dd>11</dd>", html)
    assert re.search(r"<dt>failure</dt><dd class=\"bad\">30.0 %</dd>", html)
    assert (
        "10 runs finished with a result; "
        "durations are from the 10 runs that started and ended." in html
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("range=all&pipeline=gate", {"tox-py311", "tox-docs", "grenade"}),
        ("range=all&project=openstack/neutron", {"tox-py311"}),
        ("range=all&branch=stable/2025.1", {"tox-py311"}),
        ("range=all&result=timed_out", {"tempest-full"}),
        ("range=day", {"tempest-full", "tox-py311"}),
    ],
)
def test_filters_select_the_same_builds_on_the_page_the_api_and_the_export(
    recorded, history, query, expected
):
    client = make_client(recorded)

    html = client.get(f"/jobs?{query}").get_data(as_text=True)
    api = client.get(f"/api/builds?{query}&limit=1000").get_json()["builds"]
    csv_text = client.get(f"/export/builds.csv?{query}").get_data(as_text=True)

    on_page = set(re.findall(r'<th scope="row"><a [^>]*>([^<]*)</a>', html))
    assert on_page == expected
    assert {build["job"] for build in api} == expected
    assert len(csv_text.splitlines()) == len(api) + 1


def test_the_last_day_ends_at_the_newest_snapshot_not_at_the_readers_clock(
    recorded, history
):
    since = history.last_snapshot - timedelta(days=1)
    expected = [
        b
        for b in history.builds
        if (b.end or b.last_seen) >= since and b.first_seen is not None
    ]

    api = make_client(recorded).get("/api/builds?range=day&limit=1000").get_json()

    assert len(api["builds"]) == len(expected)


def test_a_from_to_range_includes_the_whole_last_day_and_wins_over_a_range(
    recorded, history
):
    day = T0.date().isoformat()
    first_day = [
        b for b in history.builds if (b.end or b.last_seen).date() == T0.date()
    ]
    client = make_client(recorded)

    api = client.get(f"/api/builds?from={day}&to={day}&limit=1000")
    # The pages' filter form sends its range menu along with from and to.
    page = client.get(f"/jobs?range=week&from={day}&to={day}").get_data(as_text=True)

    assert len(api.get_json()["builds"]) == len(first_day)
    runs = re.findall(r'</a></th>\s*<td class="num">(\d+)</td>', page)
    assert sum(map(int, runs)) == len(first_day)
    assert "A from or to replaces the range menu's choice." in page


@pytest.mark.parametrize("route", ["/api/builds", "/export/builds.csv"])
@pytest.mark.parametrize("bound", ["from", "to"])
def test_the_api_and_the_export_refuse_a_range_with_a_from_or_to(
    recorded, route, bound
):
    response = make_client(recorded).get(f"{route}?range=all&{bound}=2026-05-04")

    assert response.status_code == 400
    words = "give either &#39;range&#39; or &#39;from&#39;/&#39;to&#39;, not both"
    if route == "/api/builds":
        words = words.replace("&#39;", "'")
        assert words in response.get_json()["error"]["message"]
    else:
        assert words in response.get_data(as_text=True)


def test_the_jobs_table_sorts_by_each_column_and_puts_unknown_values_last(client):
    html = client.get("/jobs?range=all&sort=p95&order=desc").get_data(as_text=True)
    names = re.findall(r'<th scope="row"><a [^>]*>([^<]*)</a>', html)
    assert names[:2] == ["tempest-full", "grenade"]
    assert names[-1] == "tox-docs"  # canceled before it started: no duration
    ascending = client.get("/jobs?range=all&sort=runs&order=asc").get_data(as_text=True)
    runs = [
        int(n) for n in re.findall(r'</th>\s*<td class="num">(\d+)</td>', ascending)
    ]
    assert runs == sorted(runs)


def test_the_job_page_hands_the_chart_every_timed_run_and_the_tables_without_js(
    client, history
):
    html = client.get("/jobs/tempest-full?range=all").get_data(as_text=True)

    data = json.loads(
        re.search(
            r'<script type="application/json" id="job-chart-data">(.*?)</script>',
            html,
            re.S,
        ).group(1)
    )
    planned = [b for b in history.of_job("tempest-full") if b.duration_s is not None]
    points = data["points"]
    assert len(points["success"]) == sum(b.attempt.result == "SUCCESS" for b in planned)
    assert len(points["failure"]) == sum(is_failure(b.attempt.result) for b in planned)
    assert sorted(y for series in points.values() for _, y in series) == sorted(
        b.duration_s for b in planned
    )
    assert data["sampled"] is False
    assert "<script>" not in html  # nothing inline: the CSP forbids it
    log_links = re.findall(r'href="(https://logs\.example\.org/[^"]+)"', html)
    assert len(log_links) == len(planned) + 1  # and the running build's console
    assert "/snapshots/" in html


def test_a_job_with_more_runs_than_chart_points_is_downsampled_keeping_the_extremes(
    database_url,
):
    durations = [100.0 + (index * 7919) % 3000 for index in range(6_000)]
    durations[4_321] = 9_999.0
    durations[777] = 1.0
    engine = make_engine(database_url, writer=True)
    with session_scope(make_sessionmaker(engine)) as session:
        source = get_or_create_source(session, SOURCE, ZUUL_URL)
        store_body(session, source, b'{"pipelines": []}', T0 + timedelta(days=30))
    engine.dispose()
    insert_builds(database_url, "busy-job", durations)

    client = make_client(database_url)
    html = client.get("/jobs/busy-job?range=all").get_data(as_text=True)
    data = json.loads(
        re.search(r'id="job-chart-data">(.*?)</script>', html, re.S).group(1)
    )

    drawn = [y for series in data["points"].values() for _, y in series]
    assert data["sampled"] is True
    assert len(drawn) <= job_queries.MAX_CHART_POINTS
    assert {1.0, 9_999.0} <= set(drawn)
    assert "6000 runs: for each outcome" in html


def insert_builds(url: str, job: str, durations: list[float]) -> None:
    """Finished builds of ``job``, one a minute from T0, straight into the table."""
    engine = make_engine(url, writer=True)
    sessions = make_sessionmaker(engine)
    with session_scope(sessions) as session:
        source = get_or_create_source(session, SOURCE, ZUUL_URL)
        rows = []
        for index, duration_s in enumerate(durations):
            end = T0 + timedelta(minutes=index)
            rows.append(
                {
                    "source_id": source.id,
                    "key": f"u:{index}",
                    "pipeline": "check",
                    "job": job,
                    "voting": True,
                    "state": "finished",
                    "result": "FAILURE" if index % 10 == 0 else "SUCCESS",
                    "enqueue_time": end - timedelta(seconds=duration_s + 60),
                    "start_time": end - timedelta(seconds=duration_s),
                    "end_time": end,
                    "duration_s": duration_s,
                    "uuid": f"{index:032x}",
                    "first_snapshot_id": 1,
                    "last_snapshot_id": 1,
                    "first_seen": end - timedelta(seconds=duration_s + 60),
                    "last_seen": end,
                }
            )
        session.execute(insert(Build), rows)
    engine.dispose()


# --- /api/builds ----------------------------------------------------------------


def test_the_api_pages_through_every_build_newest_first_with_a_next_link(
    client, history
):
    seen, url = [], "/api/builds?range=all&limit=7"
    while url:
        page = client.get(url).get_json()
        seen.extend(page["builds"])
        url = page["next"]

    assert len(seen) == len(history.builds)
    times = [b["end_time"] or b["last_seen"] for b in seen]
    assert times == sorted(times, reverse=True)
    assert len({(b["build_uuid"], b["job"], b["change"]) for b in seen}) == len(seen)


def test_the_run_table_pages_to_older_runs_until_none_is_left(
    client, history, monkeypatch
):
    monkeypatch.setattr("webui.jobs.RUNS_PER_PAGE", 4)
    url, changes = "/jobs/tempest-full?range=all", []
    while url:
        html = client.get(url).get_data(as_text=True)
        table = html.split('<section class="job-runs">')[1]
        changes += re.findall(r"<td>(\d+,1)</td>", table)
        older = re.search(r'<a rel="next" href="([^"]+)">older', table)
        url = older.group(1).replace("&amp;", "&") if older else None

    planned = [b.item.change for b in history.of_job("tempest-full")]
    assert sorted(changes) == sorted(planned)
    assert len(changes) == len(set(changes))


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("range=year", 400, "'range' must be one of day, week, month, all"),
        ("from=yesterday", 400, "'from' must be an ISO 8601 date"),
        ("to=2026-13-01", 400, "'to' must be an ISO 8601 date"),
        ("from=2026-05-02&to=2026-05-01", 400, "'from' must be before 'to'"),
        ("limit=0", 400, "'limit' must be an integer from 1 to 1000"),
        ("before=yesterday", 400, "'before' must be the cursor a previous page gave"),
        ("source=nowhere", 404, "no source named 'nowhere'"),
    ],
)
def test_bad_filters_get_a_json_error_that_says_what_is_wrong(
    client, query, status, words
):
    response = client.get(f"/api/builds?{query}")

    assert response.status_code == status
    assert words in response.get_json()["error"]["message"]
    if not query.startswith(("limit", "before")):  # the list has neither
        page = client.get(f"/jobs?{query}")
        assert page.status_code == status
        assert page.mimetype == "text/html"


def test_an_unknown_job_is_a_not_found_page(client):
    response = client.get("/jobs/no-such-job")

    assert response.status_code == 404
    assert "no run of job" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("finished", "timed", "expected"),
    [
        (
            0,
            0,
            "No run finished with a result; none started and ended, so there "
            "are no durations.",
        ),
        (
            1,
            1,
            "1 run finished with a result; durations are from the 1 run that "
            "started and ended.",
        ),
        (
            3,
            0,
            "3 runs finished with a result; none started and ended, so there "
            "are no durations.",
        ),
    ],
)
def test_the_runs_note_reads_right_for_none_one_and_many(finished, timed, expected):
    from webui.jobs import runs_note

    assert runs_note(finished, timed) == expected


# --- periods ----------------------------------------------------------------------


def period_start(name: str, moment: datetime) -> datetime:
    """The start of the period holding ``moment``, by the calendar (UTC)."""
    if name == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if name == "day":
        return day
    if name == "week":
        return day - timedelta(days=day.weekday())
    if name == "month":
        return day.replace(day=1)
    if name == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    years = {"year": 1, "decade": 10, "century": 100}[name]
    return datetime(max(1, moment.year // years * years), 1, 1, tzinfo=UTC)


def expected_rows(name: str, runs: list[tuple[datetime, str | None]]) -> list:
    """Per period with runs, newest first: start, runs, finished, failed, rate."""
    periods: dict[datetime, list[str | None]] = {}
    for moment, result in runs:
        periods.setdefault(period_start(name, moment), []).append(result)
    rows = []
    for start in sorted(periods, reverse=True):
        results = periods[start]
        finished = [result for result in results if result is not None]
        failed = sum(map(is_failure, finished))
        rate = f"{failed / len(finished) * 100:.1f} %" if finished else "–"
        rows.append([_iso(start), str(len(results)), str(len(finished))])
        rows[-1] += [str(failed), rate]
    return rows


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def period_table(html: str) -> tuple[str, list[list[str]]]:
    """The per-period table: its period name and, per row, start and counts."""
    section = html.split('<section class="job-periods">')[1].split("</section>")[0]
    name = re.search(r"<h2>Per (\w+)", section).group(1)
    rows = []
    for row in re.findall(r"<tr><th scope=\"row\">.*?</tr>", section, re.S):
        start = re.search(r'<time datetime="([^"]+)"', row).group(1)
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        rows.append([start, *cells[:4]])
    return name, rows


def chart_data(html: str) -> dict:
    block = re.search(r'id="job-chart-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(block)


@pytest.mark.parametrize(
    "query", ["range=all", "range=&from=0001-01-02", "range=&from=1900-01-01"]
)
def test_the_period_table_lists_the_hours_with_runs_and_their_finished_runs(
    recorded, history, query
):
    # The runs span about a day and a half: hours, whatever the range asked.
    html = make_client(recorded).get(f"/jobs/tempest-full?{query}")
    assert html.status_code == 200
    runs = [
        (b.end or b.last_seen, b.attempt.result) for b in history.of_job("tempest-full")
    ]

    name, rows = period_table(html.get_data(as_text=True))

    assert name == "hour"
    assert rows == expected_rows("hour", runs)
    # The rate can be checked by eye: failed of the finished shown beside it.
    assert ["2026-05-05T16:00:00Z", "2", "1", "0", "0.0 %"] in rows


def insert_runs(
    url: str,
    job: str,
    runs: list[tuple[datetime, str | None]],
    snapshot: bool = True,
) -> None:
    """Builds of ``job`` at the given times, straight into the table.

    A SUCCESS or FAILURE ended then, after ten minutes; a SKIPPED one has a
    result but never started; one without a result was last seen then. The
    rows name snapshot 1: stored here unless ``snapshot`` is False.
    """
    engine = make_engine(url, writer=True)
    with session_scope(make_sessionmaker(engine)) as session:
        source = get_or_create_source(session, SOURCE, ZUUL_URL)
        if snapshot:
            body = b'{"pipelines": []}'
            store_body(session, source, body, T0 + timedelta(days=30))
        rows = []
        for index, (moment, result) in enumerate(runs):
            ran = result in ("SUCCESS", "FAILURE")
            rows.append(
                {
                    "source_id": source.id,
                    "key": f"{job}:{index}",
                    "pipeline": "check",
                    "job": job,
                    "voting": True,
                    "state": "finished" if result else "running",
                    "result": result,
                    "start_time": moment - timedelta(minutes=10) if ran else None,
                    "end_time": moment if ran else None,
                    "duration_s": 600.0 if ran else None,
                    "first_snapshot_id": 1,
                    "last_snapshot_id": 1,
                    "first_seen": moment - timedelta(minutes=10),
                    "last_seen": moment,
                }
            )
        session.execute(insert(Build), rows)
    engine.dispose()


RESULTS = ("SUCCESS", "FAILURE", "SKIPPED", None, "SUCCESS")
FIRST_RUN = datetime(2000, 3, 7, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("span", "period"),
    [
        (timedelta(days=1), "hour"),
        (timedelta(days=30), "day"),
        (timedelta(days=365), "week"),
        (timedelta(days=5 * 365), "month"),
        (timedelta(days=20 * 365), "quarter"),
        (timedelta(days=100 * 365), "year"),
        (timedelta(days=1000 * 365), "decade"),
        (timedelta(days=5000 * 365), "century"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_the_period_follows_the_span_of_the_runs_and_their_number_stays_small(
    database_url, span, period
):
    # 400 runs spread evenly: (nearly) every period has some.
    runs = [
        (FIRST_RUN + span * index / 399, RESULTS[index % len(RESULTS)])
        for index in range(400)
    ]
    insert_runs(database_url, "spread", runs)

    html = make_client(database_url).get("/jobs/spread?range=all").get_data(True)

    name, rows = period_table(html)
    assert name == period
    assert rows == expected_rows(period, runs)
    assert len(rows) <= 160
    data = chart_data(html)
    assert data["period"] == period
    assert [_iso_ms(entry["t"]) for entry in data["periods"]] == sorted(
        row[0] for row in rows
    )


def _iso_ms(epoch_ms: float) -> str:
    return _iso(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms))


RARE_RUNS = [
    (datetime(2015, 4, 2, 10, tzinfo=UTC) + timedelta(days=day), result)
    for day, result in ((0, "SUCCESS"), (1, "FAILURE"), (40, None), (200, "SKIPPED"))
] + [(T0 + timedelta(hours=hours), "FAILURE") for hours in (1, 2, 3)]


def test_runs_years_apart_list_only_their_periods_in_the_table_and_the_chart(
    database_url,
):
    # The finding: data in 2015 and 2026 made 610 rows, nearly all empty.
    runs = RARE_RUNS
    insert_runs(database_url, "rare", runs)

    html = make_client(database_url).get("/jobs/rare?range=all").get_data(True)

    name, rows = period_table(html)
    assert name == "quarter"
    assert rows == expected_rows("quarter", runs)
    assert [row[0] for row in rows] == [
        "2026-04-01T00:00:00Z",
        "2015-10-01T00:00:00Z",
        "2015-04-01T00:00:00Z",
    ]
    # The chart gets the same periods, each with its end, to draw on a time axis.
    periods = chart_data(html)["periods"]
    assert [(p["runs"], p["finished"], p["failed"]) for p in periods] == [
        (3, 2, 1),
        (1, 1, 0),
        (3, 3, 3),
    ]
    ends = [_iso_ms(entry["end"]) for entry in periods]
    assert ends == [
        "2015-07-01T00:00:00Z",
        "2016-01-01T00:00:00Z",
        "2026-07-01T00:00:00Z",
    ]
    for moment, _ in runs:
        assert any(p["t"] <= moment.timestamp() * 1000 < p["end"] for p in periods)


# --- times without an offset: the reader's zone ---------------------------------------

KOLKATA = "Asia/Kolkata"
# 14:00 in Kolkata is 08:30 UTC: the two readings keep different builds.
LOCAL_FROM = "2026-05-04T14:00"
FROM_IN_KOLKATA = datetime(2026, 5, 4, 8, 30, tzinfo=UTC)


def builds_in(history: History, since: datetime, until: datetime | None = None):
    return [
        b
        for b in history.builds
        if b.first_seen is not None
        and (b.end or b.last_seen) >= since
        and (until is None or (b.end or b.last_seen) < until)
    ]


def counted(client, route: str, args: dict) -> int:
    """How many builds a route shows for the filters (runs on the pages)."""
    response = client.get(route, query_string=args | {"limit": 1000})
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    text = response.get_data(as_text=True)
    if route == "/api/builds":
        return len(response.get_json()["builds"])
    if route == "/export/builds.csv":
        return len(list(csv.reader(io.StringIO(text, newline="")))) - 1
    if route == "/jobs":
        return sum(
            map(int, re.findall(r'</a></th>\s*<td class="num">(\d+)</td>', text))
        )
    return int(re.search(r"<dt>runs</dt><dd>(\d+)</dd>", text).group(1))


ZONE_ROUTES = ["/jobs", "/jobs/tempest-full", "/api/builds", "/export/builds.csv"]


def of_route(route: str, builds: list[Expected]) -> int:
    if route == "/jobs/tempest-full":
        builds = [b for b in builds if b.job.name == "tempest-full"]
    return len(builds)


@pytest.mark.parametrize("route", ZONE_ROUTES)
def test_a_from_or_to_without_an_offset_is_read_in_the_readers_zone(
    recorded, history, route
):
    local = builds_in(history, FROM_IN_KOLKATA)
    as_utc = builds_in(history, datetime.fromisoformat(LOCAL_FROM).replace(tzinfo=UTC))
    assert of_route(route, local) != of_route(route, as_utc)
    client = make_client(recorded)

    # The zone in the URL, then the one the URL left in the cookie.
    assert counted(client, route, {"from": LOCAL_FROM, "tz": KOLKATA}) == of_route(
        route, local
    )
    assert counted(client, route, {"from": LOCAL_FROM}) == of_route(route, local)
    # An explicit offset wins over the zone.
    utc_args = {"from": LOCAL_FROM + "Z", "tz": KOLKATA}
    assert counted(client, route, utc_args) == of_route(route, as_utc)
    # Without a zone, UTC as before.
    assert counted(make_client(recorded), route, {"from": LOCAL_FROM}) == of_route(
        route, as_utc
    )


def test_a_bare_date_as_to_ends_at_midnight_in_the_readers_zone(recorded, history):
    # The 4th of May ends at 18:30 UTC in Kolkata.
    until = datetime(2026, 5, 4, 18, 30, tzinfo=UTC)
    expected = builds_in(history, datetime(2026, 5, 3, 18, 30, tzinfo=UTC), until)
    args = {"from": "2026-05-04", "to": "2026-05-04", "tz": KOLKATA}

    assert counted(make_client(recorded), "/api/builds", args) == len(expected)


def test_the_page_says_how_it_reads_times_and_its_links_carry_the_zone(recorded):
    client = make_client(recorded)
    html = client.get("/jobs", query_string={"from": LOCAL_FROM, "tz": KOLKATA})
    text = html.get_data(as_text=True)

    assert "Builds from <time" in text
    assert ">2026-05-04 14:00 IST</time>" in text
    assert "without an offset (2026-05-31 or 2026-05-31T12:00) is read in " in text
    assert "is read in Asia/Kolkata too" in text
    # The export and API links mean the same without the reader's cookie.
    export = re.search(r'href="(/export/builds\.csv\?[^"]+)"', text).group(1)
    assert "tz=Asia/Kolkata" in export.replace("%2F", "/")
    week = client.get("/jobs?range=week").get_data(as_text=True)
    assert "recorded snapshot. A from or to replaces the range menu's" in week


def test_the_api_next_link_keeps_the_zone_for_a_client_without_cookies(
    recorded, history
):
    expected = builds_in(history, FROM_IN_KOLKATA)
    seen = []
    url = f"/api/builds?from={LOCAL_FROM}&tz={KOLKATA}&limit=3"
    while url:
        page = make_client(recorded).get(url).get_json()  # a fresh client each time
        seen += page["builds"]
        url = page["next"]

    assert len(seen) == len(expected)


@pytest.mark.parametrize(
    ("args", "since", "until"),
    [
        # Berlin's day of the spring change is 23 hours long.
        ({"from": "2026-03-29", "to": "2026-03-29"}, (3, 28, 23), (3, 29, 22)),
        ({"from": "2026-10-25", "to": "2026-10-25"}, (10, 24, 22), (10, 25, 23)),
        (
            {"from": "2026-07-01T12:00", "to": "2026-07-01T13:00+00:00"},
            (7, 1, 10),
            (7, 1, 13),
        ),
    ],
)
def test_parse_filters_reads_times_in_the_given_zone(args, since, until):
    from zoneinfo import ZoneInfo

    filters = export.parse_filters(args, ZoneInfo("Europe/Berlin"))

    assert filters.since == datetime(2026, *since, tzinfo=UTC)
    assert filters.until == datetime(2026, *until, tzinfo=UTC)
    assert filters.zone == "Europe/Berlin"
    assert export.parse_filters(args).zone is None


# --- stored times at the ends of the calendar ----------------------------------------

ENDS_OF_THE_CALENDAR = {
    "old": datetime(1, 1, 1, tzinfo=UTC),
    "future": datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
}


def calendar_end_body() -> bytes:
    """A running build (placed when it was seen) and a finished one."""
    start_s = T0.timestamp()
    jobs = [
        {"name": "edge", "uuid": "c" * 32, "start_time": start_s},
        {
            "name": "edge-done",
            "uuid": "d" * 32,
            "result": "FAILURE",
            "start_time": start_s,
            "end_time": start_s + 60,
        },
    ]
    item = {"id": "1,1", "project": "p", "live": True, "jobs": jobs}
    queue = {"name": "q", "heads": [[item]]}
    return json.dumps(
        {"pipelines": [{"name": "check", "change_queues": [queue]}]}
    ).encode()


@pytest.fixture
def calendar_ends(database_url: str) -> str:
    engine = make_engine(database_url, writer=True)
    for name, moment in ENDS_OF_THE_CALENDAR.items():
        with session_scope(make_sessionmaker(engine)) as session:
            source = get_or_create_source(session, name, ZUUL_URL)
            store_body(session, source, calendar_end_body(), moment)
    engine.dispose()
    return database_url


@pytest.mark.parametrize("source", list(ENDS_OF_THE_CALENDAR))
@pytest.mark.parametrize(
    "zone", [None, "America/Los_Angeles", "Asia/Kolkata", "Pacific/Kiritimati"]
)
def test_snapshots_taken_at_the_ends_of_the_calendar_do_not_break_the_job_pages(
    calendar_ends, source, zone
):
    client = make_client(calendar_ends)
    for range_name in ("", "day", "week", "all"):
        args = {"source": source, "range": range_name} | ({"tz": zone} if zone else {})
        for route in ("/jobs", "/jobs/edge", "/api/builds", "/export/builds.csv"):
            response = client.get(route, query_string=args)
            assert response.status_code == 200, (route, args)
        runs = client.get("/api/builds", query_string=args).get_json()["builds"]
        # The running build is placed where it was seen, at the calendar's end.
        edge = next(run for run in runs if run["job"] == "edge")
        seen = ENDS_OF_THE_CALENDAR[source]
        assert edge["last_seen"] == f"{seen.year:04d}-{seen:%m-%dT%H:%M:%S.%f}Z"
        html = client.get("/jobs/edge", query_string=args).get_data(as_text=True)
        assert f'<time datetime="{_iso(seen)}">' in html


def test_the_last_week_of_a_snapshot_in_year_one_starts_with_the_calendar(
    calendar_ends,
):

    with make_sessionmaker(make_engine(calendar_ends))() as session:
        window = export.resolve_window(
            session, export.parse_filters({"source": "old", "range": "week"})
        )
        future = export.resolve_window(
            session, export.parse_filters({"source": "future", "range": "day"})
        )

    assert window == export.TimeWindow(datetime.min.replace(tzinfo=UTC), None)
    assert future.since == ENDS_OF_THE_CALENDAR["future"] - timedelta(days=1)


@pytest.mark.parametrize(
    "cursor", ["0001-01-01T00:00:00+14:00,5", "9999-12-31T23:59:59-14:00,5"]
)
def test_a_cursor_past_the_ends_of_the_calendar_is_a_400(client, cursor):
    for route in ("/api/builds", "/jobs/tempest-full"):
        response = client.get(route, query_string={"range": "all", "before": cursor})
        assert response.status_code == 400


@pytest.mark.parametrize(
    "cursor",
    ["2026-01-01T00:00:00Z,9223372036854775808", "2026-01-01T00:00:00Z,-1"]
    + ["2026-01-01T00:00:00Z,99999999999999999999"],
)
def test_a_cursor_id_no_database_can_hold_is_a_400(client, cursor):
    for route in ("/api/builds", "/jobs/tempest-full"):
        response = client.get(route, query_string={"range": "all", "before": cursor})
        assert response.status_code == 400, route


def test_the_last_day_of_the_calendar_as_to_means_no_end():
    filters = export.parse_filters({"to": "9999-12-31"})

    assert filters.until == datetime.max.replace(tzinfo=UTC)


def test_numbers_joined_by_sqlite_are_read_back_sorted_whatever_their_form():
    joined = "5400.0,12,0.25,1.0e+20,-3.5"

    assert job_queries._sorted_numbers(joined) == [-3.5, 0.25, 12.0, 5400.0, 1e20]
    assert job_queries._sorted_numbers("2.5,Inf,1") == [1.0, 2.5, float("inf")]
    assert job_queries._sorted_numbers(None) == []
