"""The patient-level holdout: patients kept out of a model's training so that its card, fairness
tables and release gate are judged on people it never saw.

Membership is a hash of the patient id with a salt, not a random draw, so anyone holding the same
data and the rule recorded in the model's metadata picks the same patients, and new encounters of
a held-out patient stay held out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HoldoutRule:
    salt: str = "careloop-holdout-v1"
    share: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 < self.share < 1.0:
            raise ValueError(f"the holdout share must be between 0 and 1, not {self.share}")

    def held_out(self, patient_id: str) -> bool:
        digest = hashlib.sha256(f"{self.salt}:{patient_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.share

    def mask(self, patient_ids: np.ndarray) -> np.ndarray:
        """True for the rows whose patient is held out."""
        cache: dict[str, bool] = {}
        return np.array(
            [cache.setdefault(p, self.held_out(p)) for p in map(str, patient_ids)], dtype=bool
        )

    def as_dict(self) -> dict[str, object]:
        return {"salt": self.salt, "share": self.share}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> HoldoutRule:
        return cls(salt=str(data["salt"]), share=float(data["share"]))  # type: ignore[arg-type]
