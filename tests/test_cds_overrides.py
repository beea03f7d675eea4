"""The override report on a constructed ledger (both backends), and `careloop report overrides`."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from careloop.access.layer import AccessLayer
from careloop.audit.log import AuditLog
from careloop.cds.cli_report import report_group
from careloop.cds.feedback import FeedbackBook, parse_feedback
from careloop.cds.ledger import CardLedger, IssuedCard
from careloop.cds.overrides import OverrideReport, ReportError, override_report
from careloop.store.crypto import MasterKey
from careloop.store.repository import ResourceStore
from test_cds_ledger import (
    ISSUER,
    MODEL,
    SERVICE,
    T0,
    Clock,
    ehr_principal,
    make_call,
    risk_card,
    treatment,
)

ORDER_SIGN = "careloop-order-sign"
SEPSIS = (SERVICE, "playbook:sepsis", MODEL, "ICU-3")
AKI = (SERVICE, "playbook:aki", None, "Ward-7")
INTERACTION = (ORDER_SIGN, "interaction:warfarin+aspirin", None, None)


def _accept(card: IssuedCard, at: datetime, *suggestions: int) -> dict:
    ids = [{"id": card.card["suggestions"][n]["uuid"]} for n in suggestions]
    return {
        "card": card.card["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": ids,
        "outcomeTimestamp": at.isoformat(),
    }


def _override(card: IssuedCard, at: datetime, code: str | None) -> dict:
    reason: dict = {"userComment": "seen by the rapid response team"}
    if code is not None:
        reason["reason"] = {"code": code}
    return {
        "card": card.card["uuid"],
        "outcome": "overridden",
        "overrideReason": reason,
        "outcomeTimestamp": at.isoformat(),
    }


def build_ledger(store: ResourceStore) -> None:
    """Eight cards over two services, three units and two days, with their feedback.

    sepsis (ICU-3, model): s1 accepted (1 of 2 suggestions), s2 and s3 overridden not-septic,
    s4 unanswered; s5 two days later overridden already-treated.
    aki (Ward-7, no model): a1 overridden then accepted later (latest wins), a2 unanswered.
    interaction (order-sign, no unit): i1 overridden with a comment and no code.
    """
    clock = Clock()
    access = AccessLayer(store, clock=clock)
    ledger, book = CardLedger(store, access), FeedbackBook(store, access)
    sepsis = [risk_card() for _ in range(4)]
    aki = [risk_card(key="playbook:aki", model_version=None) for _ in range(2)]
    ledger.record(make_call("h-icu"), sepsis, ehr_principal(), treatment())
    ledger.record(make_call("h-ward", unit="Ward-7"), aki, ehr_principal(), treatment())
    interaction = risk_card(key=INTERACTION[1], model_version=None, suggestions=0)
    order_call = make_call("h-order", service_id=ORDER_SIGN, unit=None)
    ledger.record(order_call, [interaction], ehr_principal(), treatment())
    clock.now = later = T0 + timedelta(days=2)
    late = risk_card()
    ledger.record(make_call("h-icu-later"), [late], ehr_principal(), treatment())
    clock.now = T0 + timedelta(days=3)
    minutes = timedelta(minutes=1)

    def give(service: str, *items: dict) -> None:
        request = parse_feedback({"feedback": list(items)})
        book.submit(service, ISSUER, request, ehr_principal(), treatment())

    give(
        SERVICE,
        _accept(sepsis[0], T0 + 5 * minutes, 1),
        _override(sepsis[1], T0 + 5 * minutes, "not-septic"),
        _override(sepsis[2], T0 + 6 * minutes, "not-septic"),
        _override(aki[0], T0 + 5 * minutes, "already-treated"),
        _accept(aki[0], T0 + 30 * minutes, 0),
        _override(late, later + 4 * minutes, "already-treated"),
    )
    give(ORDER_SIGN, _override(interaction, T0 + minutes, None))


@pytest.fixture
def ledger_store(store: ResourceStore) -> ResourceStore:
    build_ledger(store)
    return store


def _rows(report: OverrideReport) -> dict[tuple, dict]:
    return {tuple(row.group): report.row_json(row) for row in report.rows}


def test_the_report_counts_outcomes_reasons_and_suggestions_per_group(
    ledger_store: ResourceStore,
) -> None:
    report = override_report(ledger_store)

    assert [row.group for row in report.rows] == [INTERACTION, AKI, SEPSIS]
    rows = _rows(report)
    sepsis = rows[SEPSIS]
    assert (sepsis["shown"], sepsis["with_feedback"], sepsis["no_feedback"]) == (5, 4, 1)
    assert (sepsis["accepted"], sepsis["overridden"], sepsis["override_rate"]) == (1, 3, 0.75)
    assert sepsis["top_override_reasons"] == [
        {"code": "not-septic", "count": 2},
        {"code": "already-treated", "count": 1},
    ]
    assert sepsis["accepted_suggestion_rate"] == 0.125  # 1 of 2 x 4 answered cards
    aki = rows[AKI]
    assert (aki["shown"], aki["accepted"], aki["overridden"], aki["override_rate"]) == (2, 1, 0, 0)
    assert aki["top_override_reasons"] == [] and aki["accepted_suggestion_rate"] == 0.5
    interaction = rows[INTERACTION]
    assert (interaction["overridden"], interaction["override_rate"]) == (1, 1.0)
    assert interaction["top_override_reasons"] == []  # overridden without a code
    assert interaction["accepted_suggestion_rate"] is None  # the card offered none
    total = report.total
    assert (total.shown, total.with_feedback, total.accepted, total.overridden) == (8, 6, 2, 4)


def test_the_report_groups_by_the_chosen_dimensions_and_period(
    ledger_store: ResourceStore,
) -> None:
    by_unit = override_report(ledger_store, by=("unit",))
    assert [(row.group, row.shown) for row in by_unit.rows] == [
        (("ICU-3",), 5),
        (("Ward-7",), 2),
        ((None,), 1),
    ]
    by_model = override_report(ledger_store, by=["model", "service"])
    assert [row.group for row in by_model.rows] == [
        (MODEL, SERVICE),
        (None, ORDER_SIGN),
        (None, SERVICE),
    ]
    recent = override_report(ledger_store, since=T0 + timedelta(days=1))
    assert len(recent.rows) == 1
    only = _rows(recent)[SEPSIS]
    assert (only["shown"], only["overridden"]) == (1, 1)
    assert only["top_override_reasons"] == [{"code": "already-treated", "count": 1}]
    assert override_report(ledger_store, since=T0 + timedelta(days=5)).rows == ()


def test_a_card_without_feedback_has_no_rates(store: ResourceStore) -> None:
    ledger = CardLedger(store, AccessLayer(store, clock=Clock()))
    ledger.record(make_call(), [risk_card()], ehr_principal(), treatment())
    (row,) = override_report(store, by=("service",)).rows
    assert (row.shown, row.no_feedback, row.override_rate) == (1, 1, None)
    assert row.accepted_suggestion_rate is None


@pytest.mark.parametrize(
    ("by", "message"),
    [(("ward",), "unknown dimension 'ward'"), ((), "at least one"), (("unit", "unit"), "twice")],
)
def test_unknown_or_repeated_dimensions_are_refused(
    ledger_store: ResourceStore, by: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ReportError, match=message):
        override_report(ledger_store, by=by)


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture
def cli_env(ledger_store: ResourceStore, database_url: str, master_key: MasterKey, tmp_path):  # type: ignore[no-untyped-def]
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CARELOOP_")}
    env.update(
        CARELOOP_HOME=str(tmp_path / "home"),
        CARELOOP_DATABASE_URL=database_url,
        CARELOOP_MASTER_KEY=base64.b64encode(master_key.secret).decode(),
    )
    return env


def report(env: dict, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(report_group, ["overrides", *args], env=env)


def test_the_command_writes_json_csv_and_a_table(cli_env: dict) -> None:
    as_json = report(cli_env, "--format", "json", "--by", "service,card")
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.output)
    assert document["by"] == ["service", "card"]
    sepsis = next(r for r in document["rows"] if r["card"] == "playbook:sepsis")
    assert (sepsis["service"], sepsis["override_rate"]) == (SERVICE, 0.75)
    assert (document["total"]["shown"], document["total"]["overridden"]) == (8, 4)

    as_csv = report(cli_env, "--format", "csv", "--by", "unit", "--since", "2026-03-02")
    assert as_csv.exit_code == 0, as_csv.output
    (row,) = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert row["unit"] == "ICU-3" and row["shown"] == "1" and row["override_rate"] == "1.0000"
    assert row["top_override_reasons"] == "already-treated (1)"

    table = report(cli_env, "--by", "service")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0] == "CDS card overrides"
    patient_view = next(line for line in lines if SERVICE in line)
    assert "60%" in patient_view and "not-septic (2); already-treated (1)" in patient_view


def test_the_command_is_audited_and_refuses_bad_options(
    cli_env: dict, ledger_store: ResourceStore
) -> None:
    assert report(cli_env, "--format", "csv").exit_code == 0
    used = [e for e in AuditLog(ledger_store).events() if e.action == "export"]
    assert len(used) == 1 and used[0].agent.startswith("local:")
    assert used[0].role == "data-scientist"

    bad_by = report(cli_env, "--by", "service,ward")
    assert bad_by.exit_code == 2 and "unknown dimension 'ward'" in bad_by.output
    bad_since = report(cli_env, "--since", "March 2026")
    assert bad_since.exit_code == 2 and "--since" in bad_since.output
    empty = report(cli_env, "--since", "2027-01-01")
    assert empty.exit_code == 0 and "no CDS cards" in empty.output
