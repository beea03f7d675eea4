"""What the readmission model knows at discharge: the encounter's own fields and the patient's
history earlier in the same data, as a numeric matrix LightGBM reads (categories as integer codes
of a vocabulary fixed at training).

History uses only the past: a patient's encounters are ordered by `encounter_id` (smaller is
earlier) and an encounter sees counts over the encounters before it. Earlier encounters' outcomes
are deliberately not used: the data has no dates, so whether an earlier readmission had been
observed by this discharge cannot be known, and using it could leak the future.

Race is not an input (see `EXCLUDED_INPUTS`); it stays a reporting group for the fairness tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from careloop.readmission.data import (
    COUNT_COLUMNS,
    DIAGNOSIS_COLUMNS,
    DRUG_COLUMNS,
    ENCOUNTER,
    PATIENT,
    Encounters,
)
from careloop.readmission.icd9 import chapter, charlson_index
from careloop.readmission.lace import ACUTE_ADMISSION_TYPES, EMERGENCY_ROOM_SOURCE

# Inputs the model does not use, and why (the model card quotes this).
EXCLUDED_INPUTS = {
    "race": "a social category, not a clinical cause: using it would let the score differ by "
    "race for otherwise identical patients; it is reported on, not predicted from",
    "payer_code": "insurance is a proxy for income and would steer follow-up resources by ability "
    "to pay; it is reported on, not predicted from",
    "weight": "missing for 97% of encounters",
}
HISTORY_FEATURES = ("prior_encounters", "prior_days_in_hospital", "prior_acute_admissions")
DERIVED_NUMERIC = ("prior_year_visits", "charlson_index", "drugs_used", "drugs_changed")
NUMERIC_FEATURES = (*COUNT_COLUMNS, *DERIVED_NUMERIC, *HISTORY_FEATURES)
CATEGORICAL_FEATURES = (
    "admission_type_id",
    "discharge_disposition_id",
    "admission_source_id",
    "medical_specialty",
    "diag_1_chapter",
    "diag_2_chapter",
    "diag_3_chapter",
    "diag_1_code",
    "max_glu_serum",
    "A1Cresult",
    "insulin",
    "metformin",
    "change",
    "diabetesMed",
)
FEATURE_NAMES = (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES)
OTHER = "other"  # the code of a category value unseen or rare at training
MIN_CATEGORY_COUNT = 50  # rarer values share OTHER, so a tree cannot split on a handful of rows
# Discharged dead: readmission is impossible, so these encounters are outside the population at
# risk for training and evaluation (they are still scored when asked).
EXPIRED_DISPOSITIONS = frozenset({"11", "19", "20", "21"})


def at_risk(encounters: Encounters) -> np.ndarray:
    """True for encounters after which the patient could be readmitted (not discharged dead)."""
    return ~encounters.table["discharge_disposition_id"].isin(EXPIRED_DISPOSITIONS).to_numpy()


def history(table: pd.DataFrame) -> pd.DataFrame:
    """Per encounter, counts over the same patient's earlier encounters in `table`."""
    acute = table["admission_type_id"].isin(ACUTE_ADMISSION_TYPES) | (
        table["admission_source_id"] == EMERGENCY_ROOM_SOURCE
    )
    ordered = pd.DataFrame(
        {
            PATIENT: table[PATIENT].to_numpy(),
            ENCOUNTER: table[ENCOUNTER].to_numpy(),
            "days": table["time_in_hospital"].fillna(0).to_numpy(),
            "acute": acute.to_numpy(dtype=float),
            "row": np.arange(len(table)),
        }
    ).sort_values([PATIENT, ENCOUNTER], kind="stable")
    by_patient = ordered.groupby(PATIENT, sort=False)
    ordered["prior_encounters"] = by_patient.cumcount().astype(float)
    # cumulative sums include the encounter itself: subtract it to keep only the past
    ordered["prior_days_in_hospital"] = by_patient["days"].cumsum() - ordered["days"]
    ordered["prior_acute_admissions"] = by_patient["acute"].cumsum() - ordered["acute"]
    past = ordered.sort_values("row")
    return past[list(HISTORY_FEATURES)].reset_index(drop=True)


def raw_features(encounters: Encounters) -> pd.DataFrame:
    """Every feature before categories are coded: numbers as floats, categories as text."""
    table = encounters.table
    frame = pd.DataFrame({name: table[name].to_numpy() for name in COUNT_COLUMNS})
    frame["prior_year_visits"] = (
        table[["number_outpatient", "number_emergency", "number_inpatient"]].sum(axis=1).to_numpy()
    )
    frame["charlson_index"] = [
        float(charlson_index(codes))
        for codes in table[list(DIAGNOSIS_COLUMNS)].itertuples(index=False, name=None)
    ]
    drugs = table[list(DRUG_COLUMNS)]
    frame["drugs_used"] = drugs.isin(["Steady", "Up", "Down"]).sum(axis=1).to_numpy(dtype=float)
    frame["drugs_changed"] = drugs.isin(["Up", "Down"]).sum(axis=1).to_numpy(dtype=float)
    frame = pd.concat([frame, history(table)], axis=1)
    for name in ("admission_type_id", "discharge_disposition_id", "admission_source_id"):
        frame[name] = table[name].to_numpy()
    frame["medical_specialty"] = table["medical_specialty"].to_numpy()
    for index, column in enumerate(DIAGNOSIS_COLUMNS, start=1):
        frame[f"diag_{index}_chapter"] = table[column].map(chapter).to_numpy()
    frame["diag_1_code"] = table["diag_1"].str.split(".").str[0].to_numpy()
    for name in ("max_glu_serum", "A1Cresult", "insulin", "metformin", "change", "diabetesMed"):
        frame[name] = table[name].to_numpy()
    return frame[list(FEATURE_NAMES)]


@dataclass
class FeatureCoder:
    """The category vocabularies fixed at training; value i of a vocabulary is code i."""

    vocabularies: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, raw: pd.DataFrame) -> FeatureCoder:
        vocabularies = {}
        for name in CATEGORICAL_FEATURES:
            counts = raw[name].value_counts()
            common = sorted(str(v) for v in counts[counts >= MIN_CATEGORY_COUNT].index)
            vocabularies[name] = [OTHER, *(v for v in common if v != OTHER)]
        return cls(vocabularies)

    def matrix(self, raw: pd.DataFrame) -> np.ndarray:
        """The model's input matrix (rows x FEATURE_NAMES); unseen categories code as OTHER."""
        columns = [raw[name].to_numpy(dtype=np.float64) for name in NUMERIC_FEATURES]
        for name in CATEGORICAL_FEATURES:
            codes = {value: float(i) for i, value in enumerate(self.vocabularies[name])}
            columns.append(raw[name].map(lambda v, c=codes: c.get(str(v), 0.0)).to_numpy(float))
        return np.column_stack(columns)

    def value(self, feature: str, code: float) -> str:
        """The category a code stands for."""
        vocabulary = self.vocabularies[feature]
        index = int(code) if not np.isnan(code) and 0 <= code < len(vocabulary) else 0
        return vocabulary[index]


def categorical_indices() -> list[int]:
    return [FEATURE_NAMES.index(name) for name in CATEGORICAL_FEATURES]
