"""Tables of the store (SQLAlchemy Core). Alembic migrations create and evolve them.

Data minimization: a column holds only what search or key management needs. Resource bodies are
encrypted; ids, patient references, codes and identifiers appear only as blind-index hashes;
the only clear clinical value is the time a resource is about, which date search must compare.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator):
    """Timestamps stored as naive UTC on every backend, read back as aware UTC.

    SQLite has no time-zone type and compares timestamps as text, so one zone everywhere is what
    makes date search correct on both backends.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("careloop stores only time-zone-aware timestamps")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):  # type: ignore[no-untyped-def]
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()

HASH_LEN = 32  # hex of a 128-bit blind index

store_settings = Table(
    "store_settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

data_keys = Table(
    "data_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    # 'patient' (one per patient compartment), 'shared' (resources outside any patient) or 'index'
    Column("purpose", String(16), nullable=False),
    Column("owner_hash", String(HASH_LEN), nullable=True, unique=True),
    Column("wrapped_key", LargeBinary, nullable=True),  # NULL once crypto-shredded
    Column("master_key_id", String(32), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("destroyed_at", UtcDateTime(), nullable=True),
)

resources = Table(
    "resources",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("resource_type", String(64), nullable=False),
    Column("id_hash", String(HASH_LEN), nullable=False),
    Column("version", Integer, nullable=False),
    Column("is_current", Boolean, nullable=False),
    Column("patient_hash", String(HASH_LEN), nullable=True),
    Column("data_key_id", String(32), ForeignKey("data_keys.key_id"), nullable=True),
    Column("content_hash", String(HASH_LEN), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("last_updated", UtcDateTime(), nullable=False),
    Column("date_start", UtcDateTime(), nullable=True),
    Column("date_end", UtcDateTime(), nullable=True),
    UniqueConstraint("id_hash", "resource_type", "version", name="uq_resource_version"),
    # uq_resource_version (id_hash first) also serves every look-up of current rows by id
    Index("ix_resources_patient", "patient_hash", "resource_type", "date_start"),
)

search_tokens = Table(
    "search_tokens",
    metadata,
    Column("resource_pk", Integer, ForeignKey("resources.pk", ondelete="CASCADE"), nullable=False),
    Column("param", String(32), nullable=False),
    Column("value_hash", String(HASH_LEN), nullable=False),
    Index("ix_search_tokens_lookup", "param", "value_hash"),
    Index("ix_search_tokens_resource", "resource_pk"),
)

# -- the privacy and security core (issue 3) ----------------------------------------------------
# Nothing here holds clinical content. Patients appear only as the blind-index `patient_hash`;
# secrets (TOTP seeds, free-text reasons) are sealed with a service key; tokens and session ids
# are stored as SHA-256 digests, so a copy of the database cannot be replayed as a login.

audit_events = Table(
    "audit_events",
    metadata,
    # assigned by the appender under the head lock: gap-free, so a deletion shows as a gap
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("recorded", UtcDateTime(), nullable=False),
    Column("action", String(32), nullable=False),  # what happened: read, search, login, erase ...
    Column("outcome", String(2), nullable=False),  # AuditEvent.outcome: 0, 4, 8 or 12
    Column("agent", String(128), nullable=False),  # user name or client id, never a patient's name
    Column("role", String(32), nullable=False),
    Column("purpose", String(32), nullable=True),
    Column("patient_hash", String(HASH_LEN), nullable=True),
    Column("flags", String(128), nullable=False, default=""),  # e.g. break-glass,no-relationship
    Column("body", LargeBinary, nullable=False),  # the sealed FHIR AuditEvent
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Index("ix_audit_events_patient", "patient_hash", "recorded"),
    Index("ix_audit_events_agent", "agent", "recorded"),
    Index("ix_audit_events_recorded", "recorded"),
)

# One row: the last sequence number and chain hash, MACed, so a truncated tail is detectable.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", Integer, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("mac", String(64), nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("role", String(32), nullable=False),
    # SMART fhirUser: Practitioner/..., Patient/... (a patient user's own record) or None
    Column("fhir_user", String(128), nullable=True),
    Column("password_hash", String(256), nullable=False),  # argon2id, encoded
    Column("totp_secret", LargeBinary, nullable=False),  # sealed with the identity key
    Column("totp_last_step", Integer, nullable=False, default=0),  # refuses a replayed code
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", UtcDateTime(), nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("username", String(64), ForeignKey("users.username"), nullable=False),
    Column("csrf_hash", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_seen", UtcDateTime(), nullable=False),
    Column("ended_at", UtcDateTime(), nullable=True),  # logout or idle/absolute timeout
)

api_clients = Table(
    "api_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("role", String(32), nullable=False),
    Column("scopes", String(2048), nullable=False),  # space-separated SMART scopes it may get
    Column("fhir_user", String(128), nullable=True),
    Column("jwks", String(16384), nullable=False),  # its public keys (JWK Set JSON)
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

access_tokens = Table(
    "access_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("client_id", String(64), ForeignKey("api_clients.client_id"), nullable=False),
    Column("scopes", String(2048), nullable=False),
    Column("issued_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
)

# jti of every client assertion accepted, until it expires: a replayed assertion is refused
used_assertions = Table(
    "used_assertions",
    metadata,
    Column("jti_hash", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
)

break_glass_grants = Table(
    "break_glass_grants",
    metadata,
    Column("grant_id", String(32), primary_key=True),
    Column("agent", String(128), nullable=False),
    Column("patient_hash", String(HASH_LEN), nullable=False),
    Column("reason", LargeBinary, nullable=False),  # sealed: a stated reason may name the patient
    Column("granted_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("reviewed_by", String(128), nullable=True),
    Column("reviewed_at", UtcDateTime(), nullable=True),
    Index("ix_break_glass_agent_patient", "agent", "patient_hash"),
)

# Who has a care relationship with whom (from CareTeam, Encounter participants or assignment)
care_relationships = Table(
    "care_relationships",
    metadata,
    Column("practitioner", String(128), primary_key=True),  # fhir_user, e.g. Practitioner/p1
    Column("patient_hash", String(HASH_LEN), primary_key=True),
    Column("since", UtcDateTime(), nullable=False),
    Column("until", UtcDateTime(), nullable=True),
)

# The tombstone of an erased patient: that, when, why and by whom, and nothing else.
erasures = Table(
    "erasures",
    metadata,
    Column("patient_hash", String(HASH_LEN), primary_key=True),
    Column("erased_at", UtcDateTime(), nullable=False),
    Column("erased_by", String(128), nullable=False),
    Column("basis", String(32), nullable=False),  # patient-request or retention
    Column("resources", Integer, nullable=False),
)

# -- CDS Hooks --------------------------------------------------------------------------------

# EHRs allowed to call careloop's CDS services: the JWT issuer, where its keys may come from
# (allow-listed jku URLs, or a registered JWK Set) and the FHIR servers careloop may fetch from
# on its behalf (an allow-list: a fhirServer named in a request is never trusted on its own).
cds_clients = Table(
    "cds_clients",
    metadata,
    Column("issuer", String(255), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("jku_allowlist", String(4096), nullable=False),  # JSON list of URLs
    Column("jwks", String(16384), nullable=True),  # JWK Set JSON, for clients without a jku
    Column("fhir_servers", String(4096), nullable=False),  # JSON list of FHIR base URLs
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

# jti of every CDS client JWT accepted, until it expires: a replayed JWT is refused
cds_jwt_ids = Table(
    "cds_jwt_ids",
    metadata,
    Column("jti_hash", String(64), primary_key=True),
    Column("issuer", String(255), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
)

# Every hook call answered: a hookInstance is answered once
cds_hook_calls = Table(
    "cds_hook_calls",
    metadata,
    Column("hook_instance", String(64), primary_key=True),
    Column("service_id", String(64), nullable=False),
    Column("issuer", String(255), nullable=False),
    Column("patient_hash", String(HASH_LEN), nullable=True),
    Column("received_at", UtcDateTime(), nullable=False),
)

# Every card returned: what it was about, what made it, and the FHIR record kept of it
cds_cards = Table(
    "cds_cards",
    metadata,
    Column("card_uuid", String(36), primary_key=True),
    Column(
        "hook_instance",
        String(64),
        ForeignKey("cds_hook_calls.hook_instance"),
        nullable=False,
    ),
    Column("service_id", String(64), nullable=False),
    Column("card_key", String(128), nullable=False),  # what it is about, for de-duplication
    Column("indicator", String(16), nullable=False),
    # the indicator before the alert budget demoted the card to info (migration 0006); None
    # when it was shown as made: what the alert-burden analytics count as demoted
    Column("demoted_from", String(16), nullable=True),
    Column("model_version", String(64), nullable=True),
    Column("playbook", String(128), nullable=True),  # id@version
    Column("unit", String(128), nullable=True),  # the ward or unit of the encounter
    Column("patient_hash", String(HASH_LEN), nullable=True),
    Column("record_ref", String(128), nullable=True),  # RiskAssessment/... or DetectedIssue/...
    Column("suggestion_ids", String(2048), nullable=False),  # JSON list
    Column("override_reasons", String(4096), nullable=False),  # JSON list of offered codes
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_cds_cards_patient", "patient_hash", "created_at"),
)

# What the clinician did with a card (CDS Hooks feedback); one row per card and outcome time
cds_feedback = Table(
    "cds_feedback",
    metadata,
    Column("card_uuid", String(36), ForeignKey("cds_cards.card_uuid"), primary_key=True),
    Column("outcome_timestamp", UtcDateTime(), primary_key=True),
    Column("outcome", String(16), nullable=False),  # accepted or overridden
    Column("accepted_suggestions", String(2048), nullable=False),  # JSON list of ids
    Column("override_reason", String(64), nullable=True),  # the code offered on the card
    Column("override_comment", LargeBinary, nullable=True),  # sealed: free text may name anyone
    Column("issuer", String(255), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
)

# -- Remote monitoring ------------------------------------------------------------------------

# The monitoring worker's checkpoint: its stream position and alert manager (shared row) and
# each person's baselines and open day (a row per person, keyed by patient hash so an erasure
# can delete it). Bodies are sealed: baselines are health data.
monitoring_workers = Table(
    "monitoring_workers",
    metadata,
    Column("worker", String(64), primary_key=True),
    Column("body", LargeBinary, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

monitoring_persons = Table(
    "monitoring_persons",
    metadata,
    Column("worker", String(64), primary_key=True),
    Column("patient_hash", String(HASH_LEN), primary_key=True),
    Column("body", LargeBinary, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_monitoring_persons_patient", "patient_hash"),
)

# Model governance. The registry: each registered model version with its artifact's checksum and
# what it was trained on, its state (candidate, active, retired) and every change of state. The
# drift history: one row per drift check of a version over a window of data. None of it is
# patient data: metrics and profiles are aggregates.
model_versions = Table(
    "model_versions",
    metadata,
    Column("version", String(128), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("artifact_dir", Text, nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("data_fingerprint", String(64)),
    Column("consent_filter", Text),
    Column("metrics", Text, nullable=False),  # JSON
    Column("policy", Text, nullable=False),  # JSON: the alert policy
    Column("features", Text, nullable=False),  # JSON list of feature names
    Column("registered_at", UtcDateTime(), nullable=False),
    Column("registered_by", String(128), nullable=False),
    Column("state_changed_at", UtcDateTime(), nullable=False),
    Index("ix_model_versions_name_state", "name", "state"),
)

model_state_changes = Table(
    "model_state_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version", String(128), nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", Text),
    Column("changed_at", UtcDateTime(), nullable=False),
    Index("ix_model_state_changes_version", "version"),
)

model_drift_runs = Table(
    "model_drift_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version", String(128), nullable=False),
    Column("model", String(64), nullable=False),
    Column("window", String(64), nullable=False),
    Column("run_at", UtcDateTime(), nullable=False),
    Column("status", String(8), nullable=False),  # ok | warn | alert
    Column("metrics", Text, nullable=False),  # JSON
    Column("breaches", Text, nullable=False),  # JSON list of readable sentences
    Column("notified", Boolean, nullable=False),
    Index("ix_model_drift_runs_version", "version", "run_at"),
)
