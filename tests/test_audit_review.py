"""The audit review and the `careloop audit` commands, on both backends.

One scripted week of activity holds every kind of finding the review must name: access without
a care relationship, bulk access, after-hours and weekend access, break-glass (a reviewed grant
with a sealed reason, and one with no grant), a consent denial, failed sign-ins and an erasure.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from careloop.access.relationships import BreakGlass
from careloop.audit.cli import audit_group, local_agent
from careloop.audit.events import AuditAction, AuditOutcome, AuditRecord
from careloop.audit.log import AuditLog
from careloop.audit.review import AuditReview, review
from careloop.store.repository import ResourceStore

MONDAY = datetime(2025, 3, 3, tzinfo=UTC)
WEEK_END = MONDAY + timedelta(days=7)
BULK_PATIENTS = 55
STATED_REASON = "patient unconscious in resus bay 3, no consent on file"
# what was read and searched for: the review must never show any of it
CLINICAL = ["hba1c", "4548-4", "loinc", "Observation/", "Condition/"]


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return MONDAY + timedelta(days=day, hours=hour, minutes=minute)


def event(
    when: datetime,
    agent: str,
    role: str,
    patient: str | None,
    action: AuditAction = AuditAction.READ,
    *,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    flags: tuple[str, ...] = (),
    detail: str | None = None,
    query: str | None = None,
) -> AuditRecord:
    return AuditRecord(
        action=action,
        outcome=outcome,
        agent=agent,
        role=role,
        agent_kind="user",
        fhir_user=None,
        purpose="TREAT" if patient else None,
        patient_id=patient,
        entities=("Observation/hba1c-77", "Condition/diabetes-2") if patient else (),
        query=query,
        flags=frozenset(flags),
        detail=detail,
        recorded=when,
    )


def scripted_week(store: ResourceStore) -> tuple[AuditLog, str]:
    """The week's events; returns the log and the id of the reviewed break-glass grant."""
    log = AuditLog(store)
    grant = BreakGlass(store, timedelta(hours=1)).grant(
        "nurse.joy", "pat-e", STATED_REASON, now=at(1, 14)
    )
    BreakGlass(store, timedelta(hours=1)).mark_reviewed(grant.grant_id, "auditor.al")
    search = "code=http://loinc.org|4548-4&patient=pat-b"
    log.append_many(
        [
            event(at(-11, 10), "dr.grey", "clinician", "pat-old"),  # before the period
            event(at(0, 10), "dr.grey", "clinician", "pat-a"),
            event(at(0, 10, 5), "dr.grey", "clinician", "pat-b", AuditAction.SEARCH, query=search),
            event(at(0, 22, 30), "dr.grey", "clinician", "pat-c"),  # after hours
            event(at(5, 11), "dr.grey", "clinician", "pat-a"),  # Saturday
            event(at(1, 9), "nurse.joy", "nurse", "pat-d", flags=("no-care-relationship",)),
            event(at(1, 9, 10), "nurse.joy", "nurse", "pat-d", flags=("no-care-relationship",)),
            event(
                at(1, 14),
                "nurse.joy",
                "nurse",
                "pat-e",
                AuditAction.BREAK_GLASS,
                flags=("break-glass",),
                detail=f"grant {grant.grant_id} until {grant.expires_at.isoformat()}",
            ),
            event(
                at(1, 14, 5),
                "nurse.joy",
                "nurse",
                "pat-e",
                flags=("break-glass", "no-care-relationship"),
                detail=f"under break-glass grant {grant.grant_id}",
            ),
            event(
                at(2, 8),
                "dr.grey",
                "clinician",
                "pat-f",
                flags=("break-glass",),
                detail="emergency: arrest on ward 4",
            ),
            *[
                event(
                    at(2, 10) + timedelta(seconds=i),
                    "bulk.reader",
                    "care-coordinator",
                    f"pat-bulk-{i:02d}",
                )
                for i in range(BULK_PATIENTS)
            ],
            event(
                at(3, 11),
                "pharm.phil",
                "pharmacist",
                "pat-g",
                outcome=AuditOutcome.MINOR_FAILURE,
                flags=("consent-denied",),
                detail="1 withheld: denied by Consent/cons-1 provision 1",
            ),
            *[
                event(
                    at(3, 3, m),
                    "mallory",
                    "unauthenticated",
                    None,
                    AuditAction.LOGIN,
                    outcome=AuditOutcome.MINOR_FAILURE,
                    flags=("failed-login",),
                )
                for m in range(3)
            ],
            event(
                at(4, 8),
                "dr.grey",
                "clinician",
                None,
                AuditAction.LOGIN,
                outcome=AuditOutcome.MINOR_FAILURE,
                flags=("failed-login",),
            ),
            event(at(4, 8, 1), "dr.grey", "clinician", None, AuditAction.LOGIN),
            event(at(4, 15), "admin.ann", "admin", "pat-z", AuditAction.ERASURE),
        ]
    )
    return log, grant.grant_id


@pytest.fixture
def week(store: ResourceStore) -> tuple[AuditLog, str]:
    return scripted_week(store)


def weekly_review(store: ResourceStore, log: AuditLog, timezone: str = "UTC") -> AuditReview:
    return review(log, store, since=MONDAY, until=WEEK_END, timezone=timezone)


def spans(rows) -> dict[tuple[str, str], int]:  # type: ignore[no-untyped-def]
    return {(row.agent, row.patient): row.events for row in rows}


def test_review_names_every_finding(store: ResourceStore, week) -> None:
    log, grant_id = week
    report = weekly_review(store, log)

    assert report.events_reviewed == 13 + BULK_PATIENTS + 3  # the earlier event is left out
    assert report.chain.ok and report.chain.events_checked == report.events_reviewed + 1
    by_agent = {a.agent: a for a in report.agents}
    assert by_agent["dr.grey"].patients == {"pat-a", "pat-b", "pat-c", "pat-f"}
    assert by_agent["dr.grey"].events == 7 and by_agent["dr.grey"].roles == {"clinician"}
    assert len(by_agent["bulk.reader"].patients) == BULK_PATIENTS
    assert spans(report.no_relationship) == {("nurse.joy", "pat-d"): 2, ("nurse.joy", "pat-e"): 1}
    assert [(b.agent, b.day, b.patients) for b in report.bulk] == [
        ("bulk.reader", date(2025, 3, 5), BULK_PATIENTS)
    ]
    assert spans(report.after_hours) == {("dr.grey", "pat-c"): 1, ("dr.grey", "pat-a"): 1}

    uses = {(u.agent, u.patient, u.action): u for u in report.break_glass}
    assert set(uses) == {
        ("nurse.joy", "pat-e", "break-glass"),
        ("nurse.joy", "pat-e", "read"),
        ("dr.grey", "pat-f", "read"),
    }
    granted = uses[("nurse.joy", "pat-e", "read")]
    assert granted.grant_id == grant_id and granted.reason == STATED_REASON
    assert granted.reviewed_by == "auditor.al" and granted.reviewed_at is not None
    ungranted = uses[("dr.grey", "pat-f", "read")]
    assert ungranted.grant_id is None and ungranted.reason == "emergency: arrest on ward 4"

    assert [(d.agent, d.patient, d.outcome) for d in report.consent_denials] == [
        ("pharm.phil", "pat-g", "4")
    ]
    assert "Consent/cons-1" in report.consent_denials[0].detail
    assert [(f.agent, f.failures) for f in report.failed_sign_ins] == [
        ("mallory", 3),
        ("dr.grey", 1),
    ]
    assert [(e.agent, e.patient, e.action) for e in report.erasures] == [
        ("admin.ann", "pat-z", "erasure")
    ]


def test_after_hours_follow_the_configured_time_zone(store: ResourceStore, week) -> None:
    log, _ = week
    report = weekly_review(store, log, timezone="America/New_York")  # UTC-5 that week

    after = spans(report.after_hours)
    assert ("dr.grey", "pat-c") not in after  # 22:30 UTC is 17:30 in New York
    assert after[("dr.grey", "pat-a")] == 2  # 05:00 on Monday, and the Saturday
    assert after[("nurse.joy", "pat-d")] == 2  # 04:00 on Tuesday
    assert report.after_hours[0].first.utcoffset() == timedelta(hours=-5)


def test_bulk_threshold_is_a_parameter(store: ResourceStore, week) -> None:
    log, _ = week
    lenient = review(log, store, since=MONDAY, until=WEEK_END, bulk_threshold=BULK_PATIENTS)
    strict = review(log, store, since=MONDAY, until=WEEK_END, bulk_threshold=2)

    assert lenient.bulk == []
    assert {b.agent for b in strict.bulk} == {"bulk.reader", "dr.grey"}  # grey saw 3 on Monday


def test_markdown_names_findings_and_holds_no_clinical_content(store: ResourceStore, week):
    log, grant_id = week
    markdown = weekly_review(store, log).to_markdown()

    for heading in [
        "Audit chain verification",
        "Who accessed which patients",
        "Access without a care relationship",
        "Bulk access",
        "After-hours access",
        "Break-glass use",
        "Consent denials",
        "Failed sign-ins",
        "Erasures",
    ]:
        assert heading in markdown
    assert "INTACT" in markdown
    for expected in ["pat-c", "pat-bulk-54", "mallory", STATED_REASON, grant_id, "auditor.al"]:
        assert expected in markdown
    assert "no grant on record" in markdown
    for line in ["Reviewed by:", "Date:", "Signature:"]:
        assert line in markdown
    for clinical in CLINICAL:
        assert clinical.lower() not in markdown.lower()
    assert "pat-old" not in markdown  # outside the period


def test_json_report_matches_and_holds_no_clinical_content(store: ResourceStore, week) -> None:
    log, _ = week
    report = weekly_review(store, log).to_json()

    text = json.dumps(report)
    for clinical in CLINICAL:
        assert clinical.lower() not in text.lower()
    assert report["chain"]["ok"] is True
    assert report["bulk_access"] == [
        {"agent": "bulk.reader", "day": "2025-03-05", "patients": BULK_PATIENTS}
    ]
    grey = next(a for a in report["agents"] if a["agent"] == "dr.grey")
    assert grey["patients"] == ["pat-a", "pat-b", "pat-c", "pat-f"]


def test_review_of_a_tampered_log_says_so(store: ResourceStore, week) -> None:
    log, _ = week
    drop_triggers(store)
    with store.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM audit_events WHERE seq = 4"))

    report = weekly_review(store, log)

    assert not report.chain.ok
    markdown = report.to_markdown()
    assert "TAMPERED" in markdown and "| 4 | deleted |" in markdown


def test_review_refuses_bad_parameters(store: ResourceStore) -> None:
    log = AuditLog(store)
    with pytest.raises(ValueError, match="time zone"):
        review(log, store, since=MONDAY, until=WEEK_END, timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="end after"):
        review(log, store, since=WEEK_END, until=MONDAY)
    with pytest.raises(ValueError, match="work hours"):
        review(log, store, since=MONDAY, until=WEEK_END, work_hours=(19, 7))


# -- the commands ------------------------------------------------------------------------------


def drop_triggers(store: ResourceStore) -> None:
    statements = (
        ["DROP TRIGGER audit_events_no_update", "DROP TRIGGER audit_events_no_delete"]
        if store.is_sqlite
        else ["DROP TRIGGER audit_events_append_only ON audit_events"]
    )
    with store.engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))


def run(args: list[str], env: dict[str, str | None]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(audit_group, args, env=env, catch_exceptions=False)


def test_verify_command_exit_codes(store: ResourceStore, week, cli_env) -> None:
    intact = run(["verify"], cli_env)
    assert intact.exit_code == 0, intact.output
    assert "INTACT" in intact.stdout

    drop_triggers(store)
    with store.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM audit_events WHERE seq = 3"))
    tampered = run(["verify"], cli_env)

    assert tampered.exit_code == 1
    assert "TAMPERED" in tampered.stdout and "deleted    seq 3" in tampered.stdout


def test_verify_command_is_audited(store: ResourceStore, cli_env) -> None:
    assert run(["verify"], cli_env).exit_code == 0

    uses = list(AuditLog(store).events(agent=local_agent()))
    assert [(e.action, e.role) for e in uses] == [("audit-review", "auditor")]
    assert uses[0].resource["outcomeDesc"] == "verify"


def test_review_command_writes_the_report_and_is_audited(
    store: ResourceStore, week, cli_env, tmp_path
) -> None:
    out = tmp_path / "review.md"
    result = run(
        ["review", "--since", "2025-03-03", "--until", "2025-03-09", "--out", str(out)], cli_env
    )

    assert result.exit_code == 0, result.output
    markdown = out.read_text()
    assert "pat-a" in markdown and "Signature:" in markdown  # Sunday 9th is included
    assert "2025-03-03T00:00:00+00:00 to 2025-03-10T00:00:00+00:00" in markdown
    uses = list(AuditLog(store).events(agent=local_agent()))
    assert [e.action for e in uses] == ["audit-review"]
    assert uses[0].resource["outcomeDesc"].startswith("review 2025-03-03T00:00:00+00:00")


def test_review_command_json_and_time_zone(store: ResourceStore, week, cli_env) -> None:
    result = run(
        [
            "review",
            "--since",
            "2025-03-03T00:00:00Z",
            "--until",
            "2025-03-10T00:00:00Z",
            "--json",
            "--timezone",
            "America/New_York",
            "--bulk-threshold",
            "10",
        ],
        cli_env,
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["timezone"] == "America/New_York"
    assert report["bulk_threshold"] == 10
    assert report["failed_sign_ins"][0] == {
        "agent": "mallory",
        "failures": 3,
        "first": "2025-03-05T22:00:00-05:00",
        "last": "2025-03-05T22:02:00-05:00",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last tuesday", "--until", "2025-03-09"], "ISO 8601"),
        (["--since", "2025-03-03", "--until", "2025-13-45"], "ISO 8601"),
        (["--since", "2025-03-09", "--until", "2025-03-01"], "after --since"),
        (
            ["--since", "2025-03-03", "--until", "2025-03-09", "--timezone", "Nowhere/City"],
            "time zone",
        ),
        (
            ["--since", "2025-03-03", "--until", "2025-03-09", "--work-hours", "nine-five"],
            "START-END",
        ),
    ],
)
def test_review_command_rejects_bad_input_with_exit_two(cli_env, args, message) -> None:
    result = run(["review", *args], cli_env)

    assert result.exit_code == 2
    assert message in result.output


def test_review_command_on_a_tampered_log_exits_one_and_says_so(
    store: ResourceStore, week, cli_env, tmp_path
) -> None:
    drop_triggers(store)
    with store.engine.begin() as connection:
        connection.execute(sa.text("UPDATE audit_events SET agent = 'nobody' WHERE seq = 5"))
    out = tmp_path / "review.json"

    result = run(
        ["review", "--since", "2025-03-03", "--until", "2025-03-09", "--json", "--out", str(out)],
        cli_env,
    )

    assert result.exit_code == 1
    assert "failed verification" in result.stderr
    chain = json.loads(out.read_text())["chain"]
    assert chain["ok"] is False
    assert chain["findings"] == [
        {"seq": 5, "kind": "modified", "detail": chain["findings"][0]["detail"]}
    ]
