"""The alert budget: every card counts, and interruptions are rationed.

An interruptive card (warning or critical) costs a clinician's attention, and attention spent on
repeats is how alerts come to be ignored. So, per patient:

- on `patient-view`, a card about the same thing (same key) that interrupted within
  `repeat_after` is shown again as information, not as an interruption: opening the chart twice
  does not raise the same alarm twice;
- warning cards beyond `per_day` interruptions in 24 hours are shown as information, saying so;
- critical cards are never demoted by the budget (a contraindicated order must stop the
  prescriber every time), but they count against it, and the override report shows them.

Nothing is dropped: a demoted card is still returned, recorded and open to feedback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from careloop.cds.ledger import IssuedCard, LedgerCard

INTERRUPTIVE = frozenset({"warning", "critical"})
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class AlertBudget:
    per_day: int = 6  # interruptive cards per patient per 24 hours
    repeat_after: timedelta = timedelta(hours=4)

    def apply(
        self,
        cards: Sequence[IssuedCard],
        recent: Sequence[LedgerCard],
        now: datetime,
        *,
        repeats_interrupt: bool,
    ) -> list[IssuedCard]:
        """The cards in severity order, demoted to info where the budget says so.

        `recent` is the patient's cards of the last 24 hours; `repeats_interrupt` is False on
        patient-view and True when ordering (each signature is a new decision)."""
        day_ago = now - timedelta(hours=24)
        spent = sum(1 for r in recent if r.indicator in INTERRUPTIVE and r.created_at >= day_ago)
        last_interruption = {
            r.key: r.created_at
            for r in sorted(recent, key=lambda r: r.created_at)
            if r.indicator in INTERRUPTIVE
        }
        ordered = sorted(cards, key=lambda c: SEVERITY_ORDER.get(c.card["indicator"], 3))
        for issued in ordered:
            indicator = issued.card["indicator"]
            if indicator not in INTERRUPTIVE:
                continue
            shown = last_interruption.get(issued.key)
            if not repeats_interrupt and shown is not None and now - shown < self.repeat_after:
                _demote(issued, f"Already raised at {shown.isoformat(timespec='minutes')}.")
            elif indicator == "warning" and spent >= self.per_day:
                _demote(
                    issued,
                    f"Shown as information: this patient's alert budget of {self.per_day} "
                    "interruptive cards in 24 hours is spent.",
                )
            else:
                spent += 1
        return ordered


def _demote(issued: IssuedCard, why: str) -> None:
    card = issued.card
    issued.demoted_from = issued.demoted_from or card["indicator"]
    card["detail"] = (
        f"_{why} Severity on its own: {card['indicator']}._\n\n{card.get('detail', '')}"
    )
    card["indicator"] = "info"
