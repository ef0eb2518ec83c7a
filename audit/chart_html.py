"""The event-volume chart as HTML: a server-side SVG and its data table, formatted in Python.

The same markup the template drew (classed elements with presentation attributes only: the
CSP allows no ``style`` attribute and no script), built with ``format_html``, which escapes
every value; a template loop cost more than the page's queries.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from audit.chart import Chart


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
    grid = format_html_join(
        "",
        '<line class="chart-grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
        '<text class="chart-axis" x="{}" y="{}" text-anchor="end" '
        'dominant-baseline="middle">{}</text>',
        (
            (chart.left, chart.right_edge, _num(t.y), _num(t.y), chart.left - 6, _num(t.y), t.value)
            for t in chart.y_ticks
        ),
    )
    bars = format_html_join(
        "",
        '<g class="chart-bar"><title>{} UTC: {} event{}, {} error{}</title>{}{}</g>',
        (
            (
                bar.label,
                bar.events,
                _s(bar.events),
                bar.errors,
                _s(bar.errors),
                format_html(
                    '<rect class="chart-bar-ok" x="{}" y="{}" width="{}" height="{}"/>',
                    _num(bar.x),
                    _num(bar.ok_y),
                    _num(bar.width),
                    _num(bar.ok_height),
                )
                if bar.ok_height
                else "",
                format_html(
                    '<rect class="chart-bar-error" x="{}" y="{}" width="{}" height="{}"/>',
                    _num(bar.x),
                    _num(bar.error_y),
                    _num(bar.width),
                    _num(bar.error_height),
                )
                if bar.error_height
                else "",
            )
            for bar in chart.bars
            if bar.events
        ),
    )
    labels = format_html_join(
        "",
        '<text class="chart-axis" x="{}" y="{}" text-anchor="middle">{}</text>',
        ((_num(label.x), chart.height - 8, label.text) for label in chart.x_labels),
    )
    figure = format_html(
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
        empty=mark_safe('<p class="hint">No events in this range.</p>')  # nosec B308 B703
        if chart.is_empty
        else "",
    )
    if chart.is_empty:
        return figure
    table = format_html(
        '<details class="chart-data"><summary>Show the chart\'s data as a table</summary>'
        '<table class="table"><caption>Events by {unit} (UTC); {unit}s without events are '
        'left out.</caption><thead><tr><th scope="col">{Unit} starting</th>'
        '<th scope="col">Events</th><th scope="col">Errors</th></tr></thead>'
        "<tbody>{rows}</tbody></table></details>",
        unit=chart.unit,
        Unit=chart.unit.capitalize(),
        rows=format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((bar.label, bar.events, bar.errors) for bar in chart.bars if bar.events),
        ),
    )
    return figure + table
