"""Timeline charts drawn on the server as SVG: a signal's recent values over the person's own
baseline band (`careloop.personal_band`), with the numbers also said in words.

Every chart is an `<svg role="img">` whose `<title>` says what a sighted reader sees (latest
value, band, how far outside, units), and the same sentence is printed under the chart, so
nothing depends on seeing the shading or its colour. Points outside the band are drawn as
hollow rings as well as filled dots, so they differ by shape, not by colour alone.

The SVG is assembled here from numbers and from text escaped with `xml.sax.saxutils`, and only
then marked safe for the template: no text from the data reaches the page unescaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr

from markupsafe import Markup

from careloop.personal_band import BAND_WIDTH_SD, RECENT, ChartSignal, Point, SignalSeries

WIDTH = 640
HEIGHT = 180
LEFT = 56  # room for the value labels
RIGHT = 12
TOP = 14
BOTTOM = 28  # room for the time labels


@dataclass(frozen=True)
class Chart:
    """One rendered chart: the SVG and the sentence that says it in words."""

    key: str
    name: str
    unit: str
    svg: Markup
    summary: str
    band_text: str  # the band or "not enough data for a personal baseline"
    window_text: str


def number(value: float, decimals: int) -> str:
    """A value as a clinician writes it: thousands grouped, no trailing noise."""
    return f"{value:,.{decimals}f}"


def with_unit(value: float, signal: ChartSignal) -> str:
    return f"{number(value, signal.decimals)} {signal.unit_text}"


def when(moment: datetime, daily: bool) -> str:
    return moment.strftime("%d %b %Y") if daily else moment.strftime("%d %b %Y %H:%M UTC")


def band_text(series: SignalSeries) -> str:
    signal, band = series.signal, series.band
    if band is None:
        need = "days" if signal.kind == "device" else "readings"
        return (
            f"Not enough data for a personal baseline ({series.reference_count} earlier "
            f"{need} to learn from)."
        )
    what = "days" if signal.kind == "device" else "readings"
    daily = signal.kind == "device"
    return (
        f"Usual band {number(band.low, signal.decimals)} to "
        f"{with_unit(band.high, signal)} (median {with_unit(band.median, signal)} ± "
        f"{BAND_WIDTH_SD:g} robust SD, from {band.count} {what} between "
        f"{when(band.start, daily)} and {when(band.end, daily)})."
    )


def latest_text(series: SignalSeries) -> str:
    """The one-line summary: latest value, and where it lies against the band."""
    signal, band, latest = series.signal, series.band, series.latest
    if latest is None:
        return f"{signal.name}: no readings in this window."
    daily = signal.kind == "device"
    text = f"{signal.name}: latest {with_unit(latest.value, signal)} ({when(latest.time, daily)})"
    if band is None:
        return text + "; no personal baseline yet."
    distance = band.distance(latest.value)
    if distance == 0:
        text += "; within the usual band"
    else:
        side = "above" if distance > 0 else "below"
        text += (
            f"; {with_unit(abs(distance), signal)} {side} the usual band "
            f"({abs(band.z(latest.value)):.1f} robust SD from the median)"
        )
    shown = len(series.points)
    text += f". {series.outside} of {shown} values shown are outside the band."
    return text


def window_text(series: SignalSeries) -> str:
    daily = series.signal.kind == "device"
    span = "the latest 60 days, one value per day" if daily else "the latest 72 hours"
    return f"{span}: {when(series.start, daily)} to {when(series.end, daily)}"


def render_chart(series: SignalSeries) -> Chart:
    signal = series.signal
    summary = latest_text(series)
    band = band_text(series)
    title = f"{signal.name} in {signal.unit_text}, {window_text(series)}. {summary} {band}"
    return Chart(
        key=signal.key,
        name=signal.name,
        unit=signal.unit_text,
        svg=Markup(_svg(series, title)),  # noqa: S704 - built from escaped text and numbers
        summary=summary,
        band_text=band,
        window_text=window_text(series),
    )


def _svg(series: SignalSeries, title: str) -> str:
    signal, band = series.signal, series.band
    values = [p.value for p in series.points]
    if band is not None:
        values += [band.low, band.high]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-9:
        low, high = low - 1, high + 1
    pad = (high - low) * 0.08
    low, high = low - pad, high + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = (series.end - series.start).total_seconds() or 1.0

    def x(moment: datetime) -> float:
        share = (moment - series.start).total_seconds() / span
        return LEFT + max(0.0, min(1.0, share)) * plot_w

    def y(value: float) -> float:
        return TOP + (high - value) / (high - low) * plot_h

    ident = f"chart-{_slug(signal.key)}"
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{ident}-title" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{ident}-title">{escape(title)}</title>',
    ]
    if band is not None:
        top, bottom = y(min(band.high, high)), y(max(band.low, low))
        parts.append(
            f'<rect class="band" x="{LEFT}" y="{top:.1f}" width="{plot_w}" '
            f'height="{max(bottom - top, 1):.1f}" fill="#dbe9f6"/>'
        )
        parts.append(
            f'<line class="median" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(band.median):.1f}" '
            f'y2="{y(band.median):.1f}" stroke="#6b8fb3" stroke-dasharray="4 3"/>'
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" '
        'stroke="#6b6b6b"/>'
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" '
        f'y2="{TOP + plot_h}" stroke="#6b6b6b"/>'
    )
    for value in (high - pad, low + pad):
        parts.append(
            f'<text x="{LEFT - 4}" y="{y(value) + 4:.1f}" text-anchor="end">'
            f"{escape(number(value, signal.decimals))}</text>"
        )
    parts.append(
        f'<text x="{LEFT - 4}" y="{TOP - 3}" text-anchor="end">{escape(signal.unit_text)}</text>'
    )
    recent_from = series.end - RECENT[signal.kind]
    if band is not None and series.start < recent_from:  # the band is learnt before this line
        rx = x(recent_from)
        parts.append(
            f'<line class="recent" x1="{rx:.1f}" x2="{rx:.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
            'stroke="#4a4a4a" stroke-dasharray="2 3"/>'
            f'<text x="{rx + 3:.1f}" y="{TOP + 10}">recent</text>'
        )
    daily = signal.kind == "device"
    parts.append(
        f'<text x="{LEFT}" y="{HEIGHT - 8}">{escape(when(series.start, daily))}</text>'
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">'
        f"{escape(when(series.end, daily))}</text>"
    )
    if len(series.points) > 1:
        coords = " ".join(f"{x(p.time):.1f},{y(p.value):.1f}" for p in series.points)
        parts.append(
            f'<polyline class="line" points={quoteattr(coords)} fill="none" '
            'stroke="#0b4f8a" stroke-width="2"/>'
        )
    parts.extend(_marker(p, x(p.time), y(p.value), series) for p in series.points)
    parts.append("</svg>")
    return "".join(parts)


def _marker(point: Point, cx: float, cy: float, series: SignalSeries) -> str:
    outside = series.band is not None and series.band.distance(point.value) != 0
    if outside:  # a ring around the dot: outside the band, told by shape as well as colour
        return (
            f'<circle class="outside" cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="none" '
            f'stroke="#a4161a" stroke-width="2"/>'
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2" fill="#a4161a"/>'
        )
    return f'<circle class="dot" cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" fill="#0b4f8a"/>'


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text)[:40]
