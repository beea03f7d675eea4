"""The personal baseline band and the timeline charts of the patient page (no browser).

The band rule is checked on hand-made numbers (what median ± 2 robust SD gives), then on real
timelines: the synthetic demo population (inpatient stays and home devices, as `careloop demo`
loads them) and real ICU stays from PhysioNet 2019. Charts are checked for what a reader and a
screen reader get (units, the numbers in words) and for escaping.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from statistics import median
from types import SimpleNamespace

import orjson
import pytest

from careloop.access.labels import CONFIDENTIALITY_SYSTEM
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Role
from careloop.cds.cards import CardContext
from careloop.cds.monitoring_cards import LiveAlert, monitoring_card
from careloop.fhir.indexing import patient_id_of
from careloop.ingest import IngestOptions, Ingestor
from careloop.monitoring.baseline import MAD_TO_SD
from careloop.monitoring.detectors import INFECTION
from careloop.monitoring.fhir_alerts import PATTERN_SYSTEM, SIGNAL_SYSTEM
from careloop.personal_band import (
    CLINICAL_SIGNALS,
    CLINICAL_WINDOW,
    DEVICE_SIGNALS,
    MIN_POINTS,
    ChartSignal,
    Point,
    SignalSeries,
    chart_series,
    clinical_series,
    daily_values,
    in_usual_unit,
    latest_time,
    personal_band,
    split_device_data,
)
from careloop.sources.physionet import read_physionet
from careloop.synth import generate_population
from careloop.timeline import build_timeline
from careloop.web.ui.charts import band_text, latest_text, render_chart
from careloop.web.ui.framework import UiCaller, UiError
from careloop.web.ui.patient_pages import card_view, detail_blocks, own_href, read_record
from conftest import shared_data

T0 = datetime(2026, 2, 1, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"
SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
LACTATE = {"system": "http://loinc.org", "code": "2524-7"}


def _signal(**changes: object) -> ChartSignal:
    base = {
        "key": "hr",
        "name": "Heart rate",
        "codes": ("8867-4",),
        "unit": "/min",
        "unit_text": "/min",
        "kind": "vital",
        "floor": 2.0,
    }
    return ChartSignal(**{**base, **changes})  # type: ignore[arg-type]


# -- the band rule ----------------------------------------------------------------------------


def test_band_is_the_median_plus_minus_two_robust_sd_and_ignores_an_outlier() -> None:
    values = [10.0, 11.0, 12.0, 13.0, 14.0, 100.0]
    band = personal_band(values, floor=0.1, minimum=6, start=T0, end=T0)
    assert band is not None
    assert band.median == 12.5
    assert band.spread == pytest.approx(1.5 * MAD_TO_SD)  # MAD of the values is 1.5
    assert (band.low, band.high) == pytest.approx((12.5 - 2 * 2.2239, 12.5 + 2 * 2.2239))
    assert band.distance(band.high + 3) == pytest.approx(3)
    assert band.distance(band.low - 1) == pytest.approx(-1)
    assert band.distance(12.0) == 0
    assert band.z(12.5 + 2 * band.spread) == pytest.approx(2.0)


def test_band_needs_enough_values_and_never_has_zero_width() -> None:
    assert personal_band([70.0] * 5, floor=2.0, minimum=6, start=T0, end=T0) is None
    band = personal_band([70.0] * 6, floor=2.0, minimum=6, start=T0, end=T0)
    assert band is not None and band.spread == 2.0 and (band.low, band.high) == (66.0, 74.0)


def test_units_other_than_the_usual_one_are_converted_only_by_exact_factors() -> None:
    sleep = next(s for s in DEVICE_SIGNALS if s.key == "sleep")
    assert in_usual_unit(sleep, 6.5, "h") == 390.0
    assert in_usual_unit(sleep, 390.0, "min") == 390.0
    assert in_usual_unit(sleep, 390.0, None) == 390.0
    temperature = next(s for s in CLINICAL_SIGNALS if s.key == "temp")
    assert in_usual_unit(temperature, 98.6, "[degF]") is None  # counted, never guessed


def test_a_day_is_one_value_a_median_for_levels_the_largest_report_for_totals() -> None:
    points = [Point(T0 + timedelta(hours=h), v) for h, v in ((1, 60), (2, 64), (3, 90), (30, 5))]
    assert [p.value for p in daily_values(points, summed=False)] == [64, 5]
    assert [p.value for p in daily_values(points, summed=True)] == [90, 5]
    assert all(p.time.hour == 12 for p in daily_values(points, summed=True))


# -- on real timelines ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_timelines() -> dict[str, tuple]:
    """The first 10 patients of the demo population, split as the page splits them."""
    by_patient: dict[str, list[dict]] = defaultdict(list)
    for resource in generate_population(10):
        patient = patient_id_of(resource)
        if patient is not None:
            by_patient[patient].append(resource)
    out = {}
    for patient_id, resources in by_patient.items():
        clinical, device = split_device_data(resources)
        out[patient_id] = (
            build_timeline(patient_id, clinical),
            build_timeline(patient_id, device),
        )
    return out


def test_demo_inpatient_vitals_are_charted_over_72_hours_against_the_earlier_stay(
    demo_timelines: dict[str, tuple],
) -> None:
    checked = 0
    for clinical, _device in demo_timelines.values():
        end = latest_time(clinical, CLINICAL_SIGNALS)
        heart = next(s for s in CLINICAL_SIGNALS if s.key == "hr")
        if end is None or len(clinical.observations(heart.codes, end - CLINICAL_WINDOW)) < 10:
            continue  # an outpatient: no stay to chart
        series = clinical_series(clinical, heart, end)
        assert series.end == end and series.start == end - timedelta(hours=72)
        assert all(series.start <= p.time <= end for p in series.points)
        # the band is learnt from the person's own values before the last 24 hours
        earlier = [
            p.value
            for p in clinical.observations(heart.codes, end - timedelta(days=31), end)
            if p.time < end - timedelta(hours=24)
        ]
        assert series.reference_count == len(earlier)
        if len(earlier) >= MIN_POINTS["vital"]:
            assert series.band is not None
            assert series.band.median == median(earlier)
            assert series.band.end < end - timedelta(hours=24)
        checked += 1
    assert checked >= 2


def test_demo_wearable_data_is_one_value_a_day_over_60_days_with_a_band(
    demo_timelines: dict[str, tuple],
) -> None:
    checked = 0
    for clinical, device in demo_timelines.values():
        found = {s.signal.key: s for s in chart_series(clinical, device)}
        if "rhr" not in found:
            continue
        for key in ("rhr", "steps", "sleep"):
            series = found[key]
            days = [p.time.date() for p in series.points]
            assert len(days) == len(set(days)) <= 60
            assert series.end - series.start == timedelta(days=60)
            assert series.band is not None and series.band.count >= MIN_POINTS["device"]
            assert series.band.end < series.end - timedelta(days=14)
        # sleep arrives in hours from the device and in minutes from careloop's summaries: both
        # are charted in minutes, one value a night
        assert 120 < found["sleep"].latest.value < 900
        assert found["sleep"].other_units == 0
        checked += 1
    assert checked >= 2


@pytest.mark.shared_data
def test_real_icu_stays_get_bands_only_from_enough_earlier_readings() -> None:
    stays = list(read_physionet(shared_data("physionet2019/training_setA.tar.gz"), limit=20))
    banded = 0
    for stay in stays:
        for signal in CLINICAL_SIGNALS:
            end = latest_time(stay.timeline, CLINICAL_SIGNALS)
            if end is None:
                continue
            series = clinical_series(stay.timeline, signal, end)
            assert series.other_units == 0, f"{stay.stay_id} {signal.key}: units not understood"
            if series.reference_count < MIN_POINTS[signal.kind]:
                assert series.band is None
                assert "Not enough data for a personal baseline" in band_text(series)
            else:
                assert series.band is not None and series.band.spread >= signal.floor
                banded += 1
    assert banded >= 20


# -- the chart -------------------------------------------------------------------------------------


def _series(signal: ChartSignal, values: list[float], reference: list[float]) -> SignalSeries:
    points = tuple(Point(T0 + timedelta(hours=i), v) for i, v in enumerate(values))
    band = personal_band(reference, floor=signal.floor, minimum=6, start=T0, end=T0)
    return SignalSeries(
        signal, points, T0, T0 + timedelta(hours=72), band, len(reference), other_units=0
    )


def test_the_chart_says_latest_value_band_and_distance_in_words_with_units() -> None:
    series = _series(_signal(), [72, 75, 118], [70, 71, 72, 73, 74, 75])
    chart = render_chart(series)
    root = ET.fromstring(str(chart.svg))
    assert root.get("role") == "img"
    title = root.find(f"{SVG}title")
    assert title is not None and root.get("aria-labelledby") == title.get("id")
    words = title.text or ""
    assert "Heart rate in /min" in words
    assert "latest 118 /min" in words and "above the usual band" in words
    assert "Usual band 68 to 77 /min (median 72 /min" in chart.band_text  # 72.5 ± 2 × 2.22
    assert chart.summary == latest_text(series)
    assert "1 of 3 values shown are outside the band" in chart.summary
    assert len(root.findall(f"{SVG}rect")) == 1  # the band
    assert len(root.findall(f"{SVG}circle[@class='outside']")) == 1  # told by shape


def test_the_chart_escapes_every_text_it_draws() -> None:
    hostile = _signal(name="<script>alert(1)</script>", unit_text='"/><script>x</script>')
    chart = render_chart(_series(hostile, [1, 2], [1, 2, 3, 4, 5, 6]))
    svg = str(chart.svg)
    assert "<script" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    ET.fromstring(svg)  # still well-formed


def test_a_chart_without_enough_earlier_data_says_so_and_draws_no_band() -> None:
    chart = render_chart(_series(_signal(), [80, 81], [80, 81]))
    assert chart.band_text.startswith("Not enough data for a personal baseline (2 earlier")
    assert "no personal baseline yet" in chart.summary
    assert "<rect" not in str(chart.svg)
    empty = render_chart(_series(_signal(), [], []))
    assert "no readings in this window" in empty.summary
    ET.fromstring(str(empty.svg))


# -- cards as the page reads them ------------------------------------------------------------------


def test_only_careloops_own_links_stay_links() -> None:
    public = "https://careloop.example"
    assert own_href("https://careloop.example/models/sepsis/card", public) == "/models/sepsis/card"
    assert own_href("/knowledge/cds", public) == "/knowledge/cds"
    for other in ("https://doi.org/10.1/x", "//evil.example/x", "javascript:alert(1)", "x"):
        assert own_href(other, public) == ""
    blocks = detail_blocks(
        "**Why:** <b>bold</b>\n- see [the card](https://careloop.example/models/sepsis/card)\n"
        "- [paper](https://doi.org/10.1/x)",
        public,
    )
    assert blocks[0].kind == "p" and blocks[0].lines[0][0].kind == "strong"
    assert blocks[0].lines[0][1].text == " <b>bold</b>"  # kept as text; the template escapes
    first, second = blocks[1].lines
    assert first[1].kind == "link" and first[1].href == "/models/sepsis/card"
    assert second[0].kind == "text" and second[0].text == "paper (https://doi.org/10.1/x)"


def test_a_card_view_carries_confidence_alternatives_and_actions() -> None:
    card = {
        "uuid": "6f1c7a5e-0000-4000-8000-000000000001",
        "summary": "Sepsis risk high",
        "indicator": "warning",
        "detail": "**Sepsis risk 42%**: the model's calibrated probability\n\n"
        "**Alternatives considered:**\n- Watchful waiting\n- Repeat lactate",
        "source": {"label": "careloop sepsis model v1", "url": "https://elsewhere.example/x"},
        "suggestions": [{"uuid": "6f1c7a5e-0000-4000-8000-000000000002", "label": "Lactate"}],
        "overrideReasons": [{"code": "not-relevant", "display": "Not relevant"}],
        "links": [{"label": "Open the patient", "url": "https://c.example/app/patients/p1"}],
    }
    view = card_view(card, "https://c.example", "/app/patients/p1")
    assert view.indicator_words == "Warning"
    assert view.source_href == ""  # an external source URL is not linked
    assert [s.label for s in view.suggestions] == ["Lactate"]
    assert [r.code for r in view.reasons] == ["not-relevant"]
    assert "".join(s.text for s in view.confidence[0]).startswith("Sepsis risk 42%")
    assert ["".join(s.text for s in line) for line in view.alternatives] == [
        "Watchful waiting",
        "Repeat lactate",
    ]
    assert view.links == ()  # the only link was this page itself


def test_a_monitoring_alert_card_reads_with_its_charts_as_links_and_papers_as_text() -> None:
    flag = {
        "resourceType": "Flag",
        "id": "f1",
        "status": "active",
        "code": {
            "coding": [{"system": PATTERN_SYSTEM, "code": INFECTION}],
            "text": "Signs like an infection starting",
        },
        "period": {"start": "2026-02-11"},
    }
    issue = {
        "resourceType": "DetectedIssue",
        "id": "d1",
        "evidence": [
            {
                "code": [
                    {
                        "coding": [
                            {
                                "system": SIGNAL_SYSTEM,
                                "code": "resting-heart-rate",
                                "display": "Resting heart rate",
                            }
                        ],
                        "text": "Resting heart rate up 6 bpm to 67 bpm (usual 61 bpm, +3.4 SD)",
                    }
                ]
            }
        ],
    }
    public = "https://careloop.example"
    ctx = CardContext("p1", T0, f"{public}/app/patients/p1", f"{public}/m", f"{public}/k")
    issued = monitoring_card(LiveAlert("a1", flag, issue, None), ctx, public)
    view = card_view(issued.card, public, "/app/patients/p1")
    assert view.monitoring and view.indicator_words == "Warning"
    assert [link.href for link in view.links] == ["/monitoring/alerts/a1/chart/resting-heart-rate"]
    assert len(view.alternatives) == 3 and view.reasons
    text = " ".join(s.text for block in view.detail for line in block.lines for s in line)
    assert "usual 61 bpm" in text and "(https://doi.org/" in text  # the paper, as text
    assert not any(
        s.kind == "link" and not s.href.startswith("/")
        for block in view.detail
        for line in block.lines
        for s in line
    )


# -- what the page reads through the access layer ---------------------------------------------


def _reading(patient: str, index: int, code: str, value: float, unit: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": f"{patient}-{code}-{index}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": (T0 + timedelta(hours=4 * index)).isoformat(),
        "valueQuantity": {"value": value, "unit": unit},
    }


def _deny_consent(patient: str, cid: str, provision: dict) -> dict:
    return {
        "resourceType": "Consent",
        "id": cid,
        "status": "active",
        "scope": {"coding": [{"system": SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "dateTime": "2025-01-01T00:00:00Z",
        "policyRule": {"coding": [{"system": CONFIDENTIALITY_SYSTEM, "code": "OPTOUT"}]},
        "provision": {"type": "permit", "provision": [provision]},
    }


def test_the_page_counts_what_consent_withholds_and_refuses_a_withheld_record(store) -> None:  # noqa: ANN001
    resources: list[dict] = []
    for patient in ("pa", "pb"):
        resources.append({"resourceType": "Patient", "id": patient, "gender": "female"})
        resources += [_reading(patient, i, "8867-4", 70 + i % 3, "/min") for i in range(20)]
        resources += [_reading(patient, i, "2524-7", 1.0 + i / 10, "mmol/L") for i in range(3)]
    resources.append(
        _deny_consent("pa", "c-lactate", {"type": "deny", "code": [{"coding": [LACTATE]}]})
    )
    resources.append(_deny_consent("pb", "c-all", {"type": "deny"}))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }
    Ingestor(store, IngestOptions(workers=0)).ingest_document(orjson.dumps(bundle), "test")
    services = SimpleNamespace(security=SimpleNamespace(access=AccessLayer(store)))
    principal = Principal("dr", "user", Role.CLINICIAN, "Practitioner/dr")
    caller = UiCaller(principal, AccessContext(Purpose.TREATMENT, "t", "t"), "csrf", "en")
    record = read_record(services, caller, "pa")  # type: ignore[arg-type]
    assert record.withheld == 3
    assert [chart.key for chart in record.charts] == ["hr"]  # the lactate is not charted
    with pytest.raises(UiError) as refused:
        read_record(services, caller, "pb")  # type: ignore[arg-type]
    assert refused.value.status == 403
    with pytest.raises(UiError) as missing:
        read_record(services, caller, "nobody")  # type: ignore[arg-type]
    assert missing.value.status == 404
