"""What the governance console shows (careloop.governance.console_data), without a browser: the
safe Markdown of model cards, the registry with the shipped models, their fairness files, drift
history from a real `careloop drift run` on the diabetes data, alert burden and overrides from a
constructed CDS ledger, refused requests from the audit log, and the period form's checks."""

from __future__ import annotations

import base64
import json
import re
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from careloop.audit.events import AuditAction, AuditOutcome, AuditRecord
from careloop.audit.log import AuditLog
from careloop.cds.overrides import override_report
from careloop.governance import drift_cli
from careloop.governance.adapters import SHIPPED_MODELS
from careloop.governance.console_data import (
    FEWER_THAN_SMALL,
    NO_MODEL,
    WITHHELD,
    Period,
    PeriodError,
    alert_burden,
    card_kind,
    count_text,
    fairness_view,
    markdown_html,
    metric_rows,
    parse_period,
    refused_pages,
    registry_overview,
    valid_version,
    version_detail,
)
from careloop.governance.registry import ModelRegistry
from careloop.governance.registry_cli import registry_root
from careloop.store.crypto import MasterKey
from careloop.store.repository import ResourceStore
from conftest import shared_data
from test_cds_ledger import MODEL, SERVICE
from test_cds_overrides import ORDER_SIGN, build_ledger

READMISSION = SHIPPED_MODELS / "readmission"
SEPSIS = SHIPPED_MODELS / "sepsis"
ACTOR = "local:committee-test"


def meta_of(artifact: Path) -> dict:
    return json.loads((artifact / "model.json").read_text())


# -- the model card's Markdown -------------------------------------------------------------------


def test_markdown_escapes_every_html_tag_and_attribute() -> None:
    hostile = (
        "# Card <script>alert(1)</script>\n\n"
        'Text with <img src=x onerror="alert(2)"> and <a href="javascript:x">a link</a>.\n\n'
        "- item <b>bold?</b>\n"
        "| a <script> | b |\n|---|---|\n| <iframe src=//evil> | `<code>` |\n\n"
        "[click](javascript:alert(3)) **<svg onload=alert(4)>**\n\n"
        "```\n<script>in code</script>\n```\n"
    )

    html = str(markdown_html(hostile))

    assert "<script" not in html and "<img" not in html and "<iframe" not in html
    assert "<svg" not in html and "<a " not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "onerror=&#34;alert(2)&#34;" in html  # shown as text, inside no tag
    assert "&lt;iframe src=//evil&gt;" in html
    assert "<code>&lt;code&gt;</code>" in html
    assert "click (javascript:alert(3))" in html  # a link's address is text, never an href
    assert "<strong>&lt;svg onload=alert(4)&gt;</strong>" in html
    assert "<pre><code>&lt;script&gt;in code&lt;/script&gt;</code></pre>" in html
    # the only tags are the renderer's own
    tags = set(re.findall(r"</?([a-z0-9]+)", html))
    assert tags <= {"h3", "p", "ul", "li", "div", "table", "caption", "thead", "tbody", "tr",
                    "th", "td", "code", "strong", "em", "pre"}  # fmt: skip


def test_markdown_structure_of_the_shipped_readmission_card() -> None:
    text = (READMISSION / "MODEL_CARD.md").read_text()

    html = str(markdown_html(text))

    assert html.startswith(f"<h3>Model card: {meta_of(READMISSION)['version']}</h3>")
    assert "<h4>Intended use</h4>" in html and "<h4>Cross-validation</h4>" in html
    assert "<h2" not in html and "<h1" not in html  # under the page's own h1 and h2
    separators = [line for line in text.splitlines() if re.fullmatch(r"\|[-:| ]+\|", line)]
    assert html.count("<table>") == len(separators) > 3  # one table per header rule
    assert '<th scope="col">fold</th>' in html
    assert "<caption>Table 1 of the card, under “Cross-validation”</caption>" in html
    assert "<td>0.675 ± 0.008</td>" in html
    assert "<li>Source: <code>diabetic_data_dev.csv.gz</code>" in html
    assert "<strong>" in html  # flagged fairness groups are bold in the card


def test_markdown_lists_paragraphs_and_escaped_pipes() -> None:
    html = str(
        markdown_html(
            "Intro line one\nline two\n\n1. first\n2. second\n   continued\n\n"
            "| x | y |\n|:--|--:|\n| a \\| b | c |\n| short |\n",
            heading_base=2,
        )
    )
    assert "<p>Intro line one line two</p>" in html
    assert "<ol><li>first</li><li>second continued</li></ol>" in html
    assert "<td>a | b</td><td>c</td>" in html
    assert "<td>short</td><td></td>" in html  # a short row is padded, never shifts columns


# -- small counts, versions, periods ---------------------------------------------------------------


def test_small_counts_are_hidden_and_totals_shown() -> None:
    assert [count_text(n) for n in (0, 1, 4)] == [FEWER_THAN_SMALL] * 3
    assert count_text(5) == "5" and count_text(12345) == "12,345" and count_text(None) == "–"


def test_version_strings() -> None:
    assert valid_version(meta_of(READMISSION)["version"])
    for bad in ("", ".", "..", "-lead", "a/b", "a b", "x" * 129, "<script>"):
        assert not valid_version(bad), bad


def test_periods_default_and_refuse_bad_dates() -> None:
    today = date(2026, 11, 22)
    period = parse_period("", "", today=today)
    assert (period.since, period.until, period.days) == (date(2026, 10, 24), today, 30)
    assert period.start == datetime(2026, 10, 24, tzinfo=UTC)
    assert period.end == datetime(2026, 11, 23, tzinfo=UTC)  # the until day is included
    assert parse_period("2026-03-01", "2026-03-01", today=today).days == 1
    cases = {
        ("2026-13-01", ""): ("since", "not a real calendar date"),
        ("", "yesterday"): ("until", "YYYY-MM-DD"),
        ("2026-03-02", "2026-03-01"): ("since", "must not be after"),
        ("2024-01-01", "2026-01-01"): ("since", "at most 400 days"),
        ("<script>", ""): ("since", "YYYY-MM-DD"),
    }
    for (since, until), (field, words) in cases.items():
        with pytest.raises(PeriodError, match=words) as caught:
            parse_period(since, until, today=today)
        assert caught.value.field == field


# -- the registry, the card and the fairness file ------------------------------------------------


def registered(store: ResourceStore, root: Path) -> ModelRegistry:
    """Both shipped models registered; the readmission model promoted, sepsis a candidate."""
    registry = ModelRegistry(store, root)
    readmission = registry.register(READMISSION, actor=ACTOR)
    registry.register(SEPSIS, actor=ACTOR)
    registry.promote(readmission.version, actor=ACTOR, reason="committee approval 2026-11")
    return registry


def test_registry_overview_lists_versions_states_and_history(
    store: ResourceStore, tmp_path: Path
) -> None:
    registry = registered(store, tmp_path / "registry")

    groups = registry_overview(registry)

    assert [g.name for g in groups] == ["readmission", "sepsis"]
    readmission, sepsis = groups
    assert readmission.active == meta_of(READMISSION)["version"]
    assert sepsis.active is None
    [version] = readmission.versions
    assert version.state == "active"
    assert version.fingerprint == meta_of(READMISSION)["trained"]["fingerprint"][:12]
    assert version.auroc == "0.666"
    assert ("threshold", "0.1571") in version.policy
    assert [(h.change, h.actor, h.reason) for h in version.history] == [
        ("registered as candidate", ACTOR, "registered"),
        ("candidate → active", ACTOR, "committee approval 2026-11"),
    ]
    assert sepsis.versions[0].state == "candidate"
    assert sepsis.versions[0].auroc == "0.823"  # the cross-validation mean


def test_version_detail_shows_card_metrics_fairness_and_no_drift_yet(
    store: ResourceStore, tmp_path: Path
) -> None:
    registry = registered(store, tmp_path / "registry")
    version = meta_of(READMISSION)["version"]

    detail = version_detail(registry, store, version)

    assert detail is not None and detail.intact
    assert detail.card is not None and "<h4>Alert policy</h4>" in str(detail.card)
    names = {row.name: row for row in detail.metrics}
    assert names["model · AUROC"].value == "0.666"
    assert names["model · AUROC"].interval == "[0.652, 0.682]"
    assert not any("subgroups" in name or "reliability" in name for name in names)
    fairness = detail.fairness
    assert fairness is not None
    raw = json.loads((READMISSION / "fairness.json").read_text())
    flagged = [f"{g['attribute']}={g['group']}" for g in raw["groups"] if g["flags"]]
    assert list(fairness.flagged) == flagged and "age_band=[80-90)" in flagged
    assert "race=Asian" in fairness.too_small
    assert fairness.overall.auroc == "0.666 [0.654, 0.682]"
    assert fairness.overall.patients == "10,088"
    rows = {(r.attribute, r.group): r for a in fairness.attributes for r in a.rows}
    asian = rows[("race", "Asian")]
    assert (asian.patients, asian.events, asian.status) == ("73", "8", "not judged")
    assert asian.words.startswith("too small to judge: 73 patients, 8 with the outcome")
    one = rows[("sex", "unknown")]  # one patient: its count is not shown
    assert (one.patients, one.events) == (FEWER_THAN_SMALL, FEWER_THAN_SMALL)
    assert "1 patients" not in one.words
    assert one.fpr == one.alert_rate == one.ece == WITHHELD  # no rate over one person
    few = rows[("payer", "WC")]  # 14 patients, 1 with the outcome
    assert (few.patients, few.events, few.auroc, few.tpr) == (
        "14", FEWER_THAN_SMALL, WITHHELD, WITHHELD
    )  # fmt: skip
    assert few.fpr != WITHHELD and few.alert_rate != WITHHELD
    older = rows[("age_band", "[80-90)")]
    assert older.status == "flagged" and "AUROC 0.041 below overall" in older.words
    assert detail.drift.rows == () and detail.drift.chart is None
    assert detail.drift.command == f"careloop drift run --model {version} --data PATH"
    assert version_detail(registry, store, "readmission-unknown") is None


def test_sepsis_fairness_flags_a_unit(tmp_path: Path) -> None:
    view = fairness_view(json.loads((SEPSIS / "fairness.json").read_text()))
    assert view.flagged == ("unit=SICU",)
    assert view.too_small == ()
    assert view.unit == "patient-hour"
    with pytest.raises(ValueError):
        fairness_view({"groups": []})


def test_a_card_with_script_is_shown_escaped_and_a_tampered_artifact_is_not_shown(
    sqlite_store: ResourceStore, tmp_path: Path
) -> None:
    artifact = tmp_path / "hostile"
    shutil.copytree(READMISSION, artifact)
    meta = meta_of(artifact)
    meta["version"] = "readmission-hostile-card"
    (artifact / "model.json").write_text(json.dumps(meta))
    (artifact / "MODEL_CARD.md").write_text(
        "# Card <script>document.title='owned'</script>\n\n<b onmouseover=alert(1)>hi</b>\n"
    )
    registry = ModelRegistry(sqlite_store, tmp_path / "registry")
    model = registry.register(artifact, actor=ACTOR)

    detail = version_detail(registry, sqlite_store, model.version)

    card = str(detail.card)
    assert "<script" not in card and "<b " not in card
    assert "&lt;script&gt;document.title=&#39;owned&#39;&lt;/script&gt;" in card

    (model.artifact_dir / "MODEL_CARD.md").write_text("# edited after registration\n")
    tampered = version_detail(registry, sqlite_store, model.version)
    assert not tampered.intact and "NOT intact" in tampered.integrity
    assert tampered.card is None and "integrity check" in tampered.card_problem
    assert tampered.fairness is None


def test_metric_rows_of_a_cross_validation_summary() -> None:
    summary = json.loads((SEPSIS / "cv.json").read_text())["summary"]
    rows = {row.name: row for row in metric_rows({"cross_validation": summary})}
    auroc = rows["cross validation · model · AUROC"]
    assert auroc.value == "0.823" and auroc.interval == "± 0.012 sd over folds"
    assert list(rows)[0].startswith("cross validation · model")  # the model before baselines


# -- drift, from a real drift run ----------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path, master_key: MasterKey) -> ResourceStore:
    opened = ResourceStore.open(f"sqlite:///{tmp_path / 'console.db'}", master_key)
    yield opened
    opened.close()


@pytest.mark.shared_data
def test_drift_dashboard_after_a_drift_run_on_the_diabetes_data(
    sqlite_store: ResourceStore, master_key: MasterKey, tmp_path: Path
) -> None:
    data = shared_data("diabetes130/diabetic_data_dev.csv.gz")
    home = tmp_path / "home"
    registry = ModelRegistry(sqlite_store, registry_root(home))
    model = registry.register(READMISSION, actor=ACTOR)
    env = {
        "CARELOOP_HOME": str(home),
        "CARELOOP_DATABASE_URL": f"sqlite:///{tmp_path / 'console.db'}",
        "CARELOOP_MASTER_KEY": base64.b64encode(master_key.secret).decode(),
        "CARELOOP_MASTER_KEY_FILE": None,
        "CARELOOP_CONFIG": None,
        "CARELOOP_DRIFT_WEBHOOK": None,
    }
    ran = CliRunner().invoke(
        drift_cli.drift_group,
        ["run", "--model", model.version, "--data", str(data), "--windows", "3"],
        env=env,
        catch_exceptions=False,
    )
    assert ran.exit_code in (0, 1), ran.output  # ok/warn, or alert: this data drifts in time

    detail = version_detail(registry, sqlite_store, model.version)

    rows = detail.drift.rows
    assert [row.window for row in rows] == [f"{i}/3 diabetic_data_dev.csv.gz" for i in (1, 2, 3)]
    statuses = re.findall(r"^\d/3 \S+\s+\d+ rows\s+(\w+)", ran.output, flags=re.MULTILINE)
    assert [row.status for row in rows] == [s.lower() for s in statuses]
    assert detail.drift.latest_status == rows[-1].status
    for row in rows:
        assert re.fullmatch(r"\d,\d{3}", row.rows)  # about 4,780 held-out rows per window
        assert float(row.auroc.split()[0]) == pytest.approx(0.67, abs=0.05)
        assert row.top_inputs.count(";") == 2  # the three inputs that moved most
    chart = str(detail.drift.chart)
    assert chart.startswith('<svg class="chart console-chart"') and 'role="img"' in chart
    assert '<title id="drift-chart-title">Drift over 3 check(s)' in chart
    assert chart.count("<circle") == 3 and chart.count("<rect") == 3


# -- alert burden and overrides --------------------------------------------------------------------


def test_alert_burden_and_overrides_from_the_ledger(store: ResourceStore) -> None:
    build_ledger(store)  # 8 cards: 7 on 1 March 2026, 1 on 3 March (see test_cds_overrides)
    period = Period(date(2026, 3, 1), date(2026, 3, 3))

    burden = alert_burden(store, period)

    assert (burden.cards, burden.calls, burden.patient_days) == (8, 4, 1)
    by_service = {(r.service, r.indicator): r for r in burden.burden}
    assert sum(r.cards for r in burden.burden) == 8
    assert {service for service, _ in by_service} == {SERVICE, ORDER_SIGN}
    service_rows = [r for (s, _), r in by_service.items() if s == SERVICE]
    assert sum(r.cards for r in service_rows) == 7
    assert all(r.patient_days == 1 for r in service_rows)
    assert service_rows[0].per_day == f"{service_rows[0].cards / 3:.2f}"
    # the same definitions as the override report (careloop report overrides)
    report = {row.group[0]: row for row in override_report(store, by=("card",)).rows}
    kinds = {line.label: line for line in burden.kinds}
    assert set(kinds) == set(report)
    for kind, row in report.items():
        assert kinds[kind].shown == f"{row.shown:,}"
        assert kinds[kind].overridden == f"{row.overridden:,}"
    sepsis = kinds["playbook:sepsis"]
    assert (sepsis.shown, sepsis.with_feedback, sepsis.overridden) == ("5", "4", "3")
    assert sepsis.override_rate == "75%"
    assert sepsis.reasons == "not-septic (2); already-treated (1)"
    total = burden.total
    assert (total.shown, total.with_feedback, total.accepted, total.overridden) == (
        "8", "6", "2", "4"
    )  # fmt: skip
    assert burden.reasons == (("not-septic", 2), ("already-treated", 1))
    models = {line.label: line for line in burden.models}
    assert list(models) == [MODEL, NO_MODEL]  # the cards without a model come last
    assert (models[MODEL].shown, models[MODEL].override_rate) == ("5", "75%")
    assert models[NO_MODEL].shown == "3"  # the AKI playbook and the interaction
    units = {line.label: line for line in burden.units}
    assert list(units) == ["ICU-3", "Ward-7", "unit not recorded"]
    assert units["ICU-3"].shown == "5"  # five cards: shown
    assert units["ICU-3"].overridden == FEWER_THAN_SMALL  # three overridden: not shown exactly
    assert units["ICU-3"].reasons == f"not-septic ({FEWER_THAN_SMALL}); already-treated " + (
        f"({FEWER_THAN_SMALL})"
    )
    assert units["Ward-7"].shown == FEWER_THAN_SMALL
    assert units["ICU-3"].override_rate == WITHHELD  # 3 of 4 answered would give the counts
    assert units["Ward-7"].override_rate == WITHHELD
    assert [d.cards for d in burden.daily] == [7, 0, 1]
    assert 'role="img"' in str(burden.chart) and "2026-03-01: 7" in str(burden.chart)

    first_day = alert_burden(store, Period(date(2026, 3, 1), date(2026, 3, 1)))
    assert first_day.cards == 7 and first_day.reasons == (("not-septic", 2),)
    later = alert_burden(store, Period(date(2026, 3, 2), date(2026, 3, 3)))
    assert (later.cards, later.calls) == (1, 0)
    assert later.burden[0].per_patient_day == "–"  # no call recorded in the period
    empty = alert_burden(store, Period(date(2026, 4, 1), date(2026, 4, 2)))
    assert empty.cards == 0 and empty.chart is None and empty.kinds == ()


def test_monitoring_card_keys_are_one_kind() -> None:
    assert card_kind("monitoring:alert-3f2a9c") == "monitoring alert"
    assert card_kind("interaction:warfarin+aspirin") == "interaction:warfarin+aspirin"


# -- the audit page's refusals ---------------------------------------------------------------------


def test_refused_requests_are_counted_per_flag(sqlite_store: ResourceStore) -> None:
    log = AuditLog(sqlite_store)

    def refused(agent: str, flag: str) -> None:
        log.append(
            AuditRecord(
                action=AuditAction.READ,
                outcome=AuditOutcome.MINOR_FAILURE,
                agent=agent,
                role="patient",
                agent_kind="user",
                fhir_user=None,
                purpose=None,
                patient_id=None,
                flags=frozenset({flag}),
                detail="web page refused",
            )
        )

    refused("patient", "other-patient")
    refused("patient", "other-patient")
    refused("nurse", "csrf")
    refused("unknown-user", "expired-session")
    today = datetime.now(UTC).date()

    lines = {line.flag: line for line in refused_pages(log, Period(today, today))}

    assert list(lines) == ["expired-session", "csrf", "other-patient", "rejected-input"]
    assert (lines["other-patient"].events, lines["other-patient"].agents) == (2, ("patient",))
    assert (lines["csrf"].events, lines["csrf"].agents) == (1, ("nurse",))
    assert lines["rejected-input"].events == 0 and lines["rejected-input"].first == "–"
    yesterday = today - timedelta(days=1)
    assert all(line.events == 0 for line in refused_pages(log, Period(yesterday, yesterday)))
