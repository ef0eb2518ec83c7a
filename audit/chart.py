"""The event-volume chart: buckets chosen from the range, geometry for a server-side SVG.

Pure functions over ``{bucket start: (events, errors)}`` (one aggregate query, see
``audit.selectors.event_volume``). The template draws the bars as classed ``<rect>`` elements
with presentation attributes only: the CSP allows no ``style`` attribute and no script.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

HOUR = "hour"
DAY = "day"
DEFAULT_HOURS = 24  # shown when the admin gives no start: this hour and the 23 before
MAX_HOURLY_SPAN = timedelta(days=3)  # longer ranges are drawn by day
MAX_DAYS = 92  # longer ranges: the chart shows their most recent 92 days

WIDTH = 800
HEIGHT = 220
LEFT = 48  # room for the y-axis labels
RIGHT = 8
TOP = 12
BOTTOM = 28  # room for the x-axis labels
PLOT_W = WIDTH - LEFT - RIGHT
PLOT_H = HEIGHT - TOP - BOTTOM
X_LABELS = 6
STEP = {HOUR: timedelta(hours=1), DAY: timedelta(days=1)}


@dataclass(frozen=True)
class ChartWindow:
    start: datetime
    end: datetime
    unit: str
    clipped: bool = False  # the range was longer than MAX_DAYS: only its end is drawn

    @property
    def first_bucket(self) -> datetime:
        return truncate(self.start, self.unit)

    def buckets(self) -> list[datetime]:
        step, bucket, last = STEP[self.unit], self.first_bucket, truncate(self.end, self.unit)
        out = []
        while bucket <= last:
            out.append(bucket)
            bucket += step
        return out


def truncate(moment: datetime, unit: str) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if unit == DAY else moment


def chart_window(*, start: datetime | None, end: datetime | None, now: datetime) -> ChartWindow:
    """The drawn range: the filter's range, else the last 24 hours; by hour up to 3 days.

    The chart counts every event of its range (one aggregate query over the same indexes as
    the list), so its cost grows with the range: the default stays at a day, and a range
    longer than ``MAX_DAYS`` is drawn for its most recent days only.
    """
    end = end or now
    start = start or truncate(end, HOUR) - timedelta(hours=DEFAULT_HOURS - 1)
    if end - start <= MAX_HOURLY_SPAN:
        return ChartWindow(start, end, HOUR)
    earliest = truncate(end, DAY) - timedelta(days=MAX_DAYS - 1)
    if start < earliest:
        return ChartWindow(earliest, end, DAY, clipped=True)
    return ChartWindow(start, end, DAY)


@dataclass(frozen=True)
class Bar:
    start: datetime
    events: int
    errors: int
    x: float
    width: float
    ok_y: float
    ok_height: float
    error_y: float
    error_height: float
    label: str

    @property
    def ok(self) -> int:
        return self.events - self.errors


@dataclass(frozen=True)
class Tick:
    value: int
    y: float


@dataclass(frozen=True)
class Label:
    text: str
    x: float


@dataclass(frozen=True)
class Chart:
    window: ChartWindow
    bars: list[Bar]
    y_ticks: list[Tick]
    x_labels: list[Label]
    events: int
    errors: int
    busiest: Bar | None
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    baseline: int = TOP + PLOT_H
    right_edge: int = LEFT + PLOT_W
    max_days: int = MAX_DAYS

    @property
    def unit(self) -> str:
        return self.window.unit

    @property
    def is_empty(self) -> bool:
        return self.events == 0


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 × 10ⁿ at least ``value`` (and at least 1)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= value:
            return factor * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def format_bucket(moment: datetime, unit: str) -> str:
    return moment.strftime("%Y-%m-%d %H:00" if unit == HOUR else "%Y-%m-%d")


def _axis_label(moment: datetime, unit: str) -> str:
    return moment.strftime("%d %b %H:%M" if unit == HOUR else "%d %b")


def build_chart(window: ChartWindow, counts: dict[datetime, tuple[int, int]]) -> Chart:
    """Bars for every bucket of ``window`` (empty buckets included), errors stacked at the base."""
    buckets = window.buckets()
    values = [counts.get(bucket, (0, 0)) for bucket in buckets]
    top = nice_ceiling(max((events for events, _ in values), default=0))
    slot = PLOT_W / max(len(buckets), 1)
    gap = min(slot * 0.2, 4.0) if slot > 3 else 0.0
    scale = PLOT_H / top
    baseline = TOP + PLOT_H
    bars = []
    for index, (bucket, (events, errors)) in enumerate(zip(buckets, values, strict=True)):
        errors = min(errors, events)
        error_height = errors * scale
        ok_height = (events - errors) * scale
        bars.append(
            Bar(
                start=bucket,
                events=events,
                errors=errors,
                x=round(LEFT + index * slot + gap / 2, 2),
                width=round(slot - gap, 2),
                error_y=round(baseline - error_height, 2),
                error_height=round(error_height, 2),
                ok_y=round(baseline - error_height - ok_height, 2),
                ok_height=round(ok_height, 2),
                label=format_bucket(bucket, window.unit),
            )
        )
    y_ticks = [Tick(value, round(baseline - value * scale, 2)) for value in (0, top // 2, top)]
    if top == 1:
        y_ticks = [Tick(0, baseline), Tick(1, TOP)]
    every = max(1, math.ceil(len(buckets) / X_LABELS))
    x_labels = [
        Label(_axis_label(bar.start, window.unit), round(bar.x + bar.width / 2, 2))
        for bar in bars[::every]
    ]
    busiest = max(bars, key=lambda bar: bar.events, default=None)
    return Chart(
        window=window,
        bars=bars,
        y_ticks=y_ticks,
        x_labels=x_labels,
        events=sum(bar.events for bar in bars),
        errors=sum(bar.errors for bar in bars),
        busiest=busiest if busiest is not None and busiest.events else None,
    )
