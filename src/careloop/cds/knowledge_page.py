"""What careloop's cards are built from, for the clinician who clicks a card's source: every
active playbook with its version, review dates and evidence, and the medication-safety knowledge
with where it comes from. No patient data; served publicly at /knowledge/cds."""

from __future__ import annotations

from careloop.cds.medications import KNOWLEDGE_DIR
from careloop.cds.medsafety import SafetyKnowledge
from careloop.cds.playbooks import PlaybookLibrary


def knowledge_page(playbooks: PlaybookLibrary, safety: SafetyKnowledge) -> str:
    lines = [
        "# careloop decision support: what the cards are built from",
        "",
        "careloop supports, and does not replace, the clinician's judgement. Every card names",
        "its source; this page lists the reviewed knowledge behind them.",
        "",
        "## Next-best-action playbooks",
        "",
    ]
    for playbook in sorted(playbooks.playbooks(), key=lambda p: p.id):
        review = playbook.review
        lines += [
            f"### {playbook.title} (`{playbook.id}` {playbook.version}, {playbook.status})",
            "",
            f"Trigger: {playbook.trigger.kind}. Reviewed by {review.reviewed_by} on "
            f"{review.reviewed_on}; next review due {review.next_review}.",
            "",
            *[f"- [{c.title}]({c.url})" if c.url else f"- {c.title}" for c in playbook.citations],
            "",
        ]
    lines += ["## Medication safety", ""]
    if safety.interactions_loaded:
        lines.append(
            "Drug-drug interactions: the ONC high-priority (interruptive) and non-interruptive "
            "lists (Phansalkar S, et al. JAMIA 2012;19(5):735-743), matched by ingredient."
        )
    else:
        lines.append("Drug-drug interactions: **not checked** (no interaction list installed).")
    lines.append("")
    for path in sorted(KNOWLEDGE_DIR.glob("*.yaml")):
        header = [
            line.removeprefix("#").strip()
            for line in path.read_text(encoding="utf-8").splitlines()[:3]
            if line.startswith("#")
        ]
        lines.append(f"- `{path.name}`: {' '.join(part for part in header if part)}")
    return "\n".join(lines) + "\n"
