"""The demo care site (a hospital, a clinic, their clinicians) and the people it looks after."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from careloop.synth import catalog
from careloop.synth._fhir import IdMinter, Resource, coding, concept, new_resource, reference_to

ADULT_AGE_RANGE = (25, 90)


@dataclass(frozen=True)
class Site:
    hospital: Resource
    clinic: Resource
    hospitalists: tuple[Resource, ...]
    primary_care: tuple[Resource, ...]

    def resources(self) -> list[Resource]:
        return [self.hospital, self.clinic, *self.hospitalists, *self.primary_care]


@dataclass(frozen=True)
class Person:
    index: int
    gender: str
    given: str
    family: str
    birth_date: date
    age: int
    street: str
    city: str
    state: str
    postal_code: str


def _address(street: str, city: str, state: str, postal_code: str) -> dict[str, object]:
    return {
        "use": "work",
        "line": [street],
        "city": city,
        "state": state,
        "postalCode": postal_code,
        "country": "US",
    }


def _organization(
    ids: IdMinter, name: str, local_id: str, kind: tuple[str, str], street: str
) -> Resource:
    organization = new_resource("Organization", ids.next("Organization"))
    organization["identifier"] = [{"system": catalog.ORGANIZATION_ID_SYSTEM, "value": local_id}]
    organization["active"] = True
    organization["type"] = [concept(coding(catalog.ORGANIZATION_TYPE, *kind))]
    organization["name"] = name
    # 555-01xx numbers are reserved for fiction, so no real line is ever dialled from a demo.
    organization["telecom"] = [{"system": "phone", "value": "+1-503-555-0100", "use": "work"}]
    organization["address"] = [_address(street, "Riverbend", "OR", "97301")]
    return organization


def _practitioner(
    ids: IdMinter, given: str, family: str, gender: str, organization: Resource
) -> Resource:
    practitioner = new_resource("Practitioner", ids.next("Practitioner"))
    local_id = f"DEMO-PR-{family.upper()}"
    practitioner["identifier"] = [{"system": catalog.PRACTITIONER_ID_SYSTEM, "value": local_id}]
    practitioner["active"] = True
    practitioner["name"] = [
        {"use": "official", "family": family, "given": [given], "prefix": ["Dr."]}
    ]
    practitioner["telecom"] = [
        {"system": "email", "value": f"{given}.{family}@example.org".lower(), "use": "work"}
    ]
    practitioner["gender"] = gender
    practitioner["address"] = copy.deepcopy(organization["address"])
    return practitioner


def build_site(seed: int) -> Site:
    """The same hospital and clinicians for every patient of one population."""
    ids = IdMinter(f"{seed}/site")
    hospital = _organization(
        ids,
        "Careloop Demo General Hospital",
        "DEMO-HOSP-1",
        ("prov", "Healthcare Provider"),
        "100 Harbor Road",
    )
    clinic = _organization(
        ids,
        "Careloop Demo Family Clinic",
        "DEMO-CLINIC-1",
        ("prov", "Healthcare Provider"),
        "12 Orchard Path",
    )
    hospitalists = (
        _practitioner(ids, "Miriam", "Achebe", "female", hospital),
        _practitioner(ids, "Jonas", "Ferreira", "male", hospital),
    )
    primary_care = (
        _practitioner(ids, "Leila", "Moreau", "female", clinic),
        _practitioner(ids, "Tobias", "Lindgren", "male", clinic),
    )
    return Site(hospital, clinic, hospitalists, primary_care)


def draw_person(rng: random.Random, index: int, window_start: datetime, min_age: int) -> Person:
    gender = rng.choice(("female", "male"))
    given_names = catalog.GIVEN_NAMES_FEMALE if gender == "female" else catalog.GIVEN_NAMES_MALE
    # Older adults dominate both wards and chronic-disease panels, so skew ages upwards.
    low, high = max(min_age, ADULT_AGE_RANGE[0]), ADULT_AGE_RANGE[1]
    age = int(low + (high - low) * rng.betavariate(2.2, 1.6))
    birthday_offset = timedelta(days=age * 365.25 + rng.uniform(1, 364))
    city, state, zip_prefix = rng.choice(catalog.TOWNS)
    return Person(
        index=index,
        gender=gender,
        given=rng.choice(given_names),
        family=rng.choice(catalog.FAMILY_NAMES),
        birth_date=(window_start - birthday_offset).date(),
        age=age,
        street=f"{rng.randint(2, 9800)} {rng.choice(catalog.STREET_NAMES)}",
        city=city,
        state=state,
        postal_code=f"{zip_prefix}{rng.randint(0, 99):02d}",
    )


def patient_resource(
    resource_id: str, person: Person, general_practitioner: Resource, clinic: Resource
) -> Resource:
    patient = new_resource("Patient", resource_id)
    patient["identifier"] = [
        {
            "use": "usual",
            "type": concept(
                coding(catalog.IDENTIFIER_TYPE, "MR", "Medical record number"),
                text="Medical record number",
            ),
            "system": catalog.MRN_SYSTEM,
            "value": f"DEMO-{person.index + 1:06d}",
        }
    ]
    patient["active"] = True
    patient["name"] = [{"use": "official", "family": person.family, "given": [person.given]}]
    handle = f"{person.given}.{person.family}.{person.index + 1}".lower()
    patient["telecom"] = [
        {"system": "phone", "value": f"+1-503-555-01{person.index % 100:02d}", "use": "home"},
        {"system": "email", "value": f"{handle}@example.org", "use": "home"},
    ]
    patient["gender"] = person.gender
    patient["birthDate"] = person.birth_date.isoformat()
    home = _address(person.street, person.city, person.state, person.postal_code)
    home["use"] = "home"
    patient["address"] = [home]
    patient["generalPractitioner"] = [reference_to(general_practitioner)]
    patient["managingOrganization"] = reference_to(clinic)
    return patient
