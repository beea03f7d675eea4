"""Secure messages between a patient and their care team, as FHIR R4 Communications.

A patient's message: status completed, subject and sender the patient, recipient the care team,
the text as `payload.contentString`, `sent` the time. A reply names the message it answers in
`inResponseTo` and the patient as recipient. The text is kept exactly as written (after a check
of its length and characters) and is escaped wherever it is shown.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from careloop.access.errors import AccessDenied
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal
from careloop.access.roles import Permission, Role
from careloop.audit.events import CARELOOP_AGENT, AuditAction

MAX_MESSAGE = 2000
CARE_TEAM = "Care team"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/communication-category"
PORTAL_TAG_SYSTEM = "https://careloop.dev/fhir/CodeSystem/message-channel"
# FHIR strings may hold any character but the C0 controls other than tab, CR and LF.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

WriteOne = Callable[[dict], None]


class MessageError(ValueError):
    """A message that cannot be sent; the text says why, in words for the writer."""


def check_text(text: str) -> str:
    """The message as it will be stored, or MessageError naming the problem."""
    if not text.strip():
        raise MessageError("Write a message before you send it.")
    if len(text) > MAX_MESSAGE:
        raise MessageError(
            f"A message can be at most {MAX_MESSAGE} characters; this one has {len(text)}."
        )
    if _CONTROL.search(text):
        raise MessageError("The message holds control characters that cannot be stored.")
    return text


def _now(at: datetime | None) -> str:
    moment = (at or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _base(patient_id: str, text: str, at: datetime | None) -> dict:
    return {
        "resourceType": "Communication",
        "id": str(uuid.uuid4()),
        "meta": {"tag": [{"system": PORTAL_TAG_SYSTEM, "code": "portal"}]},
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "notification"}]}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "sent": _now(at),
        "payload": [{"contentString": check_text(text)}],
    }


def patient_message(patient_id: str, text: str, *, at: datetime | None = None) -> dict:
    message = _base(patient_id, text, at)
    message["sender"] = {"reference": f"Patient/{patient_id}"}
    message["recipient"] = [{"display": CARE_TEAM}]
    return message


def care_team_reply(
    original: dict, principal: Principal, text: str, *, at: datetime | None = None
) -> dict:
    """A reply from a member of the care team to a patient's message. The sender is named by
    the careloop user (a Practitioner resource need not exist for a demo or staff account)."""
    patient_ref = str(original.get("subject", {}).get("reference", ""))
    if not patient_ref.startswith("Patient/"):
        raise MessageError("This message is not about a patient, so it cannot be answered here.")
    reply = _base(patient_ref.removeprefix("Patient/"), text, at)
    sender: dict = {
        "identifier": {"system": f"{CARELOOP_AGENT}/{principal.kind}", "value": principal.subject},
        "display": f"{principal.subject} ({principal.role.value})",
    }
    reply["sender"] = sender
    reply["recipient"] = [{"reference": patient_ref}]
    reply["inResponseTo"] = [{"reference": f"Communication/{original['id']}"}]
    return reply


def send_patient_message(
    access: AccessLayer, principal: Principal, ctx: AccessContext, text: str, write: WriteOne
) -> dict:
    """A patient writes to their care team: their own record only, audited as a write.

    The patient role holds no general write right, so this is a guarded operation of its own
    (like an amendment request): the patient supplies only the text; careloop builds the
    Communication, so the subject and sender are always the patient themself.
    """
    access.authorize(principal, ctx, Permission.MESSAGE_SEND, action=AuditAction.CREATE)
    patient_id = principal.own_patient_id
    if principal.role is not Role.PATIENT or patient_id is None:
        raise AccessDenied("only a patient sends a message from the portal")
    message = patient_message(patient_id, text)
    write(message)
    access.record(
        principal,
        ctx,
        AuditAction.CREATE,
        patient_id=patient_id,
        entities=(f"Communication/{message['id']}",),
        detail="secure message to the care team",
    )
    return message


@dataclass(frozen=True)
class MessageView:
    id: str
    patient_id: str
    sent: str  # the FHIR instant, sortable
    from_patient: bool
    sender: str  # display words for the writer
    text: str
    in_reply_to: str | None  # the id of the message it answers


def message_view(resource: dict) -> MessageView | None:
    """A Communication as shown in a conversation; None for one that is not a portal message."""
    if resource.get("resourceType") != "Communication":
        return None
    payload = resource.get("payload") or []
    texts = [p.get("contentString") for p in payload if isinstance(p, dict)]
    text = next((t for t in texts if isinstance(t, str)), None)
    if text is None:
        return None
    sender = resource.get("sender", {})
    sender_ref = str(sender.get("reference", "")) if isinstance(sender, dict) else ""
    subject = str(resource.get("subject", {}).get("reference", ""))
    answers = resource.get("inResponseTo") or []
    reply_to = next(
        (
            str(a.get("reference", "")).removeprefix("Communication/")
            for a in answers
            if isinstance(a, dict)
        ),
        None,
    )
    return MessageView(
        id=str(resource.get("id", "")),
        patient_id=subject.removeprefix("Patient/"),
        sent=str(resource.get("sent", "")),
        from_patient=sender_ref == subject and sender_ref.startswith("Patient/"),
        sender=str(sender.get("display", "")) if isinstance(sender, dict) else "",
        text=text,
        in_reply_to=reply_to,
    )


def conversation(resources: Iterable[dict], *, newest_first: bool = False) -> list[MessageView]:
    views = [view for r in resources if (view := message_view(r)) is not None]
    # a reply sorts after the message it answers even when both carry the same time
    views.sort(key=lambda v: (v.sent, v.in_reply_to is not None, v.id), reverse=newest_first)
    return views
