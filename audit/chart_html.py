"""The audit page's tables of numbers as HTML, formatted in Python: the event-volume chart (a
server-side SVG and its data table) and the vendor's calls per day.

The same markup the template drew (classed elements with presentation attributes only: the
CSP allows no ``style`` attribute and no script), built with ``core.html.html_format``, which
escapes every value; a template loop cost more than the page's queries.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils.safestring import SafeString

from audit.chart import Chart
from core.html import html_format, html_join

_NO_EVENTS = SafeString('<p class="hint">No events in this range.</p>')
_ERROR_ROW = SafeString(' class="audit-error-row"')


def _rect(css_class: str, x, y, width, height) -> SafeString | str:
    """One stacked part of a bar, or nothing when it has no height."""
    if not height:
        return ""
    return html_format(
        '<rect class="{css_class}" x="{x}" y="{y}" width="{width}" height="{height}"/>',
        css_class=css_class,
        x=_num(x),
        y=_num(y),
        width=_num(width),
        height=_num(height),
    )


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M}"


def _num(value) -> str:
    """A coordinate as SVG wants it: ``str`` (never localized, never grouped)."""
    return str(value)


def summary(chart: Chart) -> str:
    """ "12 events, 1 error, from … to … UTC": what the chart shows, in words."""
    return (
        f"{chart.events} event{_s(chart.events)}, {chart.errors} of them error{_s(chart.errors)}, "
        f"from {_when(chart.window.start)} to {_when(chart.window.end)} UTC."
    )


def caption(chart: Chart) -> str:
    """The line above the chart: totals, unit and range (and whether the range was clipped)."""
    clipped = (
        f" The range is longer than the chart can show: these are its last {chart.max_days} days."
        if chart.window.clipped
        else ""
    )
    return (
        f"{chart.events} event{_s(chart.events)}, {chart.errors} error{_s(chart.errors)}, "
        f"by {chart.unit}, from {_when(chart.window.start)} to {_when(chart.window.end)} UTC."
        f"{clipped}"
    )


def render_chart(chart: Chart) -> SafeString:
    """The ``<figure>`` with the SVG, and the data table for screen readers and copying."""
    busiest = chart.busiest
    description = summary(chart) + (
        f" Busiest {chart.unit}: {busiest.label} with {busiest.events} event{_s(busiest.events)}."
        if busiest
        else ""
    )
    grid = html_join(
        "",
        (
            html_format(
                '<line class="chart-grid" x1="{x1}" x2="{x2}" y1="{y}" y2="{y}"/>'
                '<text class="chart-axis" x="{x}" y="{y}" text-anchor="end" '
                'dominant-baseline="middle">{value}</text>',
                x1=chart.left,
                x2=chart.right_edge,
                y=_num(t.y),
                x=chart.left - 6,
                value=t.value,
            )
            for t in chart.y_ticks
        ),
    )
    bars = html_join(
        "",
        (
            html_format(
                '<g class="chart-bar"><title>{label} UTC: {events} event{s}, {errors} error{es}'
                "</title>{ok}{failed}</g>",
                label=bar.label,
                events=bar.events,
                s=_s(bar.events),
                errors=bar.errors,
                es=_s(bar.errors),
                ok=_rect("chart-bar-ok", bar.x, bar.ok_y, bar.width, bar.ok_height),
                failed=_rect("chart-bar-error", bar.x, bar.error_y, bar.width, bar.error_height),
            )
            for bar in chart.bars
            if bar.events
        ),
    )
    labels = html_join(
        "",
        (
            html_format(
                '<text class="chart-axis" x="{x}" y="{y}" text-anchor="middle">{text}</text>',
                x=_num(label.x),
                y=chart.height - 8,
                text=label.text,
            )
            for label in chart.x_labels
        ),
    )
    figure = html_format(
        '<figure class="volume-chart">'
        '<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-labelledby="volume-title volume-desc" focusable="false">'
        '<title id="volume-title">Audit events by {unit}{stacked}</title>'
        '<desc id="volume-desc">{description}</desc>{grid}{bars}'
        '<line class="chart-baseline" x1="{left}" x2="{right}" y1="{base}" y2="{base}"/>'
        "{labels}</svg>"
        '<figcaption><ul class="chart-legend" aria-hidden="true">'
        '<li><span class="chart-swatch chart-swatch-ok"></span> Events without errors</li>'
        '<li><span class="chart-swatch chart-swatch-error"></span> Errors</li></ul>'
        "{empty}</figcaption></figure>",
        w=chart.width,
        h=chart.height,
        unit=chart.unit,
        stacked=", errors stacked at the base" if chart.errors else "",
        description=description,
        grid=grid,
        bars=bars,
        left=chart.left,
        right=chart.right_edge,
        base=chart.baseline,
        labels=labels,
        empty=_NO_EVENTS if chart.is_empty else "",
    )
    if chart.is_empty:
        return figure
    table = html_format(
        '<details class="chart-data"><summary>Show the chart\'s data as a table</summary>'
        '<table class="table"><caption>Events by {unit} (UTC); {unit}s without events are '
        'left out.</caption><thead><tr><th scope="col">{Unit} starting</th>'
        '<th scope="col">Events</th><th scope="col">Errors</th></tr></thead>'
        "<tbody>{rows}</tbody></table></details>",
        unit=chart.unit,
        Unit=chart.unit.capitalize(),
        rows=html_join(
            "",
            (
                html_format(
                    "<tr><td>{label}</td><td>{events}</td><td>{errors}</td></tr>",
                    label=bar.label,
                    events=bar.events,
                    errors=bar.errors,
                )
                for bar in chart.bars
                if bar.events
            ),
        ),
    )
    return html_join("", [figure, table])


def render_calls_by_day(reconciliation) -> SafeString:
    """The rows of the "vendor's calls, confirmed by your CloudTrail" table, newest day first."""
    return html_join(
        "\n",
        (
            html_format(
                '<tr data-day="{day}"{flag}><th scope="row"><time datetime="{day}">{day}</time>'
                "</th><td>{recorded}</td><td>{confirmed}</td><td>{awaiting}</td>"
                "<td>{unexplained}</td></tr>",
                day=f"{d.day:%Y-%m-%d}",
                flag=_ERROR_ROW if d.unexplained else "",
                recorded=d.recorded,
                confirmed=d.confirmed,
                awaiting=d.awaiting,
                unexplained=d.unexplained,
            )
            for d in reconciliation.days
        ),
    )
