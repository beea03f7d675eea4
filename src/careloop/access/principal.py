"""Who is asking, and why: the principal, the purpose of use, and the context of one request."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from careloop.access.roles import Role

V3_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
# R4's v3-ActReason has no code for training a model, so careloop names that purpose itself.
CARELOOP_PURPOSE = "https://careloop.dev/fhir/CodeSystem/purpose-of-use"


class Purpose(StrEnum):
    """Purposes of use (v3-ActReason codes, plus careloop's model-training)."""

    TREATMENT = "TREAT"
    EMERGENCY_TREATMENT = "ETREAT"
    BREAK_THE_GLASS = "BTG"
    RESEARCH = "HRESCH"
    QUALITY_IMPROVEMENT = "HQUALIMP"
    OPERATIONS = "HOPERAT"
    PATIENT_REQUEST = "PATRQT"
    MODEL_TRAINING = "MODELTRAIN"

    @property
    def system(self) -> str:
        return CARELOOP_PURPOSE if self is Purpose.MODEL_TRAINING else V3_ACT_REASON

    @classmethod
    def parse(cls, text: str) -> Purpose:
        """A purpose from its code; raises ValueError naming the accepted codes."""
        try:
            return cls(text.strip().upper())
        except ValueError:
            accepted = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown purpose of use; use one of: {accepted}") from None


# What a role does when it does not say: care roles treat, a patient requests their own record.
DEFAULT_PURPOSE: dict[Role, Purpose] = {
    Role.CLINICIAN: Purpose.TREATMENT,
    Role.NURSE: Purpose.TREATMENT,
    Role.PHARMACIST: Purpose.TREATMENT,
    Role.CARE_COORDINATOR: Purpose.TREATMENT,
    Role.PATIENT: Purpose.PATIENT_REQUEST,
    Role.DATA_SCIENTIST: Purpose.RESEARCH,
    Role.AUDITOR: Purpose.OPERATIONS,
    Role.AI_COMMITTEE: Purpose.OPERATIONS,
    Role.ADMIN: Purpose.OPERATIONS,
    Role.INTEGRATION: Purpose.OPERATIONS,
    Role.EHR: Purpose.TREATMENT,
    Role.MONITOR: Purpose.TREATMENT,
}


@dataclass(frozen=True)
class Principal:
    """An authenticated actor: a person (web login), an API client (SMART backend services) or
    the local operator running the CLI (who holds the master key and is trusted as such, but is
    still audited and still bound by consent)."""

    subject: str  # user name, client id, or "local:<os user>"; never a patient's name
    kind: str  # "user", "client" or "local"
    role: Role
    fhir_user: str | None = None  # Practitioner/..., Patient/... (SMART fhirUser)
    organization: str | None = None  # Organization/...
    # granted SMART scopes for clients; None for people, whose role alone decides
    scopes: frozenset[str] | None = None

    @property
    def own_patient_id(self) -> str | None:
        """The patient id a patient principal is confined to."""
        if self.role is Role.PATIENT and self.fhir_user and self.fhir_user.startswith("Patient/"):
            return self.fhir_user.removeprefix("Patient/")
        return None

    @property
    def actor_references(self) -> frozenset[str]:
        """References a Consent's provision.actor may name to mean this principal."""
        refs = {ref for ref in (self.fhir_user, self.organization) if ref}
        return frozenset(refs)


@dataclass(frozen=True)
class AccessContext:
    """Why and from where one request is made."""

    purpose: Purpose
    request_id: str = ""
    source: str = ""  # client address, or "cli"
    break_glass_reason: str | None = None  # set when the caller invokes break-glass
    extra: dict[str, str] = field(default_factory=dict)
