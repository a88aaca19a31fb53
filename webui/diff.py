"""What changed between two parsed snapshots of one source.

Items are matched by pipeline and ``Item.key``; within an item, jobs by name
(a job name appears once per item), and a build by its uuid. A job whose
build got a new uuid, or lost its build or its result, was restarted: when
that happens to several jobs of an item at once it is a gate reset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recorder.parser import ChangeQueue, Item, Job, Status
from webui.render import http_url, result_class

_OK_RESULTS = frozenset({"SUCCESS", "SKIPPED"})


@dataclass(slots=True)
class ItemRef:
    """An item as the diff names it: where it is, and what it stands for."""

    pipeline: str
    queue: str
    change: str
    project: str
    href: str | None
    story: str | None


@dataclass(slots=True)
class ItemEvent:
    item: ItemRef
    jobs: int
    result: str | None = None
    css: str | None = None


@dataclass(slots=True)
class JobEvent:
    item: ItemRef
    job: str
    voting: bool
    result: str | None = None
    css: str | None = None


@dataclass(slots=True)
class Reset:
    item: ItemRef
    restarted: list[str]
    jobs: int

    @property
    def label(self) -> str:
        if len(self.restarted) > 1 or len(self.restarted) == self.jobs:
            return f"gate reset: {len(self.restarted)} of {self.jobs} jobs restarted"
        return f"job {self.restarted[0]} restarted"


@dataclass(slots=True)
class WindowChange:
    pipeline: str
    queue: str
    before: int
    after: int


@dataclass(slots=True)
class StatusDiff:
    enqueued: list[ItemEvent] = field(default_factory=list)
    dequeued: list[ItemEvent] = field(default_factory=list)
    started: list[JobEvent] = field(default_factory=list)
    finished: list[JobEvent] = field(default_factory=list)
    resets: list[Reset] = field(default_factory=list)
    windows: list[WindowChange] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.enqueued,
                self.dequeued,
                self.started,
                self.finished,
                self.resets,
                self.windows,
            )
        )

    @property
    def failed(self) -> int:
        return sum(event.css == "bad" for event in self.finished)


def compare(before: Status, after: Status, query: str = "") -> StatusDiff:
    """Items, jobs, resets and windows that changed from ``before`` to ``after``."""
    needle = query.strip().casefold()
    old, new = _items(before, needle), _items(after, needle)
    diff = StatusDiff()
    for key, (ref, item) in new.items():
        if key not in old:
            diff.enqueued.append(ItemEvent(ref, len(item.jobs)))
        previous = old.get(key)
        _compare_jobs(diff, ref, previous[1] if previous else None, item)
    for key, (ref, item) in old.items():
        if key not in new:
            result, css = overall_result(item)
            diff.dequeued.append(ItemEvent(ref, len(item.jobs), result, css))
    diff.windows = _window_changes(before, after)
    return diff


def overall_result(item: Item) -> tuple[str, str | None]:
    """What an item's jobs say about it as last seen: a verdict, or how far it got."""
    results = [job.result.upper() for job in item.jobs if job.voting and job.result]
    if any(result not in _OK_RESULTS for result in results):
        return "FAILURE", "bad"
    if item.jobs and all(job.result is not None for job in item.jobs):
        return "SUCCESS", "ok"
    done = sum(job.result is not None for job in item.jobs)
    return f"left unfinished, {done} of {len(item.jobs)} jobs done", "skip"


def _items(status: Status, needle: str) -> dict[tuple[str, str], tuple[ItemRef, Item]]:
    """Live items by (pipeline, key), keeping only those matching ``needle``."""
    items: dict[tuple[str, str], tuple[ItemRef, Item]] = {}
    for pipeline, change_queue, item in status.iter_items():
        if not item.live or (needle and not _matches(item, needle)):
            continue
        key = (pipeline.name, item.key)
        while key in items:  # the same change twice in a pipeline: keep both
            key = (key[0], key[1] + "#")
        items[key] = (_ref(pipeline.name, change_queue, item), item)
    return items


def _ref(pipeline: str, change_queue: ChangeQueue, item: Item) -> ItemRef:
    ref = item.ref
    change = ref.id or ref.ref or "(no change id)"
    return ItemRef(
        pipeline=pipeline,
        queue=change_queue.name,
        change=change,
        project=item.project or "",
        href=http_url(ref.url),
        story=ref.id,
    )


def _matches(item: Item, needle: str) -> bool:
    texts = [t for ref in item.refs for t in (ref.project, ref.id, ref.ref) if t]
    texts.extend(job.name for job in item.jobs)
    return any(needle in text.casefold() for text in texts)


def _compare_jobs(diff: StatusDiff, ref: ItemRef, old: Item | None, new: Item) -> None:
    old_jobs = {job.name: job for job in old.jobs} if old is not None else {}
    restarted = []
    for job in new.jobs:
        previous = old_jobs.get(job.name)
        if previous is not None and _restarted(previous, job):
            restarted.append(job.name)
            previous = None
        was = previous.state if previous is not None else "waiting"
        if was == "waiting" and job.state != "waiting" and job.result != "SKIPPED":
            diff.started.append(JobEvent(ref, job.name, job.voting))
        if was != "finished" and job.state == "finished":
            css = result_class(job.result)
            diff.finished.append(JobEvent(ref, job.name, job.voting, job.result, css))
    if restarted:
        diff.resets.append(Reset(ref, restarted, len(new.jobs)))


def _restarted(old: Job, new: Job) -> bool:
    """Whether ``new`` is another build of the job than ``old`` (or none yet)."""
    if old.uuid and new.uuid != old.uuid:
        return True
    order = {"waiting": 0, "running": 1, "finished": 2}
    return order[new.state] < order[old.state]


def _window_changes(before: Status, after: Status) -> list[WindowChange]:
    """Windows of change queues whose name is unique in their pipeline in both."""
    old, new = _windows(before), _windows(after)
    return [
        WindowChange(pipeline, queue, old[pipeline, queue], window)
        for (pipeline, queue), window in new.items()
        if (pipeline, queue) in old and old[pipeline, queue] != window
    ]


def _windows(status: Status) -> dict[tuple[str, str], int]:
    windows: dict[tuple[str, str], int | None] = {}
    for pipeline in status.pipelines:
        for change_queue in pipeline.change_queues:
            key = (pipeline.name, change_queue.name)
            # A repeated name (one queue per item in check) cannot be matched.
            windows[key] = None if key in windows else change_queue.window
    return {key: window for key, window in windows.items() if window is not None}
