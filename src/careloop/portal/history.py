"""Who looked at my record: audit events about one patient, in words the patient reads.

Input is what `careloop.audit.log.AuditLog.events(patient_id=...)` yields (sealed BALP
AuditEvents, opened); output is one row per event, newest first. Nothing here reads the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from careloop.audit.events import CARELOOP_AGENT
from careloop.audit.log import StoredAuditEvent
from careloop.portal.catalogue import ACTIONS, FLAGS, LABELS, PURPOSES, ROLES, say

# Actions that are not someone looking at or changing the record (signing in, token issue).
_NOT_ABOUT_THE_RECORD = frozenset({"login", "logout", "token"})
# careloop's own system roles, named in words after "careloop system".
SYSTEM_ROLES = frozenset({"monitor", "ehr", "integration"})
# A care relationship is a person's: for a system or the server's operator it says nothing.
_PERSON_ONLY_FLAGS = frozenset({"no-care-relationship"})
# Flags the patient is told about, most important first.
_FLAG_ORDER = (
    "break-glass",
    "no-care-relationship",
    "other-patient",
    "consent-denied",
    "erasure-requested",
    "erasure",
)


@dataclass(frozen=True)
class AccessRow:
    when: datetime
    who: str  # "nurse (nurse)", "You", "careloop system (home monitoring)"
    is_self: bool
    is_system: bool
    did: str  # "read 24 items"
    why: str  # "to treat you"
    notes: tuple[str, ...]  # flags in words: break-glass, not on the care team ...
    refused: bool
    flags: frozenset[str]


def agent_kind(event: StoredAuditEvent) -> str:
    """user, client or local, from the requesting agent's identifier system."""
    for agent in event.resource.get("agent", ()):
        if agent.get("requestor"):
            system = str(agent.get("who", {}).get("identifier", {}).get("system", ""))
            if system.startswith(CARELOOP_AGENT + "/"):
                return system.removeprefix(CARELOOP_AGENT + "/")
    return "user"


def entity_count(event: StoredAuditEvent) -> int:
    """How many resources of the record the event touched (BALP role 4 entities)."""
    return sum(
        1
        for entity in event.resource.get("entity", ())
        if entity.get("role", {}).get("code") == "4"
    )


def access_rows(
    events: Iterable[StoredAuditEvent],
    *,
    own_subject: str,
    lang: str,
    include_self: bool = False,
    limit: int = 200,
) -> list[AccessRow]:
    """The events worth telling the patient about, newest first, at most `limit`."""
    rows: list[AccessRow] = []
    for event in events:
        if event.action in _NOT_ABOUT_THE_RECORD:
            continue
        is_self = event.agent == own_subject and event.role == "patient"
        if is_self and not include_self and "erasure-requested" not in event.flags:
            continue
        rows.append(_row(event, is_self, lang))
    rows.sort(key=lambda row: row.when, reverse=True)
    return rows[:limit]


def _row(event: StoredAuditEvent, is_self: bool, lang: str) -> AccessRow:
    kind = agent_kind(event)
    is_system = kind != "user"
    role = ROLES.get(event.role, {"en": event.role, "es": event.role})
    role_words = role.get(lang) or role["en"]
    if is_self:
        who = say(LABELS, "data.you", lang)
    elif is_system and event.role in SYSTEM_ROLES:
        who = f"{say(LABELS, 'data.system', lang)} ({role_words})"
    elif is_system:  # the operator at the server's command line, or an API client
        who = say(LABELS, "data.system", lang)
    else:
        who = f"{event.agent} ({role_words})"
    action = ACTIONS.get(event.action, {"en": event.action, "es": event.action})
    did = action.get(lang) or action["en"]
    count = entity_count(event)
    if count:
        did = f"{did} {count} {say(LABELS, 'data.item' if count == 1 else 'data.items', lang)}"
    purpose = PURPOSES.get(event.purpose or "", None)
    why = (purpose.get(lang) or purpose["en"]) if purpose else ""
    refused = event.outcome != "0"
    shown = event.flags - _PERSON_ONLY_FLAGS if is_system else event.flags
    notes = [say(FLAGS, flag, lang) for flag in _FLAG_ORDER if flag in shown]
    if refused and "other-patient" not in event.flags and "consent-denied" not in event.flags:
        notes.append(say(FLAGS, "refused", lang))
    return AccessRow(
        when=event.recorded,
        who=who,
        is_self=is_self,
        is_system=is_system,
        did=did,
        why=why,
        notes=tuple(notes),
        refused=refused,
        flags=event.flags,
    )


def erasure_requested_at(events: Iterable[StoredAuditEvent]) -> datetime | None:
    """When the patient last asked for erasure (None if never, or if it was carried out)."""
    asked: datetime | None = None
    for event in events:
        if "erasure" in event.flags:
            asked = None
        elif "erasure-requested" in event.flags and event.outcome == "0":
            asked = event.recorded
    return asked
