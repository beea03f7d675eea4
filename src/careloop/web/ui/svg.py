"""Small SVG drawings for the pages, made on the server: no script, no external asset.

Every function is pure and returns `markupsafe.Markup`, so a template prints it as is, and
every piece of text that goes into the drawing (titles, labels, numbers in words) is escaped
here, whatever it holds. Charts are images to assistive technology (`role="img"`) named by a
`<title>` that says the numbers in words: a chart is never the only place a number is told.

The building blocks (`LinearScale`, `points_attr`, `text_element`, `svg_element`) are shared
with the patient page's timeline charts; `sparkline` is the worklist's 24-hour trend.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import count

from markupsafe import Markup, escape

_ids = count(1)


def attr(value: object) -> str:
    """An attribute value, escaped (quotes included)."""
    return str(escape(str(value)))


def number(value: float) -> str:
    """A coordinate: two decimals at most, no trailing zeros, never 'nan'."""
    if not math.isfinite(value):
        raise ValueError("a coordinate must be a finite number")
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True)
class LinearScale:
    """Maps a data interval onto a pixel interval (either may run backwards, as y does)."""

    domain: tuple[float, float]
    pixels: tuple[float, float]

    def __call__(self, value: float) -> float:
        low, high = self.domain
        start, end = self.pixels
        if high == low:
            return (start + end) / 2
        return start + (value - low) * (end - start) / (high - low)

    @classmethod
    def over(cls, values: Iterable[float], pixels: tuple[float, float], *, pad: float = 0.0):  # noqa: ANN206
        """A scale whose domain spans `values` (widened by `pad` of its span on each side)."""
        finite = [value for value in values if math.isfinite(value)]
        if not finite:
            return cls((0.0, 1.0), pixels)
        low, high = min(finite), max(finite)
        span = (high - low) or abs(high) or 1.0
        return cls((low - pad * span, high + pad * span), pixels)


def points_attr(points: Iterable[tuple[float, float]]) -> str:
    """The `points` of a polyline."""
    return " ".join(f"{number(x)},{number(y)}" for x, y in points)


def runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """The unbroken stretches of a series with gaps (None or not finite): a line is drawn
    through each stretch, never across a gap, so missing data is not drawn as data."""
    found: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for index, value in enumerate(values):
        if value is None or not math.isfinite(value):
            if current:
                found.append(current)
            current = []
        else:
            current.append((index, float(value)))
    if current:
        found.append(current)
    return found


def text_element(x: float, y: float, text: object, *, css_class: str = "", anchor: str = "") -> str:
    """A <text> element with its content escaped."""
    extra = f' class="{attr(css_class)}"' if css_class else ""
    if anchor:
        extra += f' text-anchor="{attr(anchor)}"'
    return f'<text x="{number(x)}" y="{number(y)}"{extra}>{escape(str(text))}</text>'


def svg_element(
    body: Sequence[str],
    *,
    width: float,
    height: float,
    title: str,
    css_class: str,
    description: str = "",
) -> Markup:
    """The <svg> around already-built `body` elements (which must come from this module's
    builders, which escape), named for assistive technology by `title` (escaped here)."""
    number_id = next(_ids)
    title_id = f"svg-title-{number_id}"
    labelled = title_id
    parts = [f'<title id="{title_id}">{escape(title)}</title>']
    if description:
        desc_id = f"svg-desc-{number_id}"
        parts.append(f'<desc id="{desc_id}">{escape(description)}</desc>')
        labelled += f" {desc_id}"
    opening = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{attr(css_class)}" role="img" '
        f'aria-labelledby="{labelled}" width="{number(width)}" height="{number(height)}" '
        f'viewBox="0 0 {number(width)} {number(height)}" focusable="false">'
    )
    return Markup(opening + "".join(parts) + "".join(body) + "</svg>")


def percent_words(probability: float) -> str:
    return f"{probability * 100:.1f} percent"


def sparkline(
    values: Sequence[float | None],
    *,
    label: str,
    width: float = 120,
    height: float = 28,
    domain: tuple[float, float] | None = None,
    words: str | None = None,
    css_class: str = "spark",
) -> Markup:
    """A small trend line. `label` names what it shows ("Sepsis risk, last 24 hours");
    `words` says its numbers (by default: first, lowest, highest and last value, as percents of
    probabilities); `domain` fixes the vertical range (default: the values' own, padded).
    The last value is marked with a dot, so the current end is visible without colour."""
    pad = 3.0
    series = runs(values)
    finite = [value for run in series for _index, value in run]
    if words is None:
        words = _trend_words(values, finite)
    title = f"{label}: {words}"
    if not finite:
        return svg_element([], width=width, height=height, title=title, css_class=css_class)
    x = LinearScale((0, max(1, len(values) - 1)), (pad, width - pad))
    y = (
        LinearScale(domain, (height - pad, pad))
        if domain is not None
        else LinearScale.over(finite, (height - pad, pad), pad=0.1)
    )
    body = []
    for run in series:
        points = [(x(index), y(value)) for index, value in run]
        if len(points) == 1:
            continue
        body.append(f'<polyline class="line" points="{points_attr(points)}"/>')
    last_index, last_value = series[-1][-1]
    body.append(
        f'<circle class="dot" cx="{number(x(last_index))}" cy="{number(y(last_value))}" r="2.5"/>'
    )
    return svg_element(body, width=width, height=height, title=title, css_class=css_class)


def _trend_words(values: Sequence[float | None], finite: Sequence[float]) -> str:
    if not finite:
        return "no values"
    first, last = finite[0], finite[-1]
    missing = len(values) - len(finite)
    text = (
        f"{len(finite)} hourly values from {percent_words(first)} to {percent_words(last)}, "
        f"lowest {percent_words(min(finite))}, highest {percent_words(max(finite))}"
    )
    if missing:
        text += f"; {missing} {'hour' if missing == 1 else 'hours'} without a value"
    return text
