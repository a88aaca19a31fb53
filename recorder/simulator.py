"""Zuul status documents made from scratch, and any status made to evolve.

``generate_status`` invents a busy tenant at one moment, laid out as Zuul 3
(``v3``) or as Zuul 10 and later (``v10``) format it. ``StatusEvolver`` takes
any status document, generated or captured, and moves it forward in time as a
busy tenant would: builds start and finish, items arrive, merge or fail, and
the gate resets the items behind a failing one.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import orjson

log = logging.getLogger(__name__)

SHAPES = ("v3", "v10")
REVIEW_HOST = "review.example.org"
LOG_ROOT = "https://logs.example.org"
EXECUTOR = "ze01.example.org"
FINGER_PORT = 7900
FAILING_REASON = "at least one job failed"

_V3_VERSION = "3.19.1"
_V10_VERSION = "11.3.0"
_PROJECTS = (
    "nova",
    "neutron",
    "cinder",
    "glance",
    "keystone",
    "swift",
    "horizon",
    "placement",
    "oslo.config",
    "devstack",
)
# Projects that share the gate's "integrated" change queue.
_INTEGRATED = _PROJECTS[:7]
_OWNERS = (
    ("Ada Ito", "aito"),
    ("Bruno Keller", "bkeller"),
    ("Chiara Russo", "crusso"),
    ("Dmitri Volkov", "dvolkov"),
    ("Esther Mensah", "emensah"),
    ("Farid Haddad", "fhaddad"),
)
_DESCRIPTIONS = {
    "check": "Runs tests on every new patchset and votes Verified +1 or -1.",
    "gate": "Tests approved changes in order, each on top of those ahead of "
    "it, and merges the ones that pass.",
    "post": "Runs jobs after a change has merged.",
    "periodic": "Runs jobs on a timer.",
    "experimental": "Runs jobs that do not vote yet, on request.",
    "release": "Publishes artifacts when a release is tagged.",
    "tag": "Runs jobs when any tag is pushed.",
}

# How fast the evolving tenant works: mean seconds before a waiting job
# starts, time to refill missing items, and how often an extra item arrives.
_START_DELAY_S = 90.0
_REFILL_S = 300.0
_EXTRA_ARRIVAL_S = 1800.0
_FAIL_CHANCE = {False: 0.05, True: 0.015}  # by "is the pipeline dependent"
_NON_VOTING_FAIL_CHANCE = 0.25
_BUILD_KEYS = (
    "result",
    "uuid",
    "url",
    "finger_url",
    "report_url",
    "elapsed_time",
    "remaining_time",
    "start_time",
    "end_time",
    "launch_time",
    "execute_time",
    "estimated_time",
    "number",
    "waiting_status",
    "pre_fail",
)
_CHANGE_REF = re.compile(r"refs/changes/\d+/\d+/\d+")


class _JobSpec(NamedTuple):
    """A job of the generated tenant, its usual duration and its needs."""

    name: str
    estimated_s: float
    voting: bool = True
    dependencies: tuple[str, ...] = ()


_CHECK_JOBS = (
    _JobSpec("tox-pep8", 214.0),
    _JobSpec("tox-py311", 846.0),
    _JobSpec("tox-py312", 903.0),
    _JobSpec("tox-docs", 388.0),
    _JobSpec("tox-py313", 931.0, voting=False),
    _JobSpec("tempest-full", 3912.0, dependencies=("tox-pep8",)),
    _JobSpec("grenade", 3305.0, dependencies=("tox-pep8",)),
    _JobSpec("tempest-ipv6-only", 3640.0, voting=False),
)
_GATE_JOBS = tuple(spec for spec in _CHECK_JOBS if spec.voting)
_POST_JOBS = (_JobSpec("publish-docs", 305.0), _JobSpec("upload-tarball", 158.0))
_PERIODIC_JOBS = (
    _JobSpec("periodic-tempest-full", 4480.0),
    _JobSpec("periodic-requirements-check", 512.0, voting=False),
)


# Helpers shared by the generator and the evolver.


def _put(mapping: dict, key: str, value: object) -> None:
    """Set ``key`` only where the document already has it, to keep its era."""
    if key in mapping:
        mapping[key] = value


def _is_null(value: object) -> bool:
    """Whether a value means null, including the string some captures use."""
    return value is None or value == "null"


def _is_number(value: object) -> bool:
    """Whether a value is an int or a float (and not a bool)."""
    return type(value) in (int, float)


def _is_live(item: dict) -> bool:
    """Whether an item is a live change rather than a dependency ahead of one."""
    return item.get("live", True) not in (False, "false")


def _is_voting(job: dict) -> bool:
    """Whether a job votes."""
    return job.get("voting", True) not in (False, "false")


def _is_finished(job: dict) -> bool:
    """Whether a job has a result."""
    return not _is_null(job.get("result"))


def _has_started(job: dict) -> bool:
    """Whether a job has a build that started."""
    return not (_is_null(job.get("elapsed_time")) and _is_null(job.get("start_time")))


def _is_done(item: dict) -> bool:
    """Whether every job of an item has a result."""
    return all(_is_finished(job) for job in item.get("jobs") or [])


def _has_failed(item: dict) -> bool:
    """Whether a voting job of an item finished with a result that fails it."""
    return any(
        _is_voting(job)
        and _is_finished(job)
        and job.get("result") not in ("SUCCESS", "SKIPPED")
        for job in item.get("jobs") or []
    )


def _item_remaining_ms(jobs: list[dict]) -> int | None:
    """Zuul's item remaining time: the longest job's, or null until all start."""
    longest = 0
    for job in jobs:
        if _is_finished(job):
            continue
        if not _has_started(job):
            return None
        remaining = job.get("remaining_time")
        if type(remaining) is int and remaining > longest:
            longest = remaining
    return longest


def _iter_chains(status: dict) -> Iterator[tuple[dict, dict, list[dict]]]:
    """Yield every (pipeline, change queue, chain of items) of a document."""
    for pipeline in status.get("pipelines") or []:
        for queue in pipeline.get("change_queues") or []:
            for chain in queue.get("heads") or []:
                yield pipeline, queue, chain


def _link(chain: list[dict]) -> list[dict]:
    """Point each item of a chain at its neighbours, head first."""
    for index, item in enumerate(chain):
        ahead = chain[index - 1] if index else None
        behind = chain[index + 1] if index + 1 < len(chain) else None
        _put(item, "item_ahead", ahead.get("id") if ahead else None)
        _put(item, "items_behind", [behind.get("id")] if behind else [])
    return chain


def _relink_failed(chain: list[dict], index: int) -> list[dict]:
    """Move the items behind a failing item onto the item ahead of it.

    Zuul leaves the failing item in place as a dead end, so the item ahead of
    it lists both the failing item and the next one in ``items_behind``.
    Returns the items behind that must be tested again.
    """
    failed = chain[index]
    failed_id = failed.get("id")
    ahead_id = failed.get("item_ahead")
    ahead = None
    if not _is_null(ahead_id):
        ahead = next((x for x in chain[:index] if x.get("id") == ahead_id), None)
    for item in chain[index + 1 :]:
        if _is_null(failed_id) or item.get("item_ahead") != failed_id:
            continue
        _put(item, "item_ahead", ahead.get("id") if ahead else None)
        if ahead is not None and isinstance(ahead.get("items_behind"), list):
            ahead["items_behind"] = [*ahead["items_behind"], item.get("id")]
    _put(failed, "items_behind", [])
    return [item for item in chain[index + 1 :] if not _has_failed(item)]


def _split_at_heads(items: list[dict]) -> list[list[dict]]:
    """Cut a queue's items, in queue order, into chains that start at a head."""
    chains: list[list[dict]] = []
    for item in items:
        if not chains or ("item_ahead" in item and _is_null(item["item_ahead"])):
            chains.append([])
        chains[-1].append(item)
    return chains


def _log_url(root: str, change: dict, pipeline: str, name: str, uuid: str) -> str:
    """Where the logs of one build live, laid out as OpenStack's log server."""
    change_id = change.get("id")
    number, comma, patchset = str(change_id).partition(",")
    if comma and number.isdigit():
        path = f"{int(number) % 100:02d}/{number}/{patchset}/{pipeline}"
    else:
        path = f"{pipeline}/{change.get('project_canonical') or change.get('project')}"
    return f"{root}/{path}/{name}/{uuid[:7]}/"


def _change_of(item: dict) -> dict:
    """The mapping that holds an item's change: its first ref since Zuul 10."""
    refs = item.get("refs")
    if isinstance(refs, list) and refs and isinstance(refs[0], dict):
        return refs[0]
    return item


def _epoch_s(moment: datetime) -> float:
    """Seconds since the epoch of a datetime, taking a naive one as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# The generator.


def generate_status(
    seed: int = 0, now: datetime | None = None, shape: str = "v3", tenant: str = "demo"
) -> dict:
    """Return a fresh, realistic status document of a busy invented tenant."""
    if shape not in SHAPES:
        raise ValueError(f"unknown status shape {shape!r}; choose one of {SHAPES}")
    factory = _Factory(random.Random(seed), _epoch_s(now or datetime.now(UTC)), tenant)
    status = {
        "zuul_version": _V3_VERSION,
        "trigger_event_queue": {"length": factory.rng.choice((0, 0, 1, 3))},
        "result_event_queue": {"length": 0},
        "management_event_queue": {"length": 0},
        "last_reconfigured": factory.ms_ago(factory.rng.uniform(3600, 86400)),
        "pipelines": [
            factory.check_pipeline(),
            factory.gate_pipeline(),
            factory.post_pipeline(),
            factory.periodic_pipeline(),
            _pipeline("experimental", []),
            _pipeline("release", []),
            _pipeline("tag", []),
        ],
    }
    if shape == "v10":
        return _as_v10(status, factory)
    return status


def _pipeline(name: str, queues: list[dict]) -> dict:
    """A v3 pipeline entry."""
    return {"name": name, "description": _DESCRIPTIONS[name], "change_queues": queues}


def _queue(name: str, window: int, heads: list[list[dict]]) -> dict:
    """A v3 change queue entry."""
    return {"name": name, "window": window, "heads": heads}


def _failing_reasons(jobs: list[dict]) -> list[str]:
    """The failing reasons Zuul gives an item with these jobs."""
    return [FAILING_REASON] if _has_failed({"jobs": jobs}) else []


class _Factory:
    """Builds the parts of one generated status document at one moment."""

    def __init__(self, rng: random.Random, now_s: float, tenant: str):
        self.rng = rng
        self.now_s = now_s
        self.tenant = tenant
        self.next_change = rng.randint(900_000, 940_000)
        self.next_node_request = rng.randint(1_000_000, 9_000_000)

    def uuid(self) -> str:
        """A new uuid as Zuul writes it: 32 hex digits."""
        return f"{self.rng.getrandbits(128):032x}"

    def ms_ago(self, seconds: float) -> int:
        """Epoch milliseconds of ``seconds`` before now."""
        return int((self.now_s - seconds) * 1000)

    def project(self, choices: tuple[str, ...] = _PROJECTS) -> str:
        """A project of the tenant, such as ``demo/nova``."""
        return f"{self.tenant}/{self.rng.choice(choices)}"

    def change(self, project: str) -> dict:
        """The fields of a new Gerrit change to ``project``."""
        number = self.next_change
        self.next_change += self.rng.randint(1, 60)
        patchset = self.rng.randint(1, 12)
        name, username = self.rng.choice(_OWNERS)
        return {
            "url": f"https://{REVIEW_HOST}/{number}",
            "ref": f"refs/changes/{number % 100:02d}/{number}/{patchset}",
            "project": project,
            "project_canonical": f"{REVIEW_HOST}/{project}",
            "owner": {
                "name": name,
                "username": username,
                "email": f"{username}@example.org",
            },
            "id": f"{number},{patchset}",
        }

    def branch_update(self, project: str, periodic: bool = False) -> dict:
        """The fields of a branch ref: a merged commit, or a timer's branch tip."""
        sha = None if periodic else f"{self.rng.getrandbits(160):040x}"
        target = "refs/heads/master" if periodic else sha
        return {
            "url": f"https://{REVIEW_HOST}/plugins/gitiles/{project}/+/{target}",
            "ref": "refs/heads/master",
            "project": project,
            "project_canonical": f"{REVIEW_HOST}/{project}",
            "owner": None,
            "id": sha,
        }

    def item(self, change: dict, age_s: float, jobs: list[dict]) -> dict:
        """A v3 queue item; an item without jobs is a non-live dependency."""
        live = bool(jobs)
        return {
            "active": True,
            "live": live,
            "url": change["url"],
            "ref": change["ref"],
            "id": change["id"],
            "item_ahead": None,
            "items_behind": [],
            "failing_reasons": _failing_reasons(jobs),
            "zuul_ref": f"Z{self.uuid()}",
            "project": change["project"],
            "project_canonical": change["project_canonical"],
            "enqueue_time": self.ms_ago(age_s),
            "owner": change["owner"],
            "remaining_time": _item_remaining_ms(jobs) if live else None,
            "jobs": jobs,
        }

    def live_item(self, pipeline, change, specs, age_s, fail="", not_before_s=0.0):
        """A live item with its jobs, as far along as ``age_s`` allows.

        ``fail`` names a job that fails; in the gate no other voting job does.
        """
        enqueue_s = self.now_s - age_s
        ready_s = max(enqueue_s, not_before_s)
        jobs = self.jobs(pipeline, change, specs, ready_s, fail)
        return self.item(change, age_s, jobs)

    def jobs(self, pipeline, change, specs, ready_s, fail) -> list[dict]:
        """The jobs of an item whose builds could start from ``ready_s``."""
        outcomes: dict[str, tuple[float | None, str | None]] = {}
        quiet = pipeline == "gate"
        jobs = []
        for spec in specs:
            start_s, end_s, result = self.timeline(spec, ready_s, outcomes, fail)
            if quiet and result not in (None, "SKIPPED") and spec.name != fail:
                result = "SUCCESS"
            outcomes[spec.name] = (end_s, result)
            jobs.append(self.job(pipeline, change, spec, start_s, end_s, result))
        return jobs

    def timeline(self, spec, ready_s, outcomes, fail):
        """When a job started and ended, and its result, as of now."""
        start_s = ready_s + self.rng.uniform(5, 90)
        for dependency in spec.dependencies:
            end_s, result = outcomes.get(dependency, (ready_s, "SUCCESS"))
            if result is None:
                return None, None, None
            if result != "SUCCESS":
                return None, None, "SKIPPED"
            start_s = max(start_s, end_s + self.rng.uniform(5, 60))
        end_s = start_s + spec.estimated_s * self.rng.uniform(0.8, 1.2)
        if start_s > self.now_s:
            return None, None, None
        if end_s > self.now_s:
            return start_s, None, None
        return start_s, end_s, "FAILURE" if spec.name == fail else self.result(spec)

    def result(self, spec: _JobSpec) -> str:
        """A finished build's result: mostly a success."""
        chance = 0.05 if spec.voting else _NON_VOTING_FAIL_CHANCE
        if self.rng.random() >= chance:
            return "SUCCESS"
        return self.rng.choice(("FAILURE", "FAILURE", "FAILURE", "POST_FAILURE"))

    def job(self, pipeline, change, spec, start_s, end_s, result) -> dict:
        """A v3 job entry, waiting, running or finished."""
        name = f"{self.tenant}-{spec.name}"
        started = start_s is not None
        uuid = self.uuid() if started else None
        job = {
            "name": name,
            "dependencies": [f"{self.tenant}-{d}" for d in spec.dependencies],
            "elapsed_time": None,
            "remaining_time": None,
            "url": None,
            "finger_url": None,
            "report_url": None,
            "result": result,
            "voting": spec.voting,
            "uuid": uuid,
            "execute_time": start_s - self.rng.uniform(3, 30) if started else None,
            "start_time": start_s,
            "end_time": end_s,
            "estimated_time": spec.estimated_s if started else None,
            "pipeline": pipeline,
            "canceled": False,
            "paused": False,
            "retry": False,
            "tries": 1 if started else 0,
            "queued": result is None,
            "node_labels": [],
            "node_name": None,
            "worker": {"name": EXECUTOR, "hostname": EXECUTOR} if started else None,
        }
        if started:
            self.add_build(job, change, spec, start_s, end_s)
        return job

    def add_build(self, job, change, spec, start_s, end_s) -> None:
        """Fill in the times and URLs of a job's running or finished build."""
        uuid = job["uuid"]
        finger = f"finger://{EXECUTOR}:{FINGER_PORT}/{uuid}"
        job["finger_url"] = finger
        if end_s is None:
            elapsed_ms = int((self.now_s - start_s) * 1000)
            job["elapsed_time"] = elapsed_ms
            job["remaining_time"] = max(int(spec.estimated_s * 1000) - elapsed_ms, 0)
            job["url"] = f"stream/{uuid}?logfile=console.log"
            job["report_url"] = finger
            return
        logs = _log_url(LOG_ROOT, change, job["pipeline"], job["name"], uuid)
        job["elapsed_time"] = int((end_s - start_s) * 1000)
        job["remaining_time"] = 0
        job["url"] = logs
        job["report_url"] = logs

    def check_pipeline(self) -> dict:
        """An independent pipeline: one change queue per item."""
        count = self.rng.randint(6, 10)
        return _pipeline("check", [self.check_queue(i, count) for i in range(count)])

    def check_queue(self, index: int, count: int) -> dict:
        """The change queue of one check item, with any dependencies ahead."""
        # The second item failed pep8 long ago, so the jobs that need pep8 are
        # SKIPPED; the newest is too young for pep8 to have ended, so the jobs
        # that need it are still waiting.
        fail = "tox-pep8" if index == 1 else ""
        age_s = self.rng.uniform(120, 5400)
        if index == 1:
            age_s = max(age_s, 1800)
        if index == count - 1:
            age_s = self.rng.uniform(60, 170)
        ahead = self.rng.randint(1, 2) if index == 0 else int(self.rng.random() < 0.2)
        chain = [
            self.item(self.change(self.project()), age_s, []) for _ in range(ahead)
        ]
        project = self.project()
        change = self.change(project)
        chain.append(self.live_item("check", change, _CHECK_JOBS, age_s, fail))
        return _queue(project, 0, [_link(chain)])

    def gate_pipeline(self) -> dict:
        """A dependent pipeline: one shared queue, its items tested together."""
        count = self.rng.randint(4, 8)
        failing = self.rng.randrange(count - 1) if self.rng.random() < 0.5 else -1
        restart_s = self.now_s - self.rng.uniform(300, 900)
        head_age_s = self.rng.uniform(2700, 4800)
        chain = []
        for position in range(count):
            age_s = head_age_s - position * self.rng.uniform(60, 300)
            if position == failing:
                age_s = max(age_s, 2400)
            change = self.change(self.project(_INTEGRATED))
            fail = "tox-py311" if position == failing else ""
            after = restart_s if 0 <= failing < position else 0.0
            item = self.live_item("gate", change, _GATE_JOBS, age_s, fail, after)
            chain.append(item)
        _link(chain)
        if failing >= 0:
            _relink_failed(chain, failing)
        empty = [_queue(f"{self.tenant}/{name}", 20, []) for name in _PROJECTS[7:9]]
        return _pipeline(
            "gate", [_queue("integrated", 20, _split_at_heads(chain))] + empty
        )

    def post_pipeline(self) -> dict:
        """An independent pipeline of merged commits."""
        queues = []
        for _ in range(self.rng.randint(1, 3)):
            project = self.project()
            change = self.branch_update(project)
            age_s = self.rng.uniform(30, 1200)
            item = self.live_item("post", change, _POST_JOBS, age_s)
            queues.append(_queue(project, 0, [[item]]))
        return _pipeline("post", queues)

    def periodic_pipeline(self) -> dict:
        """A timer pipeline, empty most of the time."""
        if self.rng.random() >= 0.3:
            return _pipeline("periodic", [])
        project = f"{self.tenant}/devstack"
        change = self.branch_update(project, periodic=True)
        age_s = self.rng.uniform(600, 6000)
        item = self.live_item("periodic", change, _PERIODIC_JOBS, age_s)
        return _pipeline("periodic", [_queue(project, 0, [[item]])])

    def waiting_status(self, job: dict) -> str:
        """Why a job of Zuul 4 or later has no build yet."""
        if job["dependencies"]:
            return "dependencies: " + ", ".join(job["dependencies"])
        self.next_node_request += self.rng.randint(1, 40)
        return f"node request: 300-{self.next_node_request:010d}"


# The Zuul 10+ layout of a generated document.


def _as_v10(status: dict, factory: _Factory) -> dict:
    """Lay a generated v3 document out as Zuul 10 and later format status."""
    return {
        "zuul_version": _V10_VERSION,
        "trigger_event_queue": status["trigger_event_queue"],
        "state": {},
        "management_event_queue": status["management_event_queue"],
        "connection_event_queues": {"gerrit": {"length": 0}},
        "last_reconfigured": status["last_reconfigured"],
        "pipelines": [_pipeline_v10(p, factory) for p in status["pipelines"]],
    }


def _pipeline_v10(pipeline: dict, factory: _Factory) -> dict:
    """A pipeline with the keys Zuul 4.11 and later add; empty queues left out."""
    queues = pipeline["change_queues"]
    dependent = any(queue["window"] > 0 for queue in queues)
    driver = "timer" if pipeline["name"] == "periodic" else "gerrit"
    return {
        "name": pipeline["name"],
        "description": pipeline["description"],
        "state": "normal",
        "manager": "dependent" if dependent else "independent",
        "triggers": [{"driver": driver}],
        "trigger_events": 0,
        "result_events": 0,
        "management_events": 0,
        "change_queues": [_queue_v10(q, factory) for q in queues if q["heads"]],
    }


def _queue_v10(queue: dict, factory: _Factory) -> dict:
    """A change queue with a branch, its items renamed to item uuids."""
    uuids = {}
    for chain in queue["heads"]:
        for item in chain:
            uuids[id(item)] = factory.uuid()
    by_change = {item["id"]: uuids[id(item)] for c in queue["heads"] for item in c}
    heads = [
        [_item_v10(item, uuids, by_change, factory) for item in c]
        for c in queue["heads"]
    ]
    return {
        "name": queue["name"],
        "window": queue["window"],
        "branch": "master",
        "heads": heads,
    }


def _item_v10(item: dict, uuids: dict, by_change: dict, factory: _Factory) -> dict:
    """An item whose change moved into ``refs`` and whose links are uuids."""
    ref = {key: item[key] for key in ("url", "ref", "project", "project_canonical")}
    ref.update(owner=item["owner"], id=item["id"])
    ahead = item["item_ahead"]
    return {
        "active": item["active"],
        "live": item["live"],
        "id": uuids[id(item)],
        "refs": [ref],
        "item_ahead": None if ahead is None else by_change[ahead],
        "items_behind": [by_change[change] for change in item["items_behind"]],
        "failing_reasons": item["failing_reasons"],
        "zuul_ref": item["zuul_ref"],
        "enqueue_time": item["enqueue_time"],
        "remaining_time": item["remaining_time"],
        "jobs": [_job_v10(job, factory) for job in item["jobs"]],
    }


def _job_v10(job: dict, factory: _Factory) -> dict:
    """A job with the modern keys: no worker or node, plus waiting status."""
    modern = {
        k: v for k, v in job.items() if k not in ("node_labels", "node_name", "worker")
    }
    waiting = job["result"] is None and job["uuid"] is None
    reordered = {}
    for key, value in modern.items():
        if key == "retry":
            reordered["pre_fail"] = None
        reordered[key] = value
    reordered["waiting_status"] = factory.waiting_status(job) if waiting else None
    return reordered


# The evolver.


class _Plan:
    """A running build's own clock: how long it has run and will run."""

    __slots__ = ("duration_ms", "elapsed_ms", "job")

    def __init__(self, job: dict, elapsed_ms: int, duration_ms: int):
        self.job = job
        self.elapsed_ms = elapsed_ms
        self.duration_ms = duration_ms


class _Step(NamedTuple):
    """What one call of ``advance`` means for the items of one pipeline."""

    pipeline: str
    step_ms: int
    start_chance: float
    fail_chance: float


@dataclass
class _Template:
    """A chain to clone for new items, and the change queue it goes to."""

    queue: dict
    chain: list[dict]


@dataclass
class _PipelineState:
    """What the evolver remembers about one pipeline of the document."""

    pipeline: dict
    dependent: bool
    target: int
    templates: list[_Template]


@dataclass
class _Era:
    """How this document writes builds and changes, learned from it."""

    stream_urls: bool = False
    stream_form: str = "stream/{uuid}?logfile=console.log"
    finished_url_is_log: bool = True
    build_root: str = "https://jenkins.example.org"
    log_root: str = LOG_ROOT
    finger_host: str = f"{EXECUTOR}:{FINGER_PORT}"
    estimates_s: dict[str, float] = field(default_factory=dict)
    last_build_number: int = 0
    last_change: int = 0

    def learn(self, status: dict) -> _Era:
        """Read every item and job of a document once."""
        for _pipeline, _queue, chain in _iter_chains(status):
            for item in chain:
                self.learn_change(_change_of(item))
                for job in item.get("jobs") or []:
                    self.learn_job(job)
        return self

    def learn_change(self, change: dict) -> None:
        """Remember the highest change number seen."""
        number = str(change.get("id")).partition(",")[0]
        if number.isdigit():
            self.last_change = max(self.last_change, int(number))

    def learn_job(self, job: dict) -> None:
        """Remember URL forms, estimates and build numbers from one job."""
        url, finger = job.get("url"), job.get("finger_url")
        if isinstance(url, str) and url.startswith("stream/"):
            self.stream_urls = True
        elif isinstance(url, str) and url.startswith("static/stream.html"):
            self.stream_urls = True
            self.stream_form = "static/stream.html?uuid={uuid}&logfile=console.log"
        elif isinstance(url, str) and url.startswith("http") and "/job/" in url:
            self.build_root = url.split("/job/")[0]
        if isinstance(finger, str) and finger.startswith("finger://"):
            self.stream_urls = True
            self.finger_host = finger[len("finger://") :].split("/")[0]
        if _is_finished(job):
            self.learn_finished(job)
        estimate = job.get("estimated_time")
        if _is_number(estimate) and estimate > 0 and isinstance(job.get("name"), str):
            self.estimates_s[job["name"]] = float(estimate)
        if type(job.get("number")) is int:
            self.last_build_number = max(self.last_build_number, job["number"])

    def learn_finished(self, job: dict) -> None:
        """Remember where finished builds point: log server, relative URLs."""
        url, report = job.get("url"), job.get("report_url")
        if isinstance(report, str) and report.startswith("http"):
            self.log_root = "/".join(report.split("/")[:3])
        if isinstance(url, str) and not url.startswith("http"):
            self.finished_url_is_log = False

    def build_urls(self, uuid: str, name: str, number: int | None) -> tuple:
        """The url, finger_url and report_url of a build that just started."""
        if self.stream_urls:
            finger = f"finger://{self.finger_host}/{uuid}"
            return self.stream_form.format(uuid=uuid), finger, finger
        url = f"{self.build_root}/job/{name}/{number or 1}/"
        return url, None, f"{url}console"


class StatusEvolver:
    """Moves one status document forward in time as a busy Zuul tenant would.

    The evolver works on its own copy of the document. When ``now`` is given
    and the document carries times, every time in it is moved so that the
    capture appears to have been taken at ``now``.
    """

    def __init__(self, status: dict, seed: int = 0, now: datetime | None = None):
        self._status = orjson.loads(orjson.dumps(status))
        # Salted, so that an evolver never draws the uuids of the generator
        # that made its document with the same seed.
        self._rng = random.Random(f"zuul-status evolver {seed}")
        self._now_s = self._start_clock(now)
        self._era = _Era().learn(self._status)
        self._plans: dict[int, _Plan] = {}
        self._keep_empty_queues = any(
            not queue.get("heads")
            for pipeline in self._status.get("pipelines") or []
            for queue in pipeline.get("change_queues") or []
        )
        self._pipelines = [
            self._pipeline_state(pipeline)
            for pipeline in self._status.get("pipelines") or []
        ]
        self._plan_running_builds()

    @property
    def now(self) -> datetime:
        """The evolver's clock, in UTC."""
        return datetime.fromtimestamp(self._now_s, UTC)

    @property
    def status(self) -> dict:
        """The current document itself; read it, do not change it."""
        return self._status

    def body(self) -> bytes:
        """The current document as compact JSON bytes, as Zuul sends it."""
        return orjson.dumps(self._status)

    def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds`` and let the tenant work meanwhile."""
        if seconds <= 0:
            return
        self._now_s += seconds
        start_chance = 1 - math.exp(-seconds / _START_DELAY_S)
        for state in self._pipelines:
            step = _Step(
                str(state.pipeline.get("name")),
                round(seconds * 1000),
                start_chance,
                _FAIL_CHANCE[state.dependent],
            )
            for queue, item in self._work(state, step):
                self._reset_behind(queue, item)
            self._depart(state)
            self._arrive(state, seconds)
        self._touch_event_queues()

    # Setting up.

    def _start_clock(self, now: datetime | None) -> float:
        """Start at ``now``, moving the document's times there, or at capture."""
        captured_s = _capture_time_s(self._status)
        if now is None:
            return captured_s if captured_s is not None else _epoch_s(datetime.now(UTC))
        now_s = _epoch_s(now)
        if captured_s is not None and abs(now_s - captured_s) >= 1:
            _shift_times(self._status, now_s - captured_s)
        return now_s

    def _pipeline_state(self, pipeline: dict) -> _PipelineState:
        """Note how a pipeline works and which of its chains new items copy."""
        dependent = _is_dependent(pipeline)
        templates = []
        for queue in pipeline.get("change_queues") or []:
            for chain in queue.get("heads") or []:
                for index, item in enumerate(chain):
                    if not _is_live(item) or not item.get("jobs"):
                        continue
                    if dependent:
                        templates.append(_Template(queue, _copy([item])))
                    else:
                        shape = {
                            k: None if k == "heads" else v for k, v in queue.items()
                        }
                        templates.append(_Template(shape, _copy(chain[: index + 1])))
        return _PipelineState(pipeline, dependent, _count_live(pipeline), templates)

    def _plan_running_builds(self) -> None:
        """Give every build running in the document a duration."""
        for _pipeline, _queue, chain in _iter_chains(self._status):
            for item in chain:
                for job in item.get("jobs") or []:
                    if _looks_running(job):
                        self._plans[id(job)] = self._plan(job)

    def _plan(self, job: dict) -> _Plan:
        """A running build's elapsed time so far and its planned duration."""
        elapsed, start = job.get("elapsed_time"), job.get("start_time")
        if type(elapsed) is int:
            elapsed_ms = elapsed
        elif _is_number(start):
            elapsed_ms = max(int((self._now_s - start) * 1000), 0)
        else:
            elapsed_ms = 0
        estimate_s = self._estimate_s(job.get("name"), job.get("estimated_time"))
        duration_ms = int(estimate_s * self._rng.uniform(0.8, 1.25) * 1000)
        if duration_ms <= elapsed_ms:
            # Already over its estimate: let it end within the next minutes.
            duration_ms = elapsed_ms + int(self._rng.uniform(10, 900) * 1000)
        return _Plan(job, elapsed_ms, duration_ms)

    def _estimate_s(self, name: object, given: object = None) -> float:
        """How long a job usually takes, in seconds."""
        if _is_number(given) and given > 0:
            return float(given)
        key = str(name)
        if key not in self._era.estimates_s:
            self._era.estimates_s[key] = round(self._rng.uniform(300, 1800), 1)
        return self._era.estimates_s[key]

    # Builds.

    def _work(self, state: _PipelineState, step: _Step) -> list[tuple[dict, dict]]:
        """Move every build of a pipeline; return dependent items that failed."""
        failed = []
        for queue in state.pipeline.get("change_queues") or []:
            for chain in queue.get("heads") or []:
                for item in chain:
                    if self._work_item(item, step) and state.dependent:
                        failed.append((queue, item))
        return failed

    def _work_item(self, item: dict, step: _Step) -> bool:
        """Move the builds of one item; return whether it started failing."""
        jobs = item.get("jobs") or []
        if not jobs:
            return False
        failed_before = _has_failed(item)
        startable = item.get("active", True) not in (False, "false")
        for job in jobs:
            plan = self._plans.get(id(job))
            if plan is not None:
                self._run(plan, item, step)
            elif startable and not _is_finished(job):
                self._maybe_start(job, jobs, step)
        if _is_live(item):
            _put(item, "remaining_time", _item_remaining_ms(jobs))
        newly_failed = not failed_before and _has_failed(item)
        if newly_failed:
            _put(item, "failing_reasons", [FAILING_REASON])
        return newly_failed

    def _run(self, plan: _Plan, item: dict, step: _Step) -> None:
        """Let a running build run for one step, finishing it when due."""
        plan.elapsed_ms += step.step_ms
        if plan.elapsed_ms >= plan.duration_ms:
            self._finish(plan, item, step)
            return
        job = plan.job
        _put(job, "elapsed_time", plan.elapsed_ms)
        estimate = job.get("estimated_time")
        if _is_number(estimate):
            _put(job, "remaining_time", max(int(estimate * 1000) - plan.elapsed_ms, 0))

    def _finish(self, plan: _Plan, item: dict, step: _Step) -> None:
        """Give a build its result, end time and log URL."""
        job = plan.job
        del self._plans[id(job)]
        start = job.get("start_time")
        overrun_s = (plan.elapsed_ms - plan.duration_ms) / 1000
        ended_s = self._now_s - overrun_s
        if _is_number(start):
            ended_s = start + plan.duration_ms / 1000
        job["result"] = self._result(job, step.fail_chance)
        _put(job, "end_time", ended_s)
        _put(job, "elapsed_time", plan.duration_ms)
        _put(job, "remaining_time", 0)
        _put(job, "queued", False)
        if not self._era.stream_urls:
            return
        uuid = str(job.get("uuid") or self._uuid())
        logs = _log_url(
            self._era.log_root,
            _change_of(item),
            step.pipeline,
            str(job.get("name")),
            uuid,
        )
        _put(job, "report_url", logs)
        if self._era.finished_url_is_log:
            _put(job, "url", logs)

    def _result(self, job: dict, fail_chance: float) -> str:
        """A finished build's result: mostly a success."""
        chance = fail_chance if _is_voting(job) else _NON_VOTING_FAIL_CHANCE
        if self._rng.random() >= chance:
            return "SUCCESS"
        if self._era.stream_urls:
            return self._rng.choice(("FAILURE",) * 6 + ("POST_FAILURE", "TIMED_OUT"))
        return "FAILURE"

    def _maybe_start(self, job: dict, jobs: list[dict], step: _Step) -> None:
        """Start a waiting job now and then, once the jobs it needs succeeded."""
        needed = _dependency_results(job, jobs)
        if any(_is_null(result) for result in needed):
            return
        if any(result != "SUCCESS" for result in needed):
            job["result"] = "SKIPPED"
            _put(job, "queued", False)
            _put(job, "waiting_status", None)
            return
        if self._rng.random() < step.start_chance:
            self._start(job)

    def _start(self, job: dict) -> None:
        """Give a waiting job a new build that starts now."""
        uuid = self._uuid()
        name = str(job.get("name"))
        estimate_s = self._estimate_s(name)
        duration_ms = int(estimate_s * self._rng.uniform(0.8, 1.2) * 1000)
        self._plans[id(job)] = _Plan(job, 0, duration_ms)
        number = None
        if "number" in job:
            self._era.last_build_number += 1
            number = self._era.last_build_number
        url, finger, report = self._era.build_urls(uuid, name, number)
        queued_s = self._now_s - self._rng.uniform(1, 20)
        build = {
            "uuid": uuid,
            "url": url,
            "finger_url": finger,
            "report_url": report,
            "number": number,
            "launch_time": queued_s,
            "execute_time": queued_s,
            "start_time": self._now_s,
            "end_time": None,
            "elapsed_time": 0,
            "remaining_time": int(estimate_s * 1000),
            "estimated_time": estimate_s,
            "tries": 1,
            "queued": False,
            "waiting_status": None,
        }
        for key, value in build.items():
            _put(job, key, value)

    def _reset_job(self, job: dict) -> None:
        """Cancel a job's build, if any, and make it wait for a new one."""
        self._plans.pop(id(job), None)
        for key in _BUILD_KEYS:
            _put(job, key, None)
        _put(job, "tries", 0)
        _put(job, "queued", True)

    # Items.

    def _reset_behind(self, queue: dict, item: dict) -> None:
        """Restart the items behind a failing gate item, without it ahead."""
        for chain in queue.get("heads") or []:
            index = next((i for i, other in enumerate(chain) if other is item), None)
            if index is None:
                continue
            for other in _relink_failed(chain, index):
                for job in other.get("jobs") or []:
                    self._reset_job(job)
                _put(other, "remaining_time", None)
            log.debug("item %s failed; the items behind it restart", item.get("id"))
            return

    def _depart(self, state: _PipelineState) -> None:
        """Remove the items that are done and may leave; drop empty queues."""
        kept = []
        for queue in state.pipeline.get("change_queues") or []:
            heads = queue.get("heads") or []
            if state.dependent:
                queue["heads"] = _depart_dependent(heads, queue.get("window"))
            else:
                queue["heads"] = [rest for rest in map(_depart_chain, heads) if rest]
            if queue["heads"] or (state.dependent and self._keep_empty_queues):
                kept.append(queue)
        if "change_queues" in state.pipeline:
            state.pipeline["change_queues"] = kept

    def _arrive(self, state: _PipelineState, seconds: float) -> None:
        """Enqueue new items, more of them the further below the usual count."""
        if not state.templates:
            return
        live = _count_live(state.pipeline)
        chance = 1 - math.exp(-seconds / _REFILL_S)
        missing = max(state.target - live, 0)
        arrivals = sum(self._rng.random() < chance for _ in range(missing))
        extra_chance = seconds / _EXTRA_ARRIVAL_S
        if live + arrivals <= state.target * 1.25 and self._rng.random() < extra_chance:
            arrivals += 1
        for _ in range(arrivals):
            self._enqueue(state)

    def _enqueue(self, state: _PipelineState) -> None:
        """Add one new item, cloned from an item the pipeline held at the start."""
        template = self._rng.choice(state.templates)
        chain = self._clone(template.chain)
        if state.dependent:
            _append_to_queue(state.pipeline, template.queue, chain[0])
        else:
            queue = dict(template.queue)
            queue["heads"] = [chain]
            state.pipeline["change_queues"].append(queue)
        log.debug(
            "enqueued %s in %s",
            _change_of(chain[-1]).get("id"),
            state.pipeline.get("name"),
        )

    def _clone(self, template: list[dict]) -> list[dict]:
        """A new chain like ``template``: new changes, new times, no builds."""
        chain = _copy(template)
        self._era.last_change += self._rng.randint(1, 25)
        for index, item in enumerate(chain):
            number = self._era.last_change
            if index < len(chain) - 1:
                number -= self._rng.randint(200, 9000)
            self._renumber(item, number)
            self._refresh(item)
        return _link(chain)

    def _renumber(self, item: dict, number: int) -> None:
        """Give an item a new change number, and a new uuid since Zuul 10."""
        refs = item.get("refs")
        if isinstance(refs, list):
            item["id"] = self._uuid()
            for ref in refs:
                if isinstance(ref, dict):
                    self._renumber_change(ref, number)
        else:
            self._renumber_change(item, number)

    def _renumber_change(self, change: dict, number: int) -> None:
        """Rewrite a change's id, url and ref for a new change number."""
        old = change.get("id")
        if not isinstance(old, str) or _is_null(old):
            return
        head, comma, tail = old.partition(",")
        if not (comma and head.isdigit()):
            # A ref update: its id is the new commit.
            sha = self._sha()
            change["id"] = sha
            if isinstance(change.get("url"), str):
                change["url"] = change["url"].replace(old, sha)
            return
        patchset = str(self._rng.randint(1, 12)) if tail.isdigit() else self._sha()
        change["id"] = f"{number},{patchset}"
        for key in ("url", "ref"):
            text = change.get(key)
            if isinstance(text, str):
                ref = f"refs/changes/{number % 100:02d}/{number}/{patchset}"
                text = _CHANGE_REF.sub(ref, text)
                change[key] = re.sub(rf"\b{head}\b", str(number), text)

    def _refresh(self, item: dict) -> None:
        """Make a cloned item look just enqueued, its jobs waiting."""
        _put(item, "enqueue_time", int(self._now_s * 1000))
        _put(item, "active", True)
        _put(item, "failing_reasons", [])
        if not _is_null(item.get("zuul_ref")):
            _put(item, "zuul_ref", f"Z{self._uuid()}")
        if _is_live(item) and item.get("jobs"):
            _put(item, "remaining_time", None)
        for job in item.get("jobs") or []:
            self._reset_job(job)

    def _touch_event_queues(self) -> None:
        """Let Zuul's event queues fill and drain a little."""
        for key in (
            "trigger_event_queue",
            "management_event_queue",
            "result_event_queue",
        ):
            queue = self._status.get(key)
            if (
                isinstance(queue, dict)
                and "length" in queue
                and self._rng.random() < 0.2
            ):
                queue["length"] = self._rng.choice((0, 0, 0, 1, 2, 5))

    def _uuid(self) -> str:
        """A new uuid as Zuul writes it: 32 hex digits."""
        return f"{self._rng.getrandbits(128):032x}"

    def _sha(self) -> str:
        """A new git commit sha."""
        return f"{self._rng.getrandbits(160):040x}"


def _copy(value: list) -> list:
    """A deep copy of JSON data, faster than ``copy.deepcopy``."""
    return orjson.loads(orjson.dumps(value))


def _is_dependent(pipeline: dict) -> bool:
    """Whether a pipeline tests its items on top of each other, as a gate."""
    manager = pipeline.get("manager")
    if isinstance(manager, str):
        return manager == "dependent"
    return any(
        _is_number(queue.get("window")) and queue["window"] > 0
        for queue in pipeline.get("change_queues") or []
    )


def _looks_running(job: dict) -> bool:
    """Whether a job of a document has a build running now."""
    if _is_finished(job):
        return False
    if _has_started(job):
        return True
    # Zuul 1 captures carry no times: there a URL means a running build.
    return "elapsed_time" not in job and not _is_null(job.get("url"))


def _dependency_results(job: dict, jobs: list[dict]) -> list[object]:
    """The results of the jobs of the same item that ``job`` needs."""
    needed = job.get("dependencies")
    if not isinstance(needed, list) or not needed:
        return []
    names = {d.get("name") if isinstance(d, dict) else d for d in needed}
    return [other.get("result") for other in jobs if other.get("name") in names]


def _count_live(pipeline: dict) -> int:
    """How many live items a pipeline holds."""
    return sum(
        _is_live(item)
        for queue in pipeline.get("change_queues") or []
        for chain in queue.get("heads") or []
        for item in chain
    )


def _depart_chain(chain: list[dict]) -> list[dict]:
    """Remove a finished change of an independent pipeline with what is ahead."""
    cut = 0
    for index, item in enumerate(chain):
        if not _is_live(item):
            continue
        if not _is_done(item):
            break
        cut = index + 1
    if not cut:
        return chain
    rest = chain[cut:]
    if rest:
        _put(rest[0], "item_ahead", None)
    return rest


def _depart_dependent(heads: list[list[dict]], window: object) -> list[list[dict]]:
    """Remove finished heads of a dependent queue; cut it again at its heads."""
    gone: set[str] = set()
    kept = []
    for item in (item for chain in heads for item in chain):
        ahead = item.get("item_ahead")
        if isinstance(ahead, str) and ahead in gone:
            _put(item, "item_ahead", None)
            ahead = None
        if _is_null(ahead) and _is_live(item) and _is_done(item):
            if isinstance(item.get("id"), str):
                gone.add(item["id"])
            continue
        kept.append(item)
    chains = _split_at_heads(kept)
    if _is_number(window) and window > 0:
        for chain in chains:
            for position, item in enumerate(chain):
                _put(item, "active", position < window)
    return chains


def _append_to_queue(pipeline: dict, queue: dict, item: dict) -> None:
    """Put a new item at the end of a dependent queue's longest chain."""
    queues = pipeline["change_queues"]
    if not any(other is queue for other in queues):
        queues.append(queue)
    heads = queue.setdefault("heads", [])
    chain = max(heads, key=len) if heads else None
    tail = next((x for x in reversed(chain or []) if not _has_failed(x)), None)
    if chain is None or tail is None:
        heads.append([item])
        return
    _put(item, "item_ahead", tail.get("id"))
    if isinstance(tail.get("items_behind"), list):
        tail["items_behind"] = [*tail["items_behind"], item.get("id")]
    chain.append(item)


def _capture_time_s(status: dict) -> float | None:
    """When a document was captured, from its running builds or latest times."""
    running: list[float] = []
    latest: float | None = None
    for _pipeline, _queue, chain in _iter_chains(status):
        for item in chain:
            enqueue = item.get("enqueue_time")
            if _is_number(enqueue):
                latest = max(latest or 0.0, enqueue / 1000)
            for job in item.get("jobs") or []:
                start, elapsed = job.get("start_time"), job.get("elapsed_time")
                if _is_number(start) and _is_number(elapsed) and not _is_finished(job):
                    running.append(start + elapsed / 1000)
                for key in ("start_time", "end_time"):
                    if _is_number(job.get(key)):
                        latest = max(latest or 0.0, job[key])
    if running:
        return max(running)
    if latest is not None:
        return latest
    reconfigured = status.get("last_reconfigured")
    return reconfigured / 1000 if _is_number(reconfigured) else None


def _shift_times(status: dict, delta_s: float) -> None:
    """Move every absolute time of a document by ``delta_s`` seconds."""
    delta_ms = round(delta_s * 1000)
    if _is_number(status.get("last_reconfigured")):
        status["last_reconfigured"] += delta_ms
    for _pipeline, _queue, chain in _iter_chains(status):
        for item in chain:
            if _is_number(item.get("enqueue_time")):
                item["enqueue_time"] += delta_ms
            for job in item.get("jobs") or []:
                for key in ("start_time", "end_time", "launch_time", "execute_time"):
                    if _is_number(job.get(key)):
                        job[key] += delta_s
