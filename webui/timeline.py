"""The timeline strip: items per pipeline over a day, and the polls that failed.

Built from the derived pipeline counts and the polls, never from bodies. The
day is cut into bins aligned on the clock; each bin shows, per pipeline, the
most items of any snapshot in force during it, and links to the snapshot in
force at its end. Runs of failed polls are gaps, drawn and told in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

SPAN = timedelta(hours=24)
BIN = timedelta(minutes=5)
MAX_LANES = 8
MAX_LABEL_CHARS = 16
# Geometry of the SVG, in its own units: a label column, then the plot.
WIDTH = 1000.0
PLOT_X = 120.0
PLOT_WIDTH = WIDTH - PLOT_X - 10
LANE_HEIGHT = 18.0
AXIS_HEIGHT = 16.0
_GAP_WORDS = {
    "failed": ("upstream unreachable", "failed"),
    "unparsed": ("upstream sent no Zuul status", "not parsed"),
}
# Poll outcomes that brought no status: shown as gaps.
GAP_OUTCOMES = tuple(_GAP_WORDS)


@dataclass(slots=True)
class TimelineData:
    """What the strip of one window is drawn from (see ``history_queries``)."""

    start: datetime
    end: datetime
    # The id of the last snapshot taken in each bin that has one; bin -1
    # holds the one in force when the window starts (see ``last_per_bin``).
    last_ids: dict[int, int]
    # (snapshot_id, pipeline, items) of those snapshots.
    last_counts: Sequence
    # (started_at, outcome, error) of the polls of the window, in order.
    polls: Sequence
    first_taken_at: datetime | None
    data_until: datetime | None


@dataclass(slots=True)
class Lane:
    pipeline: str
    most: int
    y: float
    path: str

    @property
    def label(self) -> str:
        """The pipeline's name, cut to fit the label column."""
        if len(self.pipeline) <= MAX_LABEL_CHARS:
            return self.pipeline
        return self.pipeline[: MAX_LABEL_CHARS - 1] + "…"


@dataclass(slots=True)
class Column:
    x: float
    width: float
    snapshot_id: int
    title: str


@dataclass(slots=True)
class Gap:
    """A run of polls that brought no status."""

    kind: str
    first_at: datetime
    last_at: datetime
    polls: int
    error: str | None
    # The next poll that brought a status again, when there was one.
    until: datetime | None = None
    x: float = 0.0
    width: float = 0.0
    text: str = ""


@dataclass(slots=True)
class Tick:
    x: float
    label: str


@dataclass(slots=True)
class Timeline:
    start: datetime
    end: datetime
    height: float
    plot_height: float
    first_taken_at: datetime | None = None
    data_until: datetime | None = None
    lanes: list[Lane] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    marker_x: float | None = None


def window(
    moment: datetime, data_until: datetime | None, span: timedelta = SPAN
) -> tuple[datetime, datetime]:
    """The ``span`` around ``moment``, on bin boundaries, not past the data's end."""
    # Times near the ends of the calendar (a bad clock, an odd import) are
    # drawn at the edge of what datetime can hold rather than overflowing.
    moment = min(max(moment, _EARLIEST + 2 * span), _LATEST - 2 * span)
    end = _ceil(moment + span / 2)
    if data_until is not None:
        data_until = min(max(data_until, _EARLIEST + 2 * span), _LATEST - 2 * span)
        end = min(end, max(_ceil(data_until), _ceil(moment + BIN / 2)))
    return end - span, end


def build(
    data: TimelineData,
    shown_at: datetime,
    zone: tzinfo = UTC,
    order: Sequence[str] = (),
) -> Timeline:
    """The strip of ``data``'s window; ``order`` ranks pipelines (the shown ones)."""
    start, end = data.start, data.end
    bins = int((end - start) / BIN)
    values, targets = _bin_values(data, start, end, bins)
    lanes = _lane_names(values, order)
    plot_height = LANE_HEIGHT * max(len(lanes), 1)
    timeline = Timeline(
        start,
        end,
        plot_height + AXIS_HEIGHT,
        plot_height,
        data.first_taken_at,
        data.data_until,
    )
    x_of = _scale(start, end)
    for index, pipeline in enumerate(lanes):
        series = values[pipeline]
        most = max(series)
        y = index * LANE_HEIGHT
        timeline.lanes.append(Lane(pipeline, most, y, _area(series, most, y, bins)))
    timeline.columns = _columns(targets, values, lanes, start, bins, zone)
    timeline.gaps = gaps(data.polls, zone)
    for gap in timeline.gaps:
        gap.x = x_of(max(gap.first_at, start))
        right = x_of(min(gap.until or gap.last_at + BIN / 5, end))
        gap.width = round(max(right - gap.x, 3.0), 1)
    timeline.ticks = _ticks(start, end, zone, x_of)
    if start <= shown_at <= end:
        timeline.marker_x = x_of(shown_at)
    return timeline


def gaps(polls: Sequence, zone: tzinfo = UTC) -> list[Gap]:
    """Runs of consecutive polls that failed (or brought no status), told in words."""
    runs: list[Gap] = []
    current: Gap | None = None
    for started_at, outcome, error in polls:
        if outcome not in GAP_OUTCOMES:
            if current is not None:
                current.until = started_at
            current = None
            continue
        if current is None or current.kind != outcome:
            if current is not None:
                current.until = started_at
            current = Gap(outcome, started_at, started_at, 0, None)
            runs.append(current)
        current.last_at = started_at
        current.polls += 1
        current.error = error or current.error
    for gap in runs:
        gap.text = describe_gap(gap, zone)
    return runs


def describe_gap(gap: Gap, zone: tzinfo = UTC) -> str:
    """``upstream unreachable 10:02-10:15, 14 polls failed (connection refused)``."""
    what, verb = _GAP_WORDS[gap.kind]
    when = _span(gap.first_at, gap.last_at, zone)
    polls = "1 poll" if gap.polls == 1 else f"{gap.polls} polls"
    reason = f" ({gap.error})" if gap.error else ""
    return f"{what} {when}, {polls} {verb}{reason}"


def last_per_bin(snapshots: Sequence) -> dict[int, int]:
    """The last snapshot id of each bin, from (id, seconds after start) in order."""
    bin_s = BIN.total_seconds()
    return {
        max(int(seconds // bin_s), -1): snapshot_id
        for snapshot_id, seconds in snapshots
    }


def _bin_values(
    data: TimelineData, start: datetime, end: datetime, bins: int
) -> tuple[dict[str, list[int]], list[int | None]]:
    """Items per pipeline at the end of each bin, and the snapshot in force then.

    The counts are those of the snapshot in force at the end of each bin: a
    sample every five minutes, read from one snapshot per bin.
    """
    counts: dict[int, dict[str, int]] = {}
    for snapshot_id, pipeline, items in data.last_counts:
        counts.setdefault(snapshot_id, {})[pipeline] = items
    names = {name for found in counts.values() for name in found}
    values = {name: [0] * bins for name in names}
    targets: list[int | None] = [None] * bins
    limit = min(end, data.data_until) if data.data_until else end
    known_bins = min(bins, int((limit - start) / BIN) + 1)
    in_force = data.last_ids.get(-1)
    for slot in range(known_bins):
        in_force = data.last_ids.get(slot, in_force)
        if in_force is None:
            continue
        targets[slot] = in_force
        for name, items in counts.get(in_force, {}).items():
            values[name][slot] = items
    return values, targets


def _lane_names(values: dict[str, list[int]], order: Sequence[str]) -> list[str]:
    rank = {name: index for index, name in enumerate(order)}
    busy = [name for name, series in values.items() if max(series) > 0]
    busy.sort(key=lambda name: (rank.get(name, len(rank)), -max(values[name]), name))
    return busy[:MAX_LANES]


def _area(series: list[int], most: int, y: float, bins: int) -> str:
    """An SVG path of the series as steps, in its lane, scaled to its own maximum."""
    step = PLOT_WIDTH / bins
    base = y + LANE_HEIGHT - 1
    scale = (LANE_HEIGHT - 3) / most if most else 0
    parts = [f"M{PLOT_X:g} {base:g}"]
    previous = None
    for index, value in enumerate(series):
        if value != previous:
            parts.append(f"H{PLOT_X + index * step:.1f}V{base - value * scale:.1f}")
            previous = value
    parts.append(f"H{PLOT_X + PLOT_WIDTH:g}V{base:g}Z")
    return "".join(parts)


def _columns(targets, values, lanes, start, bins, zone) -> list[Column]:
    """One link per run of bins that lead to the same snapshot."""
    step = PLOT_WIDTH / bins
    runs: list[list[int]] = []  # [first bin, last bin, snapshot id]
    for index, target in enumerate(targets):
        if target is None:
            continue
        if runs and runs[-1][2] == target and runs[-1][1] == index - 1:
            runs[-1][1] = index
        else:
            runs.append([index, index, target])
    columns = []
    for first, last, target in runs:
        shown = ", ".join(f"{name} {values[name][last]}" for name in lanes)
        since, until = start + first * BIN, start + (last + 1) * BIN
        when = _span(since, until, zone)
        x = round(PLOT_X + first * step, 1)
        width = round((last + 1 - first) * step, 1)
        columns.append(Column(x, width, target, f"{when} {shown}".strip()))
    return columns


def _ticks(start, end, zone, x_of) -> list[Tick]:
    """A label every three hours of the reader's clock."""
    ticks = []
    local = start.astimezone(zone).replace(minute=0, second=0, microsecond=0)
    moment = local + timedelta(hours=1)
    while moment.astimezone(UTC) < end:
        if moment.hour % 3 == 0:
            ticks.append(Tick(x_of(moment.astimezone(UTC)), moment.strftime("%H:%M")))
        moment = (moment.astimezone(UTC) + timedelta(hours=1)).astimezone(zone)
    return ticks


def _scale(start: datetime, end: datetime):
    seconds = (end - start).total_seconds()

    def x_of(moment: datetime) -> float:
        offset = (moment - start).total_seconds() / seconds
        return round(PLOT_X + offset * PLOT_WIDTH, 1)

    return x_of


def _span(since: datetime, until: datetime, zone: tzinfo) -> str:
    """``10:00-10:05`` in ``zone``, written so that it reads in order.

    A span over midnight names its days (one that ends at midnight ends at
    24:00), and one over a change of offset names the zone at each end.
    """
    first, last = since.astimezone(zone), until.astimezone(zone)
    first_text, last_text = first.strftime("%H:%M"), last.strftime("%H:%M")
    days_apart = (last.date() - first.date()).days
    if days_apart == 1 and last_text == "00:00":
        last_text, days_apart = "24:00", 0
    same_offset = first.utcoffset() == last.utcoffset()
    if first_text == last_text and not days_apart and same_offset:
        return first_text
    if same_offset and not days_apart:
        return f"{first_text}-{last_text}"
    if days_apart:
        first_text = first.strftime("%Y-%m-%d ") + first_text
        last_text = last.strftime("%Y-%m-%d ") + last_text
    if not same_offset:
        first_text += first.strftime(" %Z")
        last_text += last.strftime(" %Z")
    return f"{first_text} to {last_text}"


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _ceil(moment: datetime) -> datetime:
    """``moment`` rounded up to a bin boundary of the UTC clock."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    bins = -((epoch - moment) // BIN)
    return epoch + bins * BIN
