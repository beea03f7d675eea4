"""A chart of one signal against the person's own baseline: the picture an alert explains itself
with.

The nurse reading an alert asks "is this really unusual for this person, and since when?". The
chart answers at a glance: the daily values as a line with dots, the person's usual value (the
baseline median the value was judged against, as it stood before that day) as a dashed line,
the usual range (median +/- `band_sd` robust deviations) shaded, days outside it drawn hollow and
in a warning colour, and the days since the pattern began marked.

The SVG is self-contained (no fonts, scripts, styles or images from elsewhere; no JavaScript), so
it can be stored in a FHIR Media, served under a strict Content-Security-Policy and shown in any
EHR. Every piece of text is XML-escaped, and characters XML cannot carry are dropped, so a hostile
title cannot break out of the document. A screen reader gets the title, and a description that
says in words what the picture shows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from xml.sax.saxutils import escape

from careloop.monitoring.baseline import Deviation

WIDTH, HEIGHT = 640, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 40, 64  # margins around the plot area
FONT = 'font-family="sans-serif"'  # a generic family: nothing is fetched
# Colours chosen to stay apart for common colour-vision deficiencies (Okabe-Ito palette); the
# outside-the-range dots differ in shape too (hollow), so colour is never the only cue.
VALUE_COLOUR = "#0072B2"
OUTSIDE_COLOUR = "#D55E00"
BASELINE_COLOUR = "#555555"
BAND_COLOUR = "#009E73"
SINCE_COLOUR = "#E69F00"
MAX_DATE_LABELS = 7
# Characters XML 1.0 cannot hold at all (escaping does not help): C0 controls other than tab,
# newline and carriage return, lone surrogates, and the two non-characters U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class ChartPoint:
    """One day: the day's value and the baseline (median, robust scale) it was judged against."""

    day: date
    value: float
    median: float
    scale: float


def chart_points(days: Sequence[tuple[date, Deviation]]) -> list[ChartPoint]:
    """The history's plausible days as chart points (an implausible value is a device or unit
    error: drawing it would show a spike that never happened)."""
    return [
        ChartPoint(day, deviation.value, deviation.median, deviation.scale)
        for day, deviation in days
        if deviation.plausible
    ]


def text(value: str) -> str:
    """`value` safe as XML character data or as a double- or single-quoted attribute."""
    return escape(_NOT_XML.sub("", value), {'"': "&quot;", "'": "&apos;"})


def render_baseline_chart(
    title: str,
    unit: str,
    points: Sequence[ChartPoint],
    since: date | None,
    band_sd: float = 2.0,
) -> str:
    """A self-contained, accessible SVG of `points` against their baseline band (see the module
    docstring). With fewer than two usable days, a small SVG saying there is not enough data."""
    if not (math.isfinite(band_sd) and band_sd > 0):
        raise ValueError(f"band_sd must be a positive number, got {band_sd}")
    usable = _usable(points)
    if len(usable) < 2:
        return _not_enough_data(title, len(usable))
    frame = _Frame.fit(usable, band_sd)
    description = describe_chart(title, unit, usable, since, band_sd)
    parts = [
        _open_svg(title, description, WIDTH, HEIGHT),
        f'<text x="{LEFT}" y="22" font-size="15" font-weight="bold" {FONT}>{text(title)}</text>',
        *_since_marker(frame, since),
        _band(frame, usable, band_sd),
        *_axes(frame, unit),
        _baseline_line(frame, usable),
        *_value_lines(frame, usable),
        *_dots(frame, usable, unit, band_sd),
        *_legend(band_sd, since is not None),
        "</svg>",
    ]
    return "\n".join(part for part in parts if part)


def describe_chart(
    title: str, unit: str, points: Sequence[ChartPoint], since: date | None, band_sd: float
) -> str:
    """In words, what the chart shows (its <desc>, read by screen readers)."""
    first, last = points[0], points[-1]
    outside = sum(1 for point in points if _outside(point, band_sd))
    low, high = last.median - band_sd * last.scale, last.median + band_sd * last.scale
    sentences = [
        f"{title}.",
        f"Daily values from {_long_day(first.day)} to {_long_day(last.day)} "
        f"({len(points)} days with data).",
        f"Latest {_number(last.value)} {unit} on {_long_day(last.day)}, against this person's "
        f"usual {_number(last.median)} {unit} (usual range {_number(low)} to {_number(high)} "
        f"{unit}, {_number(band_sd)} deviations either side).",
        f"{outside} of {len(points)} days lie outside the usual range.",
    ]
    if since is not None:
        sentences.append(f"The days since {_long_day(since)} are marked.")
    return " ".join(sentences)


# ----- layout ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """Maps days and values to pixels inside the plot area."""

    first: date
    last: date
    low: float
    high: float

    @classmethod
    def fit(cls, points: Sequence[ChartPoint], band_sd: float) -> _Frame:
        values = [point.value for point in points]
        lows = [point.median - band_sd * point.scale for point in points]
        highs = [point.median + band_sd * point.scale for point in points]
        low, high = min(*values, *lows), max(*values, *highs)
        span = high - low
        # a flat chart (every value the same) still needs a visible height
        flat = span <= 1e-9 * max(1.0, abs(high))
        pad = max(abs(high) * 0.05, 1.0) if flat else span * 0.08
        return cls(points[0].day, points[-1].day, low - pad, high + pad)

    def x(self, day: date) -> float:
        span = max((self.last - self.first).days, 1)
        return LEFT + (WIDTH - LEFT - RIGHT) * (day - self.first).days / span

    def y(self, value: float) -> float:
        return TOP + (HEIGHT - TOP - BOTTOM) * (self.high - value) / (self.high - self.low)

    @property
    def bottom(self) -> float:
        return HEIGHT - BOTTOM


def _usable(points: Sequence[ChartPoint]) -> list[ChartPoint]:
    """Finite points in day order, one per day (the last given for a day wins)."""
    by_day: dict[date, ChartPoint] = {}
    for point in points:
        if all(math.isfinite(v) for v in (point.value, point.median, point.scale)):
            by_day[point.day] = point
    return [by_day[day] for day in sorted(by_day)]


def _outside(point: ChartPoint, band_sd: float) -> bool:
    return abs(point.value - point.median) > band_sd * point.scale


def _xy(x: float, y: float) -> str:
    return f"{x:.1f},{y:.1f}"


# ----- pieces ------------------------------------------------------------------------------------


def _open_svg(title: str, description: str, width: int, height: int) -> str:
    label = text(title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{label}" '
        'aria-describedby="chart-desc">\n'
        f'<title id="chart-title">{label}</title>\n'
        f'<desc id="chart-desc">{text(description)}</desc>\n'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>'
    )


def _not_enough_data(title: str, count: int) -> str:
    message = "Not enough data to draw a chart"
    detail = f"{count} day with data" if count == 1 else f"{count} days with data"
    description = f"{title}. {message}: {detail}, and at least 2 are needed."
    return "\n".join(
        [
            _open_svg(title, description, 320, 80),
            f'<text x="12" y="28" font-size="13" font-weight="bold" {FONT}>{text(title)}</text>',
            f'<text x="12" y="54" font-size="12" {FONT}>{message} ({detail}).</text>',
            "</svg>",
        ]
    )


def _since_marker(frame: _Frame, since: date | None) -> list[str]:
    """A shaded span from `since` (or the chart's start, if earlier) to the latest day."""
    if since is None or since > frame.last:
        return []
    start = frame.x(max(since, frame.first))
    right = WIDTH - RIGHT
    roomy = start < right - 90
    return [
        f'<rect class="since" x="{start:.1f}" y="{TOP}" width="{max(right - start, 2.0):.1f}" '
        f'height="{frame.bottom - TOP:.1f}" fill="{SINCE_COLOUR}" fill-opacity="0.14"/>',
        f'<line x1="{start:.1f}" y1="{TOP}" x2="{start:.1f}" y2="{frame.bottom:.1f}" '
        f'stroke="{SINCE_COLOUR}" stroke-width="1.5"/>',
        # the label goes right of the line, or left of it when the span is too narrow
        f'<text x="{start + 4 if roomy else start - 4:.1f}" y="{TOP + 12}" font-size="11" '
        f'{FONT} text-anchor="{"start" if roomy else "end"}">'
        f"since {text(_short_day(since))}</text>",
    ]


def _band(frame: _Frame, points: Sequence[ChartPoint], band_sd: float) -> str:
    """The usual range as one polygon: the upper edge left to right, the lower edge back."""
    upper = [_xy(frame.x(p.day), frame.y(p.median + band_sd * p.scale)) for p in points]
    lower = [_xy(frame.x(p.day), frame.y(p.median - band_sd * p.scale)) for p in reversed(points)]
    return (
        f'<polygon class="band" points="{" ".join(upper + lower)}" fill="{BAND_COLOUR}" '
        'fill-opacity="0.18" stroke="none"/>'
    )


def _baseline_line(frame: _Frame, points: Sequence[ChartPoint]) -> str:
    coordinates = " ".join(_xy(frame.x(p.day), frame.y(p.median)) for p in points)
    return (
        f'<polyline class="baseline" points="{coordinates}" fill="none" '
        f'stroke="{BASELINE_COLOUR}" stroke-width="1.5" stroke-dasharray="6 4"/>'
    )


def _value_lines(frame: _Frame, points: Sequence[ChartPoint]) -> list[str]:
    """One line per run of consecutive days: a missing day is a gap, not a straight line."""
    runs: list[list[ChartPoint]] = [[points[0]]]
    for point in points[1:]:
        if (point.day - runs[-1][-1].day).days == 1:
            runs[-1].append(point)
        else:
            runs.append([point])
    lines = []
    for run in runs:
        if len(run) > 1:
            coordinates = " ".join(_xy(frame.x(p.day), frame.y(p.value)) for p in run)
            lines.append(
                f'<polyline class="values" points="{coordinates}" fill="none" '
                f'stroke="{VALUE_COLOUR}" stroke-width="2"/>'
            )
    return lines


def _dots(frame: _Frame, points: Sequence[ChartPoint], unit: str, band_sd: float) -> list[str]:
    """A dot per day, hollow and orange when outside the usual range, each with a tooltip."""
    dots = []
    for point in points:
        outside = _outside(point, band_sd)
        deviations = (point.value - point.median) / point.scale if point.scale > 0 else 0.0
        tip = (
            f"{_long_day(point.day)}: {_number(point.value)} {unit} (usual "
            f"{_number(point.median)} {unit}, {deviations:+.1f} SD)"
        )
        look = (
            f'class="point outside" fill="#ffffff" stroke="{OUTSIDE_COLOUR}" stroke-width="2.5"'
            if outside
            else f'class="point" fill="{VALUE_COLOUR}" stroke="#ffffff" stroke-width="1"'
        )
        dots.append(
            f'<circle cx="{frame.x(point.day):.1f}" cy="{frame.y(point.value):.1f}" r="4.5" '
            f"{look}><title>{text(tip)}</title></circle>"
        )
    return dots


def _axes(frame: _Frame, unit: str) -> list[str]:
    left, right, bottom = LEFT, WIDTH - RIGHT, frame.bottom
    parts = [
        f'<line x1="{left}" y1="{TOP}" x2="{left}" y2="{bottom:.1f}" stroke="#333333"/>',
        f'<line x1="{left}" y1="{bottom:.1f}" x2="{right}" y2="{bottom:.1f}" stroke="#333333"/>',
        f'<text x="14" y="{(TOP + bottom) / 2:.1f}" font-size="12" {FONT} text-anchor="middle" '
        f'transform="rotate(-90 14 {(TOP + bottom) / 2:.1f})">{text(unit)}</text>',
    ]
    for value in _nice_ticks(frame.low, frame.high):
        y = frame.y(value)
        parts.append(
            f'<line x1="{left - 4}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#dddddd"/>'
        )
        parts.append(
            f'<text x="{left - 7}" y="{y + 4:.1f}" font-size="11" {FONT} '
            f'text-anchor="end">{text(_number(value))}</text>'
        )
    for day in _date_ticks(frame.first, frame.last):
        x = frame.x(day)
        parts.append(f'<line x1="{x:.1f}" y1="{bottom:.1f}" x2="{x:.1f}" y2="{bottom + 4:.1f}" '
                     'stroke="#333333"/>')  # fmt: skip
        parts.append(
            f'<text x="{x:.1f}" y="{bottom + 17:.1f}" font-size="11" {FONT} '
            f'text-anchor="middle">{text(_short_day(day))}</text>'
        )
    return parts


def _legend(band_sd: float, with_since: bool) -> list[str]:
    y = HEIGHT - 14
    items = [
        f'<line x1="{LEFT}" y1="{y - 4}" x2="{LEFT + 18}" y2="{y - 4}" stroke="{VALUE_COLOUR}" '
        'stroke-width="2"/>',
        f'<text x="{LEFT + 22}" y="{y}" font-size="11" {FONT}>daily value</text>',
        f'<line x1="{LEFT + 94}" y1="{y - 4}" x2="{LEFT + 112}" y2="{y - 4}" '
        f'stroke="{BASELINE_COLOUR}" stroke-width="1.5" stroke-dasharray="6 4"/>',
        f'<text x="{LEFT + 116}" y="{y}" font-size="11" {FONT}>usual (own baseline)</text>',
        f'<rect x="{LEFT + 234}" y="{y - 10}" width="18" height="10" fill="{BAND_COLOUR}" '
        'fill-opacity="0.3"/>',
        f'<text x="{LEFT + 256}" y="{y}" font-size="11" {FONT}>usual range '
        f"(&#177;{text(_number(band_sd))} SD)</text>",
    ]
    if with_since:
        items += [
            f'<rect x="{LEFT + 376}" y="{y - 10}" width="18" height="10" fill="{SINCE_COLOUR}" '
            'fill-opacity="0.3"/>',
            f'<text x="{LEFT + 398}" y="{y}" font-size="11" {FONT}>since the pattern began</text>',
        ]
    return items


# ----- ticks and words ---------------------------------------------------------------------------


def _nice_ticks(low: float, high: float, wanted: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) spanning [low, high]."""
    raw = (high - low) / wanted
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    count = int((high - first) // step) + 1
    return [round(first + i * step, 10) for i in range(count)]


def _date_ticks(first: date, last: date) -> list[date]:
    """At most `MAX_DATE_LABELS` evenly spaced days, starting at the first."""
    span = (last - first).days
    step = max(1, math.ceil((span + 1) / MAX_DATE_LABELS))
    return [first + timedelta(days=offset) for offset in range(0, span + 1, step)]


def _number(value: float) -> str:
    """Readable at a glance: whole numbers from 100 up (thousands grouped), else one decimal
    place, dropping a trailing '.0'."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    rounded = f"{value:.1f}"
    return ("0.0" if rounded == "-0.0" else rounded).removesuffix(".0")


def _short_day(day: date) -> str:
    return f"{day.day} {day:%b}"


def _long_day(day: date) -> str:
    return f"{day.day} {day:%b %Y}"
