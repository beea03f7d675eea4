"""The chart of a signal against the person's baseline: a self-contained, accessible SVG that
parses as XML whatever its title says, draws the usual range where the numbers put it, marks the
days outside it and the days since the pattern began, and says so in words."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.monitoring.baseline import Deviation
from careloop.monitoring.chart import ChartPoint, chart_points, render_baseline_chart
from careloop.monitoring.signals import Signal

SVG_NS = "{http://www.w3.org/2000/svg}"
DAY0 = date(2024, 3, 1)


def steady_then_rising(days: int = 14, rise_from: int = 11, seed: int = 3) -> list[ChartPoint]:
    """Daily resting heart rate around 58 bpm (SD 1.2), 8 bpm higher from `rise_from`."""
    rng = random.Random(seed)
    return [
        ChartPoint(
            DAY0 + timedelta(days=day),
            58 + rng.gauss(0, 1.2) + (8 if day >= rise_from else 0),
            58.0 + 0.05 * day,
            1.6,
        )
        for day in range(days)
    ]


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    return root


def by_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if name in (e.get("class") or "").split()]


def coordinates(element: ET.Element) -> list[tuple[float, float]]:
    pairs = [pair.split(",") for pair in element.get("points", "").split()]
    return [(float(x), float(y)) for x, y in pairs]


def band_edges_at(band: ET.Element, x: float) -> tuple[float, float]:
    """The band's (top, bottom) pixel rows at column x: the polygon runs along the upper edge
    left to right and back along the lower edge."""
    rows = [y for px, y in coordinates(band) if abs(px - x) < 0.05]
    assert len(rows) == 2, rows
    return min(rows), max(rows)


def test_the_chart_is_accessible_self_contained_svg() -> None:
    svg = render_baseline_chart("Resting heart rate against the usual range", "bpm",
                                steady_then_rising(), DAY0 + timedelta(days=11))  # fmt: skip
    root = parse(svg)
    assert root.get("role") == "img"
    assert root.get("aria-label") == "Resting heart rate against the usual range"
    title, desc = root.find(f"{SVG_NS}title"), root.find(f"{SVG_NS}desc")
    assert title is not None and title.text == root.get("aria-label")
    assert desc is not None and root.get("aria-describedby") == desc.get("id")
    assert "Daily values from 1 Mar 2024 to 14 Mar 2024 (14 days with data)" in desc.text
    assert "3 of 14 days lie outside the usual range" in desc.text
    assert "The days since 12 Mar 2024 are marked" in desc.text
    # nothing to fetch, nothing to run
    assert not [e for e in root.iter() if e.tag.split("}")[-1] in ("script", "image", "style")]
    assert not [e for e in root.iter() for name in e.attrib if "href" in name or name[:2] == "on"]
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    # axis labels: the unit, and dates
    words = [e.text for e in root.iter(f"{SVG_NS}text")]
    assert "bpm" in words and "1 Mar" in words


def test_the_band_is_drawn_at_median_plus_minus_band_sd_scales() -> None:
    points = steady_then_rising()
    root = parse(render_baseline_chart("RHR", "bpm", points, None))
    (band,) = by_class(root, "band")
    (baseline,) = by_class(root, "baseline")
    dots = by_class(root, "point")
    assert len(dots) == len(points)
    for (x, y_median), point, dot in zip(coordinates(baseline), points, dots, strict=True):
        top, bottom = band_edges_at(band, x)
        # the median sits in the middle of the band (the scale is the same on both sides)
        assert top < y_median < bottom
        assert abs((y_median - top) - (bottom - y_median)) < 0.11
        # a dot is outside the band exactly when the value is more than 2 scales from the median
        outside = abs(point.value - point.median) > 2 * point.scale
        y_dot = float(dot.get("cy"))
        assert (not top <= y_dot <= bottom) == outside, point
        assert ("outside" in dot.get("class").split()) == outside


def test_a_wider_band_takes_the_same_day_inside() -> None:
    points = steady_then_rising()
    narrow = parse(render_baseline_chart("RHR", "bpm", points, None, band_sd=2.0))
    wide = parse(render_baseline_chart("RHR", "bpm", points, None, band_sd=6.0))
    assert len(by_class(narrow, "outside")) == 3
    assert by_class(wide, "outside") == []


def test_hostile_text_is_escaped_and_the_document_still_parses() -> None:
    hostile = "Heart <script>alert(\"x\")</script> & 'rate' ]]> \x00\x1b end"
    svg = render_baseline_chart(hostile, '<b onload="x">', steady_then_rising(), DAY0)
    root = parse(svg)
    assert not [e for e in root.iter() if e.tag.split("}")[-1] in ("script", "b")]
    expected = hostile.replace("\x00", "").replace("\x1b", "")
    assert root.get("aria-label") == expected
    assert root.find(f"{SVG_NS}title").text == expected
    assert '<b onload="x">' in [e.text for e in root.iter(f"{SVG_NS}text")]  # shown as text
    tiny = render_baseline_chart(hostile, "bpm", [], None)
    assert parse(tiny).find(f"{SVG_NS}title").text == expected


@pytest.mark.parametrize("count", [0, 1])
def test_too_little_data_gives_a_small_valid_svg_saying_so(count: int) -> None:
    root = parse(render_baseline_chart("SpO2", "%", steady_then_rising()[:count], DAY0))
    assert int(root.get("width")) < 640
    assert any("Not enough data" in (e.text or "") for e in root.iter(f"{SVG_NS}text"))
    assert "Not enough data" in root.find(f"{SVG_NS}desc").text
    assert by_class(root, "band") == []


def test_the_days_since_the_pattern_began_are_marked_from_that_day() -> None:
    points = steady_then_rising()
    root = parse(render_baseline_chart("RHR", "bpm", points, DAY0 + timedelta(days=11)))
    (since,) = by_class(root, "since")
    xs = [x for x, _ in coordinates(by_class(root, "baseline")[0])]
    assert float(since.get("x")) == pytest.approx(xs[11], abs=0.05)
    assert float(since.get("x")) + float(since.get("width")) == pytest.approx(xs[-1], abs=0.05)
    # a start before the first day shades the whole chart; none, or one after it, marks nothing
    early = parse(render_baseline_chart("RHR", "bpm", points, DAY0 - timedelta(days=3)))
    assert float(by_class(early, "since")[0].get("x")) == pytest.approx(xs[0], abs=0.05)
    assert by_class(parse(render_baseline_chart("RHR", "bpm", points, None)), "since") == []
    late = DAY0 + timedelta(days=30)
    assert by_class(parse(render_baseline_chart("RHR", "bpm", points, late)), "since") == []


def test_a_missing_day_breaks_the_line_and_bad_points_are_left_out() -> None:
    points = [p for p in steady_then_rising() if p.day != DAY0 + timedelta(days=5)]
    points.append(ChartPoint(DAY0 + timedelta(days=20), float("nan"), 58.0, 1.6))
    root = parse(render_baseline_chart("RHR", "bpm", points, None))
    lines = by_class(root, "values")
    assert [len(coordinates(line)) for line in lines] == [5, 8]
    assert len(by_class(root, "point")) == 13  # the NaN day is not drawn


def test_band_sd_must_be_positive() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="band_sd"):
            render_baseline_chart("RHR", "bpm", steady_then_rising(), None, band_sd=bad)


def test_chart_points_keep_only_plausible_deviations() -> None:
    moment = datetime(2024, 3, 1, 7, tzinfo=UTC)

    def deviation(value: float, plausible: bool) -> Deviation:
        return Deviation(Signal.SPO2, moment, value, 97.0, 1.0, value - 97.0, "%", 20, False,
                         plausible)  # fmt: skip

    days = [(DAY0, deviation(96.0, True)), (DAY0 + timedelta(days=1), deviation(12.0, False)),
            (DAY0 + timedelta(days=2), deviation(93.0, True))]  # fmt: skip
    assert chart_points(days) == [
        ChartPoint(DAY0, 96.0, 97.0, 1.0),
        ChartPoint(DAY0 + timedelta(days=2), 93.0, 97.0, 1.0),
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40),
            st.floats(-1e6, 1e6) | st.just(float("nan")),
            st.floats(-1e6, 1e6),
            st.floats(0, 1e5),
        ),
        max_size=30,
    ),
    st.text(max_size=40),
)
def test_any_input_gives_parseable_svg(rows: list, title: str) -> None:
    points = [ChartPoint(DAY0 + timedelta(days=d), v, m, s) for d, v, m, s in rows]
    root = parse(render_baseline_chart(title, "unit", points, DAY0 + timedelta(days=10)))
    assert root.get("role") == "img"
