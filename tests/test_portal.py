"""The patient portal's logic without a browser: the phrase catalogue's reading level, sharing
choices as a Consent and back (and enforced by the access layer), the access history from real
audit events, messages, and what My care may say."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import textstat
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.access import rights
from careloop.access.consent import ConsentPolicy, DefaultPolicy, opt_out_consent
from careloop.access.errors import AccessDenied
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Role
from careloop.fhir import codes
from careloop.ingest import IngestOptions, Ingestor
from careloop.portal import catalogue
from careloop.portal.care import AcceptedCard, care_view, data_counts, data_kind, item_kind
from careloop.portal.history import access_rows, erasure_requested_at
from careloop.portal.messages import (
    MAX_MESSAGE,
    MessageError,
    care_team_reply,
    check_text,
    conversation,
    message_view,
    send_patient_message,
)
from careloop.portal.sharing import (
    FIXED,
    RECIPIENTS,
    ROW_KEYS,
    SharingGrid,
    consent_from_grid,
    field_name,
    grid_from_consents,
    grid_from_form,
)
from careloop.store.crypto import MasterKey
from careloop.store.repository import ResourceStore
from careloop.synth import write_population

# -- the catalogue ------------------------------------------------------------------------------

# English: the Flesch-Kincaid grade level, a US school grade (Kincaid et al. 1975): at most 8.
MAX_ENGLISH_GRADE = 8.0
# Spanish: Fernández Huerta's 1959 adaptation of Flesch's reading ease (0-100, higher is
# easier), read on Flesch's bands: 60-70 "normal" is 7th-8th grade, 70-80 "bastante fácil" 6th
# grade. So 60 is the floor of the 6th-to-8th-grade band.
MIN_SPANISH_EASE = 60.0
SENTENCE_TABLES = {
    "PLAN_ITEMS": catalogue.PLAN_ITEMS,
    "GENERIC_ITEM": {"generic": catalogue.GENERIC_ITEM},
    "SENTENCES": catalogue.SENTENCES,
    "DATA_USES": catalogue.DATA_USES,
    "SHARING_ROW_HELP": catalogue.SHARING_ROW_HELP,
    "FLAGS": catalogue.FLAGS,
}
WORD_TABLES = {
    "DATA_KINDS": catalogue.DATA_KINDS,
    "SHARING_ROWS": catalogue.SHARING_ROWS,
    "SHARING_COLUMNS": catalogue.SHARING_COLUMNS,
    "ROLES": catalogue.ROLES,
    "ACTIONS": catalogue.ACTIONS,
    "PURPOSES": catalogue.PURPOSES,
    "LABELS": catalogue.LABELS,
}
SENTENCES = [
    pytest.param(entry, id=f"{table}:{key}")
    for table, entries in SENTENCE_TABLES.items()
    for key, entry in entries.items()
]


@pytest.fixture
def offline_syllables(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """textstat counts English syllables with NLTK's CMU dictionary, a separate download that
    is not reachable here (and that textstat would try to fetch); without it, textstat's own
    fallback is Pyphen's hyphenation dictionary, used for Spanish in any case. Pyphen counts
    hyphenation points, which can undercount syllables slightly, so the English threshold is
    checked with a margin (7.5, not 8)."""
    monkeypatch.setattr("textstat.backend.counts._count_syllables.get_cmudict", lambda lang: None)
    yield
    textstat.set_lang("en_US")


@pytest.mark.parametrize("entry", SENTENCES)
def test_every_catalogue_sentence_reads_at_6th_to_8th_grade(entry, offline_syllables) -> None:
    textstat.set_lang("en_US")
    grade = textstat.flesch_kincaid_grade(entry["en"])
    assert grade <= MAX_ENGLISH_GRADE - 0.5, f"English grade {grade}: {entry['en']}"
    textstat.set_lang("es")
    ease = textstat.fernandez_huerta(entry["es"])
    assert ease >= MIN_SPANISH_EASE, f"Spanish ease {ease}: {entry['es']}"


def test_the_reading_test_would_catch_a_harder_sentence(offline_syllables) -> None:
    textstat.set_lang("en_US")
    hard = (
        "Consequently, the multidisciplinary interprofessional team recommends comprehensive "
        "reassessment of your antimicrobial pharmacotherapy considering nephrotoxicity."
    )
    assert textstat.flesch_kincaid_grade(hard) > MAX_ENGLISH_GRADE
    textstat.set_lang("es")
    difícil = (
        "Consecuentemente, el equipo multidisciplinario recomienda una reevaluación "
        "exhaustiva de su farmacoterapia antimicrobiana considerando la nefrotoxicidad."
    )
    assert textstat.fernandez_huerta(difícil) < MIN_SPANISH_EASE


def test_every_entry_has_english_and_spanish() -> None:
    for name, table in {**SENTENCE_TABLES, **WORD_TABLES}.items():
        for key, entry in table.items():
            assert set(entry) == set(catalogue.LANGUAGES), f"{name}:{key}"
            assert all(text.strip() for text in entry.values()), f"{name}:{key}"
            assert entry["en"] != entry["es"] or key in ("hiv", "auditor"), f"{name}:{key}"
    # every row and column of the sharing grid is worded
    assert set(catalogue.SHARING_ROWS) == set(ROW_KEYS) == set(catalogue.SHARING_ROW_HELP)
    assert set(catalogue.SHARING_COLUMNS) == set(RECIPIENTS)


def test_every_shipped_playbook_has_a_plan_phrase() -> None:
    import yaml

    import careloop.cds

    shipped = Path(careloop.cds.__file__).parent / "playbooks"
    ids = {yaml.safe_load(path.read_text())["id"] for path in shipped.glob("*.yaml")}
    assert ids, "no playbooks shipped"
    assert {f"playbook:{i}" for i in ids} <= set(catalogue.PLAN_ITEMS)


# -- sharing: grid <-> Consent ------------------------------------------------------------------

PATIENT = "portal-test-patient"
OPT_OUT = ConsentPolicy()
CELLS = [(row, who) for row in ROW_KEYS for who in RECIPIENTS]


@settings(max_examples=60, deadline=None)
@given(st.sets(st.sampled_from(CELLS)))
def test_a_grid_survives_the_round_trip_through_a_consent(cells) -> None:
    grid = SharingGrid(frozenset(cells)).normalized()
    consent = consent_from_grid(PATIENT, grid)
    assert grid_from_consents(PATIENT, [consent], OPT_OUT) == grid


def test_the_round_trip_holds_under_an_opt_in_site_policy_too() -> None:
    opt_in = ConsentPolicy(default=DefaultPolicy.OPT_IN)
    nothing_yet = grid_from_consents(PATIENT, [], opt_in)
    assert nothing_yet.allowed == FIXED  # opt-in: only what care always needs
    chosen = SharingGrid(frozenset({("vital-signs", "care-team"), ("whole-record", "research")}))
    consent = consent_from_grid(PATIENT, chosen)
    assert grid_from_consents(PATIENT, [consent], opt_in) == chosen.normalized()


def test_the_grid_reads_consents_recorded_elsewhere() -> None:
    """A research opt-out a clinician recorded through the API shows on the patient's page."""
    recorded = opt_out_consent(PATIENT, [Purpose.RESEARCH], consent_id="from-the-clinic")
    grid = grid_from_consents(PATIENT, [recorded], OPT_OUT)
    assert not any(grid.allows(row, "research") for row in ROW_KEYS)
    assert all(grid.allows(row, "care-team") for row in ROW_KEYS)
    assert all(grid.allows(row, "model-training") for row in ROW_KEYS)


def test_a_withdrawn_portal_consent_says_nothing() -> None:
    denied = consent_from_grid(PATIENT, SharingGrid(frozenset()))
    withdrawn = consent_from_grid(PATIENT, SharingGrid.everything(), active=False)
    assert grid_from_consents(PATIENT, [withdrawn], OPT_OUT) == SharingGrid.everything()
    assert grid_from_consents(PATIENT, [denied], OPT_OUT).allowed == FIXED


def test_the_form_names_cells_and_denying_the_whole_record_denies_every_part() -> None:
    form = {field_name(row, "care-team"): "on" for row in ROW_KEYS}
    form[field_name("vital-signs", "research")] = "on"  # but not the whole record for research
    grid = grid_from_form(form)
    assert all(grid.allows(row, "care-team") for row in ROW_KEYS)
    assert not grid.allows("vital-signs", "research")
    assert grid.allows("whole-record", "care-team")  # fixed, whatever the form says
    assert grid_from_form({}).allowed == FIXED


def test_the_consent_only_governs_the_grid_purposes() -> None:
    consent = consent_from_grid(PATIENT, SharingGrid(frozenset()))
    purposes = {c["code"] for c in consent["provision"]["purpose"]}
    assert purposes == {"TREAT", "ETREAT", "HRESCH", "MODELTRAIN"}
    assert consent["scope"]["coding"][0]["code"] == "patient-privacy"
    assert all(p["type"] == "deny" for p in consent["provision"]["provision"])


# -- on a real store: enforced from the next read, audited, shown ------------------------------


@pytest.fixture(scope="module")
def portal_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResourceStore]:
    """SQLite with careloop's synthetic population (three people), loaded by the ingestor."""
    home = tmp_path_factory.mktemp("portal")
    write_population(home / "population", 3)
    store = ResourceStore.open(f"sqlite:///{home / 'store.db'}", MasterKey.from_bytes(b"k" * 32))
    report = Ingestor(store, IngestOptions(workers=0)).ingest_paths([home / "population"])
    assert report.ok
    yield store
    store.close()


def _patients(store: ResourceStore) -> list[str]:
    return [str(item.body["id"]) for item in store.search("Patient", count=10).resources]


def _write_one(store: ResourceStore):
    ingestor = Ingestor(store, IngestOptions(workers=0))
    return lambda resource: ingestor.ingest_document(orjson.dumps(resource), "test")


NURSE = Principal("nurse", "user", Role.NURSE, fhir_user="Practitioner/demo-nurse")
TREAT = AccessContext(Purpose.TREATMENT, source="127.0.0.1")


def _patient(patient_id: str) -> Principal:
    return Principal("patient", "user", Role.PATIENT, fhir_user=f"Patient/{patient_id}")


PATIENT_CTX = AccessContext(Purpose.PATIENT_REQUEST, source="127.0.0.1")


def _labs(access: AccessLayer, patient_id: str) -> tuple[int, int]:
    page, withheld = access.search(
        NURSE,
        TREAT,
        "Observation",
        lambda pid: access.store.search(
            "Observation", patient_id=pid, codes=[f"{codes.LOINC}|{codes.CREATININE}"], count=50
        ),
        patient_id=patient_id,
        query_text="code=creatinine",
    )
    return len(page.resources), withheld


def test_a_saved_choice_changes_what_the_access_layer_releases(portal_store) -> None:
    access = AccessLayer(portal_store)
    patient_id = next(p for p in _patients(portal_store) if _labs(access, p)[0])
    released, withheld = _labs(access, patient_id)
    assert released > 0 and withheld == 0
    principal = _patient(patient_id)
    write = _write_one(portal_store)
    no_labs = SharingGrid.everything().allowed - {("lab-tests", "care-team")}
    consent = consent_from_grid(patient_id, SharingGrid(frozenset(no_labs)))
    rights.record_consent(access, principal, PATIENT_CTX, consent, write)
    assert _labs(access, patient_id) == (0, released)  # enforced from the next read
    # the page reads it back from the store, through the access layer
    stored = access.patient_compartment(principal, PATIENT_CTX, patient_id, ["Consent"])
    grid = grid_from_consents(patient_id, [r.body for r in stored.resources], access.consent_policy)
    assert not grid.allows("lab-tests", "care-team") and grid.allows("vital-signs", "care-team")
    # research and model training: a record-level opt-out leaves the patient out of training
    scientist = Principal("ds", "user", Role.DATA_SCIENTIST)
    training = AccessContext(Purpose.MODEL_TRAINING, source="cli")
    assert patient_id in set(access.consented_patients(scientist, training, [patient_id]))
    cells = SharingGrid.everything().allowed - {("whole-record", "model-training")}
    rights.record_consent(
        access, principal, PATIENT_CTX, consent_from_grid(patient_id, SharingGrid(cells)), write
    )
    assert list(access.consented_patients(scientist, training, [patient_id])) == []
    assert _labs(access, patient_id) == (released, 0)  # labs shared with the care team again
    # withdrawn: the portal consent is kept as a version, and no longer says anything
    withdrawn = consent_from_grid(patient_id, SharingGrid.everything(), active=False)
    rights.record_consent(access, principal, PATIENT_CTX, withdrawn, write)
    assert patient_id in set(access.consented_patients(scientist, training, [patient_id]))
    assert len(portal_store.history("Consent", withdrawn["id"])) == 3


def test_a_patient_cannot_record_a_consent_for_someone_else(portal_store) -> None:
    access = AccessLayer(portal_store)
    mine, other = _patients(portal_store)[:2]
    consent = consent_from_grid(other, SharingGrid(frozenset()))
    with pytest.raises(AccessDenied):
        rights.record_consent(
            access, _patient(mine), PATIENT_CTX, consent, _write_one(portal_store)
        )


def test_the_access_history_from_real_audit_events(portal_store) -> None:
    access = AccessLayer(portal_store)
    patient_id = _patients(portal_store)[0]
    started = datetime.now(UTC) - timedelta(seconds=1)
    access.patient_compartment(NURSE, TREAT, patient_id, ["Condition"])  # no care relationship
    clinician = Principal("dr-who", "user", Role.CLINICIAN, fhir_user="Practitioner/dr-who")
    access.relationships.assign("Practitioner/dr-who", patient_id)
    access.grant_break_glass(clinician, TREAT, patient_id, "unconscious in the emergency room")
    access.patient_compartment(clinician, TREAT, patient_id, ["Observation"])
    monitor = Principal("local:worker", "local", Role.MONITOR)
    access.patient_compartment(monitor, TREAT, patient_id, ["Observation"])
    me = _patient(patient_id)
    access.patient_compartment(me, PATIENT_CTX, patient_id, ["Patient"])
    rights.request_erasure(access, me, PATIENT_CTX, patient_id)
    events = list(access.audit.events(since=started, patient_id=patient_id))
    rows = access_rows(events, own_subject="patient", lang="en")
    nurse = next(row for row in rows if row.who == "nurse (nurse)")
    assert nurse.why == "to treat you" and nurse.did.startswith("read")
    assert "Not on your care team. It will be checked." in nurse.notes
    emergency = [row for row in rows if row.who == "dr-who (doctor)" and "break-glass" in row.flags]
    assert emergency and "Emergency access. It will be checked." in emergency[0].notes
    system = next(row for row in rows if row.is_system)
    assert system.who == "careloop system (home monitoring)"
    # the patient's own reads are left out unless asked for; the erasure request is shown
    assert [row.is_self for row in rows].count(True) == 1
    assert len(access_rows(events, own_subject="patient", lang="en", include_self=True)) > len(rows)
    assert [r.when for r in rows] == sorted((r.when for r in rows), reverse=True)
    assert erasure_requested_at(events) is not None
    # nothing was erased: a request only asks
    assert portal_store.read("Patient", patient_id) is not None
    spanish = access_rows(events, own_subject="patient", lang="es")
    assert any(row.who == "nurse (enfermera)" and row.why == "para tratarlo" for row in spanish)


# -- messages -----------------------------------------------------------------------------------


def test_message_text_is_checked_and_kept_as_written() -> None:
    script = "<script>alert(1)</script>\nThank you & see you"
    assert check_text(script) == script
    for bad in ("", "   \n ", "x" * (MAX_MESSAGE + 1), "null\x00byte"):
        with pytest.raises(MessageError):
            check_text(bad)
    with pytest.raises(MessageError, match=str(MAX_MESSAGE)):
        check_text("x" * (MAX_MESSAGE + 1))
    assert check_text("x" * MAX_MESSAGE)


def test_a_message_and_its_reply_are_valid_communications(portal_store) -> None:
    access = AccessLayer(portal_store)
    patient_id = _patients(portal_store)[1]
    write = _write_one(portal_store)
    sent = send_patient_message(
        access, _patient(patient_id), PATIENT_CTX, "<script>alert(1)</script>", write
    )
    assert sent["subject"] == sent["sender"] == {"reference": f"Patient/{patient_id}"}
    assert sent["status"] == "completed" and sent["sent"].endswith("Z")
    nurse = Principal("nurse", "user", Role.NURSE, fhir_user="Practitioner/demo-nurse")
    reply = care_team_reply(sent, nurse, "We will call you today.")
    assert reply["inResponseTo"] == [{"reference": f"Communication/{sent['id']}"}]
    write(reply)  # validated and stored by the ingestor, like any FHIR write
    stored = access.patient_compartment(
        _patient(patient_id), PATIENT_CTX, patient_id, ["Communication"]
    )
    views = conversation([item.body for item in stored.resources])
    assert [view.from_patient for view in views] == [True, False]
    assert views[0].text == "<script>alert(1)</script>"
    assert views[1].in_reply_to == sent["id"] and views[1].sender == "nurse (nurse)"
    with pytest.raises(AccessDenied):  # only a patient writes from the portal
        send_patient_message(access, nurse, TREAT, "hello", write)


def test_a_reply_needs_a_patient_message() -> None:
    not_about_a_patient = {"resourceType": "Communication", "id": "x", "subject": {}}
    with pytest.raises(MessageError):
        care_team_reply(not_about_a_patient, NURSE, "hello")
    assert message_view({"resourceType": "Communication", "id": "y"}) is None


# -- what My care may say ------------------------------------------------------------------------


def _observation(code: str, category: str, **extra) -> dict:
    return {
        "resourceType": "Observation",
        "code": {"coding": [{"system": codes.LOINC, "code": code}]},
        "category": [{"coding": [{"system": codes.OBSERVATION_CATEGORY, "code": category}]}],
        **extra,
    }


def test_my_care_says_only_what_a_clinician_accepted_in_catalogue_words() -> None:
    now = datetime.now(UTC)
    risk = {
        "resourceType": "RiskAssessment",
        "method": {"text": "careloop sepsis model sepsis-lgbm-1"},
        "occurrenceDateTime": "2026-11-20T08:00:00Z",
        "prediction": [{"probabilityDecimal": 0.8731, "rationale": "lactate 4.1 mmol/L"}],
    }
    truth = {"resourceType": "Flag", "meta": {"tag": [{"code": "ground-truth"}]}}
    accepted = [
        AcceptedCard("playbook:sepsis-hour-1-bundle", now),
        AcceptedCard("interaction:warfarin+aspirin", now - timedelta(days=1)),
        AcceptedCard("something-new:x", now - timedelta(days=2)),
    ]
    view = care_view([risk, truth, _observation("8867-4", "vital-signs")], accepted, "en")
    texts = [item.text for item in view.items]
    assert texts == [
        catalogue.PLAN_ITEMS["playbook:sepsis-hour-1-bundle"]["en"],
        catalogue.PLAN_ITEMS["interaction"]["en"],
        catalogue.GENERIC_ITEM["en"],
    ]
    shown = " ".join(texts)
    assert "87" not in shown and "%" not in shown and "lactate" not in shown
    assert view.last_risk_check == datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert view.data_used == (("vital-signs", 1),)
    spanish = care_view([], accepted[:1], "es")
    assert spanish.items[0].text == catalogue.PLAN_ITEMS["playbook:sepsis-hour-1-bundle"]["es"]
    nothing = care_view([], [], "en")
    assert nothing.items == () and nothing.last_risk_check is None


def test_data_kinds_tell_home_devices_from_the_ward() -> None:
    ward = _observation("8867-4", "vital-signs")
    watch = _observation("8867-4", "vital-signs", device={"reference": "Device/w1"})
    lab = _observation("2160-0", "laboratory")
    assert [data_kind(r) for r in (ward, watch, lab)] == [
        "vital-signs",
        "home-devices",
        "lab-tests",
    ]
    assert item_kind("playbook:ckd-monitoring") == "playbook:ckd-monitoring"
    assert item_kind("renal:metformin") == "renal"
    counts = data_counts([ward, watch, lab, {"resourceType": "MedicationRequest"}])
    assert counts == [("vital-signs", 1), ("lab-tests", 1), ("home-devices", 1), ("medicines", 1)]
