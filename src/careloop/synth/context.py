"""What every generator step needs to know about the one patient it is writing."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime

from careloop.synth._fhir import IdMinter, Resource, reference_to
from careloop.synth.catalog import Allergen, Diagnosis
from careloop.synth.people import Person, Site
from careloop.synth.physiology import Physiology


@dataclass
class PatientContext:
    rng: random.Random
    ids: IdMinter
    person: Person
    patient: Resource
    site: Site
    window_start: datetime
    primary_care: Resource
    hospitalist: Resource
    physiology: Physiology
    allergens: tuple[Allergen, ...] = ()
    # Filled as the problem list is written, so later steps can cite Condition resources.
    chronic_conditions: dict[str, Resource] = field(default_factory=dict)

    @property
    def subject(self) -> dict[str, str]:
        return reference_to(self.patient)

    def has(self, diagnosis: Diagnosis) -> bool:
        return diagnosis.key in self.chronic_conditions

    def avoids(self, drug_key: str) -> bool:
        return any(drug_key in allergen.avoid_drugs for allergen in self.allergens)
