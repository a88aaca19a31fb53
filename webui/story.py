"""The story of one change: its visits to pipelines, and every build of its jobs.

Told from the build rows, which say when each build was first and last seen
and in which snapshots. The snapshot where a build was first seen running or
finished is the first one, within the build's own range, taken at or after
Zuul's start or end time (corrected by how far Zuul's clock is from ours).
Restarts are builds of a job that follow another in the same visit.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from webui.render import http_url, result_class

_OK_RESULTS = frozenset({"SUCCESS", "SKIPPED"})
# Zuul's times and ours are compared with this much slack either way.
_SLACK = timedelta(seconds=1)


@dataclass(slots=True)
class Moment:
    """When something happened, and the snapshot where it was first seen."""

    at: datetime | None
    snapshot_id: int | None = None


@dataclass(slots=True)
class Attempt:
    """One build of a job (or the wait for one)."""

    number: int
    state: str
    result: str | None
    css: str | None
    # Where the build (or the wait for it) was first seen, and in what state:
    # ``queued`` unless Zuul's start time says it had already started then.
    first_seen: Moment
    first_state: str
    # None when the build was never seen queued.
    queued: Moment | None
    started: Moment | None
    ended: Moment | None
    last_seen: Moment
    duration_s: float | None
    waited_s: float | None
    log_url: str | None
    # The build vanished without a result: a gate reset or a retry replaced it.
    interrupted: bool = False


@dataclass(slots=True)
class JobStory:
    name: str
    voting: bool
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]


@dataclass(slots=True)
class Restart:
    at: Moment
    jobs: list[str]

    @property
    def label(self) -> str:
        if len(self.jobs) > 1:
            return f"gate reset: {len(self.jobs)} jobs restarted"
        return f"job {self.jobs[0]} restarted"


@dataclass(slots=True)
class ItemDetails:
    """What only a body tells about an item: its link, owner and failing reasons."""

    href: str | None = None
    owner: str | None = None
    failing_reasons: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Visit:
    """One stay of the change in one pipeline, from enqueue to dequeue."""

    pipeline: str
    queue: str | None
    change: str
    project: str | None
    enqueue_time: datetime | None
    entered: Moment
    last_seen: Moment
    left: Moment | None
    result: str
    css: str | None
    jobs: list[JobStory]
    restarts: list[Restart]
    details: ItemDetails | None = None


@dataclass(slots=True)
class ChangeStory:
    change: str
    visits: list[Visit]

    @property
    def changes(self) -> list[str]:
        return list(dict.fromkeys(visit.change for visit in self.visits))


class SnapshotClock:
    """The parsed snapshots of a source in order, to find where events were seen."""

    def __init__(
        self, times: Sequence[tuple[int, datetime]], offset: timedelta = timedelta()
    ):
        self.ids = [snapshot_id for snapshot_id, _ in times]
        self.taken = [taken_at for _, taken_at in times]
        self.position = {snapshot_id: i for i, snapshot_id in enumerate(self.ids)}
        self.offset = offset

    def moment(self, snapshot_id: int, at: datetime | None = None) -> Moment:
        index = self.position.get(snapshot_id)
        taken = self.taken[index] if index is not None else None
        return Moment(at or taken, snapshot_id)

    def first_seen(
        self, event: datetime | None, first_id: int, last_id: int
    ) -> Moment | None:
        """Where an event at Zuul's ``event`` time was first seen, within a range."""
        if event is None:
            return None
        low, high = self.position.get(first_id), self.position.get(last_id)
        if low is None or high is None:
            return Moment(event)
        target = event - self.offset - _SLACK
        index = min(max(bisect_left(self.taken, target, low, high + 1), low), high)
        return Moment(event, self.ids[index])

    def after(self, snapshot_id: int) -> Moment | None:
        """The next snapshot, where something last seen in ``snapshot_id`` was gone."""
        index = self.position.get(snapshot_id)
        if index is None or index + 1 >= len(self.ids):
            return None
        return Moment(self.taken[index + 1], self.ids[index + 1])

    def last_at_or_before(self, moment: datetime) -> int | None:
        index = bisect_right(self.taken, moment) - 1
        return self.ids[index] if index >= 0 else None


def visits(builds: Sequence, until: datetime | None = None) -> list[list]:
    """Build rows grouped by visit (pipeline, change, enqueue time), oldest first."""
    grouped: dict[tuple, list] = {}
    for build in builds:
        if until is not None and build.first_seen > until:
            continue
        key = (build.pipeline, build.change, build.enqueue_time)
        grouped.setdefault(key, []).append(build)
    return sorted(grouped.values(), key=lambda rows: rows[0].first_seen)


def last_sighting(rows: Sequence) -> tuple[int, datetime]:
    """The snapshot id and time where a visit's item was last seen."""
    last = max(rows, key=lambda row: row.last_seen)
    return last.last_snapshot_id, last.last_seen


def tell(
    change: str,
    grouped: Sequence[Sequence],
    clock: SnapshotClock,
    until: datetime | None = None,
) -> ChangeStory:
    """The story of visits from ``visits``; ``until`` hides what came later.

    ``clock`` holds the parsed snapshots from the first sighting to the one
    after the last, so that it can say where each visit was gone.
    """
    return ChangeStory(change, [_visit(rows, clock, until) for rows in grouped])


def _visit(rows, clock: SnapshotClock, until) -> Visit:
    first = min(rows, key=lambda row: row.first_seen)
    last = max(rows, key=lambda row: row.last_seen)
    last_seen = clock.moment(last.last_snapshot_id, last.last_seen)
    left = clock.after(last.last_snapshot_id)
    if until is not None:
        last_seen = _clamp(last_seen, clock, until)
        if left is not None and (left.at is None or left.at > until):
            left = None
    jobs: dict[str, JobStory] = {}
    for row in rows:
        story = jobs.setdefault(row.job, JobStory(row.job, row.voting))
        story.attempts.append(_attempt(row, len(story.attempts) + 1, clock, until))
    for story in jobs.values():
        for attempt in story.attempts[:-1]:
            if attempt.result is None:
                attempt.interrupted = True
                attempt.state, attempt.css = "replaced", "skip"
    result, css = _result(list(jobs.values()), still_there=left is None)
    return Visit(
        pipeline=first.pipeline,
        queue=last.queue,
        change=first.change or "",
        project=first.project,
        enqueue_time=first.enqueue_time,
        entered=clock.moment(first.first_snapshot_id, first.first_seen),
        last_seen=last_seen,
        left=left,
        result=result,
        css=css,
        jobs=list(jobs.values()),
        restarts=_restarts(jobs.values()),
    )


def _attempt(row, number: int, clock: SnapshotClock, until) -> Attempt:
    started = clock.first_seen(
        row.start_time, row.first_snapshot_id, row.last_snapshot_id
    )
    ended = None
    if row.result is not None:
        ended = clock.first_seen(
            row.end_time, row.first_snapshot_id, row.last_snapshot_id
        ) or Moment(None)
    last_seen = clock.moment(row.last_snapshot_id, row.last_seen)
    result = row.result
    if until is not None:
        last_seen = _clamp(last_seen, clock, until)
        if ended is not None and _after(ended, clock, until):
            ended, result = None, None
        if started is not None and _after(started, clock, until):
            started = None
    state = "finished" if result is not None else "running" if started else "waiting"
    first_seen = clock.moment(row.first_snapshot_id, row.first_seen)
    first_state = _first_state(row, clock)
    waited = None
    if first_state == "queued" and row.start_time is not None:
        start = row.start_time - clock.offset
        waited = max((start - row.first_seen).total_seconds(), 0.0)
    return Attempt(
        number=number,
        state=state,
        result=result,
        css=result_class(result) if result else ("run" if started else "wait"),
        first_seen=first_seen,
        first_state=first_state,
        queued=first_seen if first_state == "queued" else None,
        started=started,
        ended=ended,
        last_seen=last_seen,
        duration_s=row.duration_s if result is not None else None,
        waited_s=waited if started is not None else None,
        log_url=http_url(row.log_url),
    )


def _first_state(row, clock: SnapshotClock) -> str:
    """``queued``, ``running`` or ``finished``: the build when first seen.

    Zuul's start and end times, moved to our clock, say whether the build had
    already started (or ended) before the snapshot that first showed it.
    """
    first_seen = row.first_seen - _SLACK
    if row.end_time is not None and row.end_time - clock.offset < first_seen:
        return "finished"
    if row.start_time is not None and row.start_time - clock.offset < first_seen:
        return "running"
    return "queued"


def _result(jobs: list[JobStory], still_there: bool) -> tuple[str, str | None]:
    latest = [job.last for job in jobs]
    failed = [
        job.name
        for job in jobs
        if job.voting
        and job.last.result is not None
        and job.last.result.upper() not in _OK_RESULTS
    ]
    if failed:
        return ("failing, in progress" if still_there else "FAILURE"), "bad"
    if latest and all(attempt.result is not None for attempt in latest):
        return "SUCCESS", "ok"
    if still_there:
        return "in progress", "run"
    done = sum(attempt.result is not None for attempt in latest)
    return f"left unfinished, {done} of {len(latest)} jobs done", "skip"


def _restarts(jobs) -> list[Restart]:
    """Later builds of jobs, grouped by the snapshot where they first appeared."""
    restarts: dict[int | None, Restart] = {}
    for job in jobs:
        for attempt in job.attempts[1:]:
            key = attempt.first_seen.snapshot_id
            restart = restarts.setdefault(key, Restart(attempt.first_seen, []))
            restart.jobs.append(job.name)
    return sorted(restarts.values(), key=lambda r: (r.at.at is None, r.at.at))


def _clamp(moment: Moment, clock: SnapshotClock, until: datetime) -> Moment:
    if moment.at is None or moment.at <= until:
        return moment
    snapshot_id = clock.last_at_or_before(until)
    return clock.moment(snapshot_id) if snapshot_id is not None else Moment(until)


def _after(moment: Moment, clock: SnapshotClock, until: datetime) -> bool:
    """Whether a moment was first seen in a snapshot taken after ``until``."""
    if moment.snapshot_id is not None:
        seen = clock.moment(moment.snapshot_id).at
        if seen is not None:
            return seen > until
    return moment.at is not None and moment.at > until
