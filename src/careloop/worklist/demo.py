"""A patient who is deteriorating now: a septic stay from the synthetic generator, cut a few
hours after its sepsis onset, as the record looks while the patient is still on the ward.

The demo population's stays are complete (admitted, septic, treated, discharged), so the latest
48 h of every record are calm and nobody is in alert when the demo starts. A worklist with no
alert cannot show acknowledging one, so the demo (and the tests) can add this patient: the
generator's own data up to the cut, nothing invented. What only the future would tell is left
out: the discharge (the stay is in progress), the sepsis diagnosis recorded afterwards (it is
also the simulation's ground truth) and the discharge prescription.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from careloop.access.principal import Purpose
from careloop.access.relationships import CareRelationships
from careloop.access.roles import Role
from careloop.ingest import Ingestor
from careloop.store.repository import ResourceStore
from careloop.synth._fhir import GROUND_TRUTH_TAG_SYSTEM
from careloop.synth.people import build_site
from careloop.synth.population import DEFAULT_START, patient_resources, storyline_for
from careloop.worklist.snapshot import RefreshReport, refresh_all

SEARCH_LIMIT = 200  # patients of the seed to look through for a septic stay


def deteriorating_patient(seed: int = 12, hours_after_onset: float = 3.0) -> list[dict]:
    """The first septic stay of `seed` cut `hours_after_onset` hours after sepsis onset: the
    Patient, their history and the stay so far, in reference order (the care site's
    Organization and Practitioners first, so the list loads on its own)."""
    site = build_site(seed)
    for index in range(SEARCH_LIMIT):
        if storyline_for(seed, index).stay == "septic":
            record = list(patient_resources(seed, index, DEFAULT_START, site))
            return [*site.resources(), *_cut(record, hours_after_onset)]
    raise ValueError(f"no septic stay among the first {SEARCH_LIMIT} patients of seed {seed}")


def _is_ground_truth(resource: dict) -> bool:
    tags = resource.get("meta", {}).get("tag", [])
    return any(tag.get("system") == GROUND_TRUTH_TAG_SYSTEM for tag in tags)


def _cut(record: list[dict], hours_after_onset: float) -> list[dict]:
    truth = [resource for resource in record if _is_ground_truth(resource)]
    if not truth:
        raise ValueError("the stay has no recorded sepsis onset")
    cut = datetime.fromisoformat(truth[0]["onsetDateTime"]) + timedelta(hours=hours_after_onset)
    kept: list[dict] = []
    for resource in record:
        if _is_ground_truth(resource):
            continue
        kind = resource["resourceType"]
        if kind == "Observation" and datetime.fromisoformat(resource["effectiveDateTime"]) > cut:
            continue
        if kind == "MedicationRequest" and _after(resource.get("authoredOn"), cut):
            continue
        if kind == "Encounter" and _after(resource.get("period", {}).get("end"), cut):
            resource = {**resource, "status": "in-progress"}
            resource["period"] = {"start": resource["period"]["start"]}
            resource.pop("hospitalization", None)  # the discharge disposition is not known yet
        if kind == "Condition" and _after(resource.get("abatementDateTime"), cut):
            resource = {key: value for key, value in resource.items() if key != "abatementDateTime"}
            resource["clinicalStatus"] = {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                        "display": "Active",
                    }
                ]
            }
        kept.append(resource)
    return kept


def _after(value: object, cut: datetime) -> bool:
    return isinstance(value, str) and datetime.fromisoformat(value) > cut


def ingest_transaction(store: ResourceStore, resources: list[dict], source: str) -> None:
    """Write resources as one PUT transaction through the ingest path (validated, atomic)."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ],
    }
    Ingestor(store).ingest_document(orjson.dumps(bundle), source)


def add_deteriorating_patient(
    store: ResourceStore,
    practitioners: Iterable[str],
    seed: int = 12,
    *,
    since: datetime | None = None,
) -> str:
    """Load `deteriorating_patient(seed)` through the ingest path (validated, one transaction)
    and put them in the care of `practitioners` (fhirUser references) from `since` (now by
    default); their id."""
    resources = deteriorating_patient(seed)
    ingest_transaction(store, resources, f"deteriorating-patient-{seed}")
    patient_id = next(str(r["id"]) for r in resources if r["resourceType"] == "Patient")
    relationships = CareRelationships(store)
    for practitioner in practitioners:
        relationships.assign(practitioner, patient_id, since=since)
    return patient_id


def demo_worklist(
    store: ResourceStore, model_dir: Path, practitioners: Iterable[str]
) -> RefreshReport:
    """What `careloop demo` can do for the worklist: add a patient deteriorating now to the
    care team's list, then refresh every patient's snapshot as the local monitor."""
    from careloop.cli_rights import local_context, local_principal

    add_deteriorating_patient(store, practitioners)
    return refresh_all(
        store, model_dir, local_principal(Role.MONITOR), local_context(Purpose.TREATMENT)
    )
