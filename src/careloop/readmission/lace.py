"""The LACE index (van Walraven et al., CMAJ 2010) on the same encounters, as the baseline the
readmission model must beat.

LACE adds points for Length of stay, Acuity of admission, Comorbidity (Charlson index) and
Emergency department visits:

    L  length of stay in days: <1: 0, 1: 1, 2: 2, 3: 3, 4-6: 4, 7-13: 5, >=14: 7
    A  acute (emergent) admission: 3
    C  Charlson index: 0: 0, 1: 1, 2: 2, 3: 3, >=4: 5
    E  emergency visits in the previous six months: 0-3 as counted, >=4: 4

What this data forces us to approximate:
- Comorbidity: only three diagnosis codes per encounter are exported (diag_1..3), so the Charlson
  index is computed from those three and undercounts patients with many conditions.
- Emergency visits: `number_emergency` counts the year before the encounter, not six months.
- Acuity: the admission is acute when its type is Emergency (1) or Trauma Center (7), or it came
  through the emergency room (admission source 7); "Urgent" admissions are not counted.
- Length of stay: `time_in_hospital` is whole days (1-14), so the "<1 day" row never applies.

The score (0-19) is the baseline's risk ranking; `lace_probability` maps it to a probability by
the observed readmission rate per score on training data, so calibration can be compared too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from careloop.readmission.data import DIAGNOSIS_COLUMNS, Encounters
from careloop.readmission.icd9 import charlson_index

ACUTE_ADMISSION_TYPES = frozenset({"1", "7"})
EMERGENCY_ROOM_SOURCE = "7"
MAX_SCORE = 19


def length_points(days: float) -> int:
    if np.isnan(days) or days < 1:
        return 0
    if days < 4:
        return int(days)
    if days < 7:
        return 4
    if days < 14:
        return 5
    return 7


def acuity_points(admission_type: str, admission_source: str) -> int:
    acute = admission_type in ACUTE_ADMISSION_TYPES or admission_source == EMERGENCY_ROOM_SOURCE
    return 3 if acute else 0


def comorbidity_points(charlson: int) -> int:
    return 5 if charlson >= 4 else max(charlson, 0)


def emergency_points(visits: float) -> int:
    if np.isnan(visits) or visits < 0:
        return 0
    return int(min(visits, 4))


def lace_components(encounters: Encounters) -> pd.DataFrame:
    """L, A, C, E points and their sum ("lace") for every encounter."""
    table = encounters.table
    charlson = [
        charlson_index(codes)
        for codes in table[list(DIAGNOSIS_COLUMNS)].itertuples(index=False, name=None)
    ]
    points = pd.DataFrame(
        {
            "L": [length_points(v) for v in table["time_in_hospital"]],
            "A": [
                acuity_points(t, s)
                for t, s in zip(
                    table["admission_type_id"], table["admission_source_id"], strict=True
                )
            ],
            "C": [comorbidity_points(v) for v in charlson],
            "E": [emergency_points(v) for v in table["number_emergency"]],
        }
    )
    points["charlson"] = charlson
    points["lace"] = points[["L", "A", "C", "E"]].sum(axis=1)
    return points


def fit_lace_calibration(scores: np.ndarray, labels: np.ndarray) -> list[float]:
    """Readmission rate per LACE score on training data (scores seen fewer than 30 times borrow
    the rate of all scores within one point, so a rare score does not get a noisy probability)."""
    scores = np.asarray(scores, dtype=int)
    labels = np.asarray(labels, dtype=float)
    overall = float(labels.mean()) if labels.size else 0.0
    table = []
    for score in range(MAX_SCORE + 1):
        near = scores == score
        if near.sum() < 30:
            near = np.abs(scores - score) <= 1
        table.append(float(labels[near].mean()) if near.any() else overall)
    return list(np.maximum.accumulate(table))  # LACE is monotone by design


def lace_probability(scores: np.ndarray, rates: list[float]) -> np.ndarray:
    index = np.clip(np.asarray(scores, dtype=int), 0, len(rates) - 1)
    return np.asarray(rates)[index]
