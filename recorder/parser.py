"""Parse a Zuul status body of any era into one model.

Zuul's status format is undocumented and changed from Zuul 1 to Zuul 11 (see
SCHEMA-NOTES.md in the shared fixtures). Everything here is defensive: values
may be missing, null, of the wrong type, or strings such as ``"true"`` and
``"null"``. Only a body whose overall shape is wrong raises ``ParseError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

# Epoch seconds accepted as a real time: 1990-01-01 to 2200-01-01. Anything
# outside is treated as unknown rather than trusted or allowed to overflow.
_MIN_EPOCH_S = 631_152_000
_MAX_EPOCH_S = 7_258_118_400
# Longest duration taken at face value (30 days); longer ones are unknown.
_MAX_DURATION_S = 30 * 86_400
_MAX_DURATION_MS = _MAX_DURATION_S * 1000
_NULL_STRINGS = frozenset({"null", "none", ""})
_NUMBER_TYPES = frozenset({int, float})
_NULL_EXACT = frozenset({"null", "none", "None", "NULL", "Null", ""})
# Names longer than this are cut: they are indexed in the database, and an
# index entry has a size limit (PostgreSQL refuses rows of about 2.7 kB).
MAX_NAME_CHARS = 500


class ParseError(ValueError):
    """A status body that cannot be read as Zuul status."""


@dataclass(slots=True)
class Job:
    """One job entry of an item, with or without a build."""

    name: str
    result: str | None = None
    voting: bool = True
    uuid: str | None = None
    url: str | None = None
    report_url: str | None = None
    elapsed_s: float | None = None
    remaining_s: float | None = None
    estimated_s: float | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    canceled: bool = False
    retry: bool = False
    tries: int | None = None
    waiting_status: str | None = None
    # Zuul 1 captures carry no times at all; there a URL means it is running.
    untimed: bool = False
    # finished, running or waiting: derived once from the fields above.
    state: str = field(init=False)

    def __post_init__(self) -> None:
        if self.result is not None:
            self.state = "finished"
        elif (
            self.elapsed_s is not None
            or self.start_time is not None
            or self.untimed
            and self.url
        ):
            self.state = "running"
        else:
            self.state = "waiting"

    @property
    def log_url(self) -> str | None:
        """The best link to this build's log or console."""
        return self.report_url or self.url

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end, when both are known."""
        if self.start_time is None or self.end_time is None:
            return None
        seconds = (self.end_time - self.start_time).total_seconds()
        return seconds if 0 <= seconds <= _MAX_DURATION_S else None


@dataclass(slots=True)
class Ref:
    """One change or ref that an item stands for."""

    id: str | None = None
    project: str | None = None
    project_canonical: str | None = None
    url: str | None = None
    ref: str | None = None
    owner: str | None = None

    @property
    def change(self) -> str | None:
        """The change number of a Gerrit change or GitHub pull request."""
        if self.id and "," in self.id:
            return self.id.split(",", 1)[0]
        return None

    @property
    def patchset(self) -> str | None:
        """The patchset (Gerrit) or head sha (GitHub) of the change."""
        if self.id and "," in self.id:
            return self.id.split(",", 1)[1]
        return None


@dataclass(slots=True)
class Item:
    """One entry of a change queue."""

    refs: list[Ref]
    jobs: list[Job]
    uuid: str | None = None
    live: bool = True
    active: bool = True
    enqueue_time: datetime | None = None
    remaining_s: float | None = None
    item_ahead: str | None = None
    items_behind: list[str] = field(default_factory=list)
    failing_reasons: list[str] = field(default_factory=list)

    @property
    def ref(self) -> Ref:
        """The first ref, which names the item when it has several."""
        return self.refs[0] if self.refs else Ref()

    @property
    def change_id(self) -> str | None:
        """``change,patchset`` (or a sha for a branch ref) of the first ref."""
        return self.ref.id

    @property
    def project(self) -> str | None:
        return self.ref.project

    @property
    def key(self) -> str:
        """A stable identity for this item inside its pipeline."""
        if self.uuid:
            return self.uuid
        ref = self.ref
        return f"{ref.project or ''}|{ref.id or ref.ref or ''}"

    def job_counts(self) -> dict[str, int]:
        """How many of this item's jobs are finished, running and waiting."""
        counts = {"finished": 0, "running": 0, "waiting": 0}
        for job in self.jobs:
            counts[job.state] += 1
        return counts


@dataclass(slots=True)
class ChangeQueue:
    """A change queue of a pipeline; its name is not unique."""

    name: str
    heads: list[list[Item]]
    window: int | None = None
    branch: str | None = None

    @property
    def items(self) -> Iterator[Item]:
        for head in self.heads:
            yield from head


@dataclass(slots=True)
class Pipeline:
    name: str
    change_queues: list[ChangeQueue]
    description: str | None = None
    manager: str | None = None
    state: str | None = None

    @property
    def items(self) -> Iterator[Item]:
        for change_queue in self.change_queues:
            yield from change_queue.items


@dataclass(slots=True)
class Status:
    """The whole status document of one tenant."""

    pipelines: list[Pipeline]
    zuul_version: str | None = None
    last_reconfigured: datetime | None = None
    message: str | None = None
    trigger_event_queue_length: int | None = None
    management_event_queue_length: int | None = None
    result_event_queue_length: int | None = None

    def iter_items(self) -> Iterator[tuple[Pipeline, ChangeQueue, Item]]:
        for pipeline in self.pipelines:
            for change_queue in pipeline.change_queues:
                for item in change_queue.items:
                    yield pipeline, change_queue, item

    def counts(self) -> dict[str, int]:
        """Items (live or not) and jobs by state, across every pipeline."""
        counts = dict.fromkeys(
            ("items", "live_items", "jobs", "finished", "running", "waiting"), 0
        )
        for _pipeline, _queue, item in self.iter_items():
            counts["items"] += 1
            counts["live_items"] += item.live
            for state, number in item.job_counts().items():
                counts[state] += number
                counts["jobs"] += number
        return counts


def parse_status(body: bytes | str) -> Status:
    """Parse a status body into a ``Status``; raise ``ParseError`` if it is not one."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ParseError(f"invalid JSON: {error}") from None
    return parse_document(document)


def parse_document(document: object) -> Status:
    """Build a ``Status`` from an already decoded JSON document."""
    if not isinstance(document, dict):
        raise ParseError(f"expected a JSON object, got {_kind(document)}")
    pipelines = document.get("pipelines")
    if not isinstance(pipelines, list):
        raise ParseError("no 'pipelines' list in the document")
    return Status(
        pipelines=[_pipeline(p) for p in pipelines if isinstance(p, dict)],
        zuul_version=_text(document.get("zuul_version")),
        last_reconfigured=_epoch(document.get("last_reconfigured"), 1000),
        message=_text(document.get("message")),
        trigger_event_queue_length=_queue_length(document, "trigger_event_queue"),
        management_event_queue_length=_queue_length(document, "management_event_queue"),
        result_event_queue_length=_queue_length(document, "result_event_queue"),
    )


def _pipeline(raw: dict) -> Pipeline:
    queues = raw.get("change_queues")
    return Pipeline(
        name=_name(raw.get("name")) or "(unnamed)",
        description=_text(raw.get("description")),
        manager=_text(raw.get("manager")),
        state=_text(raw.get("state")),
        change_queues=[_change_queue(q) for q in _list(queues) if isinstance(q, dict)],
    )


def _change_queue(raw: dict) -> ChangeQueue:
    heads = []
    raw_heads = raw.get("heads")
    if raw_heads:  # most queues of independent pipelines are empty
        for head in _list(raw_heads):
            items = [_item(i) for i in _list(head) if isinstance(i, dict)]
            if items:
                heads.append(items)
    name = raw.get("name")
    if not (type(name) is str and _is_plain_name(name)):
        name = _name(name) or ""
    window = raw.get("window")
    if type(window) is not int or not -(2**62) < window < 2**62:
        window = _int(window)
    branch = raw.get("branch")
    if branch is not None and not (type(branch) is str and _is_plain_name(branch)):
        branch = _name(branch)
    return ChangeQueue(name, heads, window, branch)


def _item(raw: dict) -> Item:
    raw_refs = raw.get("refs")
    if isinstance(raw_refs, list) and raw_refs:
        refs = [_ref(r) for r in raw_refs if isinstance(r, dict)]
        uuid = _text(raw.get("id"))
    else:
        refs = [_ref(raw)]
        uuid = None
    behind = raw.get("items_behind")
    return Item(
        refs=refs,
        uuid=uuid,
        jobs=[_job(j) for j in _list(raw.get("jobs")) if isinstance(j, dict)],
        live=_bool(raw.get("live"), True),
        active=_bool(raw.get("active"), True),
        enqueue_time=_epoch(raw.get("enqueue_time"), 1000),
        remaining_s=_duration(raw.get("remaining_time"), 1000),
        item_ahead=_text(raw.get("item_ahead")),
        items_behind=[t for t in map(_text, _list(behind)) if t],
        failing_reasons=[t for t in map(_text, _list(raw.get("failing_reasons"))) if t],
    )


def _ref(raw: dict) -> Ref:
    get = raw.get
    ident, project, url, ref = get("id"), get("project"), get("url"), get("ref")
    if ident is not None and not (type(ident) is str and _is_plain_text(ident)):
        ident = _text(ident)
    if project is not None and not (type(project) is str and _is_plain_name(project)):
        project = _name(project)
    if url is not None and not (type(url) is str and _is_plain_text(url)):
        url = _text(url)
    if ref is not None and not (type(ref) is str and _is_plain_text(ref)):
        ref = _text(ref)
    return Ref(
        ident,
        project,
        _name(get("project_canonical")),
        url,
        ref,
        _owner(get("owner")),
    )


def _job(raw: dict) -> Job:
    # The hot loop of parsing (a thousand jobs a snapshot on a busy tenant):
    # each field takes an inline path for the type Zuul sends, and only other
    # values go through the general conversions, which give the same result.
    get = raw.get
    name = get("name")
    if not (
        type(name) is str
        and name not in _NULL_EXACT
        and len(name) <= MAX_NAME_CHARS
        and "\x00" not in name
    ):
        name = _name(name) or "(unnamed)"
    result = get("result")
    if result is not None and not (
        type(result) is str
        and result not in _NULL_EXACT
        and len(result) <= MAX_NAME_CHARS
        and "\x00" not in result
    ):
        result = _name(result)
    voting = get("voting", True)
    if voting is not True and voting is not False:
        voting = _bool(voting, True)
    uuid = get("uuid")
    if uuid is not None and not (
        type(uuid) is str and uuid not in _NULL_EXACT and "\x00" not in uuid
    ):
        uuid = _text(uuid)
    url = get("url")
    if url is not None and not (
        type(url) is str and url not in _NULL_EXACT and "\x00" not in url
    ):
        url = _text(url)
    report_url = get("report_url")
    if report_url is not None and not (
        type(report_url) is str
        and report_url not in _NULL_EXACT
        and "\x00" not in report_url
    ):
        report_url = _text(report_url)
    elapsed = get("elapsed_time")
    if elapsed is not None:
        if type(elapsed) in _NUMBER_TYPES and 0 <= elapsed <= _MAX_DURATION_MS:
            elapsed = elapsed / 1000
        else:
            elapsed = _duration(elapsed, 1000)
    remaining = get("remaining_time")
    if remaining is not None:
        if type(remaining) in _NUMBER_TYPES and 0 <= remaining <= _MAX_DURATION_MS:
            remaining = remaining / 1000
        else:
            remaining = _duration(remaining, 1000)
    estimated = get("estimated_time")
    if estimated is not None:
        if type(estimated) in _NUMBER_TYPES and 0 <= estimated <= _MAX_DURATION_S:
            estimated = estimated / 1
        else:
            estimated = _duration(estimated, 1)
    start = get("start_time")
    if start is not None:
        if type(start) in _NUMBER_TYPES and _MIN_EPOCH_S <= start <= _MAX_EPOCH_S:
            start = _times.get(start) or _utc(start)
        else:
            start = _epoch(start, 1)
    end = get("end_time")
    if end is not None:
        if type(end) in _NUMBER_TYPES and _MIN_EPOCH_S <= end <= _MAX_EPOCH_S:
            end = _times.get(end) or _utc(end)
        else:
            end = _epoch(end, 1)
    canceled = get("canceled", False)
    if canceled is not True and canceled is not False:
        canceled = _bool(canceled, False)
    retry = get("retry", False)
    if retry is not True and retry is not False:
        retry = _bool(retry, False)
    tries = get("tries")
    if tries is not None:
        tries = _int(tries)
    waiting_status = get("waiting_status")
    if waiting_status is not None:
        waiting_status = _text(waiting_status)
    timed = "elapsed_time" in raw or "start_time" in raw or "remaining_time" in raw
    # Positional, in the order of Job's fields: measurably faster than keywords.
    return Job(
        name,
        result,
        voting,
        uuid,
        url,
        report_url,
        elapsed,
        remaining,
        estimated,
        start,
        end,
        canceled,
        retry,
        tries,
        waiting_status,
        not timed,
    )


def _is_plain_text(text: str) -> bool:
    """A string ``_text`` would return unchanged."""
    return text not in _NULL_EXACT and "\x00" not in text


def _is_plain_name(text: str) -> bool:
    """A string ``_name`` would return unchanged."""
    return (
        len(text) <= MAX_NAME_CHARS and text not in _NULL_EXACT and "\x00" not in text
    )


def _kind(value: object) -> str:
    names = {list: "a list", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _text(value: object) -> str | None:
    """A string, or None for null, ``"null"`` and non-scalar values.

    NUL characters become U+FFFD: PostgreSQL cannot store them in text.
    """
    if type(value) is str and value not in _NULL_EXACT:
        return value if "\x00" not in value else value.replace("\x00", "\ufffd")
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return None if text.strip().lower() in _NULL_STRINGS else text


def _name(value: object) -> str | None:
    """``_text``, cut to ``MAX_NAME_CHARS`` (an ellipsis says it was cut)."""
    text = _text(value)
    if text is None or len(text) <= MAX_NAME_CHARS:
        return text
    return text[: MAX_NAME_CHARS - 1] + "\u2026"


def _bool(value: object, default: bool) -> bool:
    if value is True or value is False:
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    if isinstance(value, int | float):
        return bool(value)
    return default


def _number(value: object) -> float | None:
    kind = type(value)
    if kind is int or kind is float:
        number = float(value)
        return number if number == number and abs(number) != float("inf") else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if number == number and abs(number) != float("inf") else None


def _int(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is int:
        return value if -(2**62) < value < 2**62 else None
    number = _number(value)
    return int(number) if number is not None and abs(number) < 2**62 else None


def _epoch(value: object, per_second: int) -> datetime | None:
    """A UTC time from an epoch in seconds (``per_second=1``) or milliseconds."""
    if value is None:
        return None
    kind = type(value)
    # NaN and infinities fail the range check below, so numbers need no other.
    number = value if kind is int or kind is float else _number(value)
    if number is None:
        return None
    seconds = number / per_second
    if not _MIN_EPOCH_S <= seconds <= _MAX_EPOCH_S:
        return None
    return _times.get(seconds) or _utc(seconds)


# The same start and end times come back in every snapshot while a build is
# shown: each epoch becomes a datetime once, and equal times are then the same
# object, which also makes comparing build rows cheaper. Bounded: emptied
# when full (a few hours of a busy tenant).
_times: dict[float, datetime] = {}
_MAX_TIMES = 100_000


def _utc(seconds: float) -> datetime:
    if len(_times) >= _MAX_TIMES:
        _times.clear()
    moment = _times[seconds] = datetime.fromtimestamp(seconds, UTC)
    return moment


def _duration(value: object, per_second: int) -> float | None:
    """Seconds from a duration in seconds or milliseconds; unknown if absurd."""
    if value is None:
        return None
    kind = type(value)
    number = value if kind is int or kind is float else _number(value)
    if number is None:
        return None
    seconds = number / per_second
    return seconds if 0 <= seconds <= _MAX_DURATION_S else None


def _queue_length(document: dict, key: str) -> int | None:
    value = document.get(key)
    return _int(value.get("length")) if isinstance(value, dict) else None


def _owner(value: object) -> str | None:
    if isinstance(value, dict):
        return _text(value.get("name")) or _text(value.get("username"))
    return _text(value)
