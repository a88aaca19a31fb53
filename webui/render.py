"""Turn a parsed status into plain rows for the templates, and format times.

The templates only loop and print: every decision per item and per job (its
link, its colour, its times) is made here, once, in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from urllib.parse import urlsplit

from recorder.parser import ChangeQueue, Item, Job, Pipeline, Status
from recorder.store import safe_log_url

UNKNOWN = "unknown"
# Results that say the job did not run to a verdict: shown grey, not red.
_NEUTRAL_RESULTS = frozenset({"SKIPPED", "CANCELED", "ABORTED", "DEQUEUED"})
_STATE_CLASSES = {"running": "run", "waiting": "wait"}


@dataclass(slots=True)
class Link:
    text: str
    href: str | None = None


@dataclass(slots=True)
class JobRow:
    name: str
    href: str | None
    css: str
    label: str
    time: str
    voting: bool


@dataclass(slots=True)
class ItemRow:
    refs: list[Link]
    project: str
    owner: str
    age: str
    remaining: str | None
    live: bool
    failing: bool
    css: str
    finished: int
    jobs: list[JobRow]
    # The change to tell the story of, for live items that have one.
    story: str | None = None


@dataclass(slots=True)
class QueueRows:
    name: str
    window: int | None
    heads: list[list[ItemRow]]


@dataclass(slots=True)
class PipelineRows:
    name: str
    description: str | None
    item_count: int
    change_queues: list[QueueRows]
    # Items shown only as what a live item depends on: listed, not counted.
    not_live_count: int = 0


@dataclass(slots=True)
class StatusRows:
    """The pipelines to show, the others by name, and how many items matched."""

    pipelines: list[PipelineRows] = field(default_factory=list)
    # Pipelines with nothing to show, listed by name only.
    quiet: list[PipelineRows] = field(default_factory=list)
    matched: int = 0
    total: int = 0
    not_live: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def in_zone(moment: datetime, zone: tzinfo) -> datetime:
    """``moment`` in ``zone``; in UTC where the offset would leave the calendar."""
    try:
        return moment.astimezone(zone)
    except OverflowError:
        return moment.astimezone(UTC)


def format_time(moment: datetime | None, zone: tzinfo = UTC) -> str:
    """``2026-12-03 16:20:05 UTC`` (or ``17:20:05 CET`` in a zone), or ``unknown``."""
    if moment is None:
        return UNKNOWN
    local = in_zone(moment, zone)
    # strftime writes years before 1000 without their leading zeros.
    return f"{local.year:04d}-{local:%m-%d %H:%M:%S %Z}"


def iso_z(moment: datetime | None) -> str | None:
    """``2026-12-03T16:20:05Z`` (with fractions when there are some), or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def format_duration(seconds: float | None) -> str:
    """``45 s``, ``3 min``, ``2 h 5 min``, ``3 d 4 h``; ``unknown`` when None."""
    if seconds is None:
        return UNKNOWN
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, hours, days = whole // 60 % 60, whole // 3600 % 24, whole // 86400
    if whole < 3600:
        return f"{minutes} min"
    if days == 0:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{days} d {hours} h" if hours else f"{days} d"


def seconds_between(start: datetime | None, end: datetime) -> float | None:
    return None if start is None else (end - start).total_seconds()


def http_url(url: str | None) -> str | None:
    """The URL itself when it is http(s) and absolute; anything else is no link."""
    if url and urlsplit(url).scheme in ("http", "https"):
        return url
    return None


def status_rows(
    status: Status, taken_at: datetime, web_root: str, query: str = ""
) -> StatusRows:
    """Rows for every pipeline; items not matching ``query`` are left out."""
    rows = StatusRows(counts=status.counts())
    needle = query.strip().casefold()
    for pipeline in status.pipelines:
        lives = [item.live for item in pipeline.items]
        rows.total += sum(lives)
        rows.not_live += len(lives) - sum(lives)
        pipeline_rows = _pipeline_rows(pipeline, taken_at, web_root, needle)
        # Only queues with something to show are kept.
        if pipeline_rows.change_queues:
            rows.matched += pipeline_rows.item_count
            rows.pipelines.append(pipeline_rows)
        else:
            rows.quiet.append(pipeline_rows)
    return rows


def _pipeline_rows(
    pipeline: Pipeline, taken_at: datetime, web_root: str, needle: str
) -> PipelineRows:
    change_queues, count, not_live = [], 0, 0
    for change_queue in pipeline.change_queues:
        queue_rows = _queue_rows(change_queue, taken_at, web_root, needle)
        if queue_rows.heads:
            change_queues.append(queue_rows)
            shown = [item.live for head in queue_rows.heads for item in head]
            count += sum(shown)
            not_live += len(shown) - sum(shown)
    return PipelineRows(
        pipeline.name, pipeline.description, count, change_queues, not_live
    )


def _queue_rows(
    change_queue: ChangeQueue, taken_at: datetime, web_root: str, needle: str
) -> QueueRows:
    heads = []
    for head in change_queue.heads:
        items = [
            _item_row(item, taken_at, web_root)
            for item in head
            if not needle or _matches(item, needle)
        ]
        if items:
            heads.append(items)
    window = change_queue.window if change_queue.window else None
    return QueueRows(change_queue.name, window, heads)


def _matches(item: Item, needle: str) -> bool:
    """Whether the project, change or a job name holds ``needle`` (casefolded)."""
    texts = [t for ref in item.refs for t in (ref.project, ref.id, ref.ref) if t]
    texts.extend(job.name for job in item.jobs)
    return any(needle in text.casefold() for text in texts)


def _item_row(item: Item, taken_at: datetime, web_root: str) -> ItemRow:
    failing = bool(item.failing_reasons) or any(
        job.voting and result_class(job.result) == "bad" for job in item.jobs
    )
    css = "item" + ("" if item.live else " nl") + (" fail" if failing else "")
    remaining = item.remaining_s
    return ItemRow(
        refs=[
            Link(ref.id or ref.ref or "(no change id)", http_url(ref.url))
            for ref in item.refs
        ],
        project=item.project or "",
        owner=item.ref.owner or "",
        age=format_duration(seconds_between(item.enqueue_time, taken_at)),
        remaining=format_duration(remaining) if remaining else None,
        live=item.live,
        failing=failing,
        css=css,
        finished=sum(job.result is not None for job in item.jobs),
        jobs=[_job_row(job, web_root) for job in item.jobs],
        story=item.change_id if item.live and item.jobs else None,
    )


def _job_row(job: Job, web_root: str) -> JobRow:
    state = job.state
    if state == "finished":
        css, label = result_class(job.result), job.result or ""
    else:
        css, label = _STATE_CLASSES[state], state
    return JobRow(
        name=job.name,
        href=_log_href(job, web_root),
        css=css if job.voting else css + " nv",
        label=label,
        time=_job_time(job, state),
        voting=job.voting,
    )


def _log_href(job: Job, web_root: str) -> str | None:
    """``safe_log_url``, without resolving URLs that are already absolute."""
    for candidate in (job.report_url, job.url):
        if not candidate:
            continue
        if candidate.startswith(("https://", "http://")):
            return candidate
        return safe_log_url(job.report_url, job.url, web_root)
    return None


def result_class(result: str | None) -> str | None:
    """``ok``, ``bad`` or ``skip`` for a result; None while there is none."""
    if result is None:
        return None
    upper = result.upper()
    if upper == "SUCCESS":
        return "ok"
    return "skip" if upper in _NEUTRAL_RESULTS else "bad"


def _job_time(job: Job, state: str) -> str:
    """What is known of a job's times; ``unknown`` for what is not, never 0."""
    if state == "finished":
        duration = job.duration_s if job.duration_s is not None else job.elapsed_s
        if duration is None and (job.result or "").upper() in _NEUTRAL_RESULTS:
            return ""  # skipped or canceled before it ran: there is no duration
        return format_duration(duration)
    if state == "running":
        # A remaining time of 0 on a running job means its estimate ran out.
        remaining = job.remaining_s or None
        return (
            f"elapsed {format_duration(job.elapsed_s)}, "
            f"remaining {format_duration(remaining)}, "
            f"est. {format_duration(job.estimated_s)}"
        )
    if job.waiting_status:
        return job.waiting_status
    return f"est. {format_duration(job.estimated_s)}" if job.estimated_s else ""


@dataclass(slots=True)
class Banner:
    """When a snapshot was taken and how old it is (against now, here only)."""

    taken_at: str
    taken_iso: str | None
    age: str
    last_seen_at: str | None = None
    last_seen_iso: str | None = None
    last_seen_age: str | None = None
    events: str | None = None


def banner(
    taken_at: datetime,
    last_taken_at: datetime,
    status: Status | None,
    now: datetime,
    zone: tzinfo = UTC,
) -> Banner:
    result = Banner(
        taken_at=format_time(taken_at, zone),
        taken_iso=iso_z(taken_at),
        age=format_duration(seconds_between(taken_at, now)),
        events=_event_queues(status) if status is not None else None,
    )
    if last_taken_at > taken_at:
        result.last_seen_at = format_time(last_taken_at, zone)
        result.last_seen_iso = iso_z(last_taken_at)
        result.last_seen_age = format_duration(seconds_between(last_taken_at, now))
    return result


def _event_queues(status: Status) -> str | None:
    lengths = (
        ("trigger", status.trigger_event_queue_length),
        ("result", status.result_event_queue_length),
        ("management", status.management_event_queue_length),
    )
    known = [f"{name} {length}" for name, length in lengths if length is not None]
    return ", ".join(known) or None
