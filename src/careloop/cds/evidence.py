"""Evidence a card cites: the guideline, label or study behind a suggestion or a warning."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Citation:
    title: str  # a human-readable reference, e.g. "Surviving Sepsis Campaign 2021, rec. 1"
    url: str | None = None  # a stable link (DOI, PubMed, label) when there is one
