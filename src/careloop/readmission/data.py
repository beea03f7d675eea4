"""Reading encounter files in the "Diabetes 130-US hospitals" layout (Strack et al. 2014) into a
checked table: one row per encounter, in file order, with numbers parsed, '?' read as missing,
demographics folded into groups ("unknown" when missing, never dropped) and the label if present.

Errors name the line and column at fault, never a patient identifier.
"""

from __future__ import annotations

import gzip
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from careloop.governance.scored import UNKNOWN

ENCOUNTER = "encounter_id"
PATIENT = "patient_nbr"
LABEL_COLUMN = "readmitted"
COUNT_COLUMNS = (
    "time_in_hospital",
    "num_lab_procedures",
    "num_procedures",
    "num_medications",
    "number_outpatient",
    "number_emergency",
    "number_inpatient",
    "number_diagnoses",
)
CODE_COLUMNS = ("admission_type_id", "discharge_disposition_id", "admission_source_id")
DIAGNOSIS_COLUMNS = ("diag_1", "diag_2", "diag_3")
DRUG_COLUMNS = (
    "metformin",
    "repaglinide",
    "nateglinide",
    "chlorpropamide",
    "glimepiride",
    "acetohexamide",
    "glipizide",
    "glyburide",
    "tolbutamide",
    "pioglitazone",
    "rosiglitazone",
    "acarbose",
    "miglitol",
    "troglitazone",
    "tolazamide",
    "examide",
    "citoglipton",
    "insulin",
    "glyburide-metformin",
    "glipizide-metformin",
    "glimepiride-pioglitazone",
    "metformin-rosiglitazone",
    "metformin-pioglitazone",
)
TEXT_COLUMNS = (
    "race",
    "gender",
    "age",
    "payer_code",
    "medical_specialty",
    "max_glu_serum",
    "A1Cresult",
    "change",
    "diabetesMed",
    *CODE_COLUMNS,
    *DIAGNOSIS_COLUMNS,
    *DRUG_COLUMNS,
)
# Demographic columns are not model inputs; a file without them is scored, and its rows fall in
# the group "unknown" of every fairness table (the reader says which were absent).
DEMOGRAPHIC_COLUMNS = ("race", "gender", "age", "payer_code")
REQUIRED_COLUMNS = (
    ENCOUNTER,
    PATIENT,
    *COUNT_COLUMNS,
    *(name for name in TEXT_COLUMNS if name not in DEMOGRAPHIC_COLUMNS),
)
MISSING_MARKS = frozenset({"", "?"})
LABEL_VALUES = {"<30": 1, ">30": 0, "NO": 0}
AGE_BAND = re.compile(r"^\[(\d{1,3})-(\d{1,3})\)$")
# The groups every table is cut by (governance reads the same names).
GROUP_NAMES = ("race", "sex", "age_band", "payer")


class ReadmissionDataError(ValueError):
    """The file cannot be read as encounters; the message says where and why."""


@dataclass(frozen=True)
class Encounters:
    """Encounters of one file, in file order.

    `table` holds the raw text columns (stripped, missing as ""), the parsed counts as floats
    (NaN when missing) and `encounter_id` as an integer; `groups` the demographic group of each
    row; `labels` 1 for readmission within 30 days, or None when the file has no outcome column.
    """

    source: Path
    table: pd.DataFrame
    groups: dict[str, np.ndarray]
    labels: np.ndarray | None
    absent_demographics: tuple[str, ...] = ()  # demographic columns the file did not have

    def __len__(self) -> int:
        return len(self.table)

    @property
    def patient_ids(self) -> np.ndarray:
        return self.table[PATIENT].to_numpy(dtype=str)

    @property
    def encounter_ids(self) -> np.ndarray:
        return self.table[ENCOUNTER].to_numpy(dtype=np.int64)

    def subset(self, rows: np.ndarray) -> Encounters:
        """The rows selected by a boolean mask or an array of positions."""
        return Encounters(
            source=self.source,
            table=self.table.iloc[rows].reset_index(drop=True),
            groups={name: values[rows] for name, values in self.groups.items()},
            labels=None if self.labels is None else self.labels[rows],
            absent_demographics=self.absent_demographics,
        )


def read_encounters(path: Path, *, limit: int | None = None) -> Encounters:
    """The encounters of a .csv, .csv.gz or single-file .zip; `limit` keeps the first N rows."""
    raw = _read_text_table(path, limit)
    missing = [name for name in REQUIRED_COLUMNS if name not in raw.columns]
    if missing:
        raise ReadmissionDataError(
            f"{path.name} lacks the required column(s): {', '.join(missing)}"
        )
    if raw.empty:
        raise ReadmissionDataError(f"{path.name} has a header but no encounters")
    raw = raw.apply(lambda column: column.str.strip())
    absent = tuple(name for name in DEMOGRAPHIC_COLUMNS if name not in raw.columns)
    for name in absent:
        raw[name] = ""
    table = raw[[*REQUIRED_COLUMNS, *DEMOGRAPHIC_COLUMNS]].copy()
    table[ENCOUNTER] = _encounter_ids(raw[ENCOUNTER])
    _require_present(raw[PATIENT], PATIENT)
    for name in COUNT_COLUMNS:
        table[name] = _numbers(raw[name], name)
    for name in TEXT_COLUMNS:
        table[name] = raw[name].where(~raw[name].isin(MISSING_MARKS), "")
    labels = _labels(raw[LABEL_COLUMN]) if LABEL_COLUMN in raw.columns else None
    groups = demographic_groups(table)
    return Encounters(path, table.reset_index(drop=True), groups, labels, absent)


def _read_text_table(path: Path, limit: int | None) -> pd.DataFrame:
    if not path.exists():
        raise ReadmissionDataError(f"{path} does not exist")
    if path.is_dir():
        raise ReadmissionDataError(f"{path} is a directory; give the encounters' CSV file")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, nrows=limit, compression="infer")
    except pd.errors.EmptyDataError:
        raise ReadmissionDataError(f"{path.name} is empty") from None
    except pd.errors.ParserError as exc:
        raise ReadmissionDataError(f"{path.name} is not a well-formed CSV: {exc}") from None
    except (UnicodeDecodeError, gzip.BadGzipFile, zipfile.BadZipFile, EOFError) as exc:
        raise ReadmissionDataError(f"{path.name} cannot be decoded as CSV text: {exc}") from None


def _line(position: int) -> int:
    """The file line of a data row (line 1 is the header)."""
    return position + 2


def _encounter_ids(column: pd.Series) -> pd.Series:
    _require_present(column, ENCOUNTER)
    parsed = pd.to_numeric(column, errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy() | (parsed % 1 != 0).to_numpy())
    if bad.size:
        raise ReadmissionDataError(
            f"line {_line(int(bad[0]))}, column {ENCOUNTER}: not a whole number "
            "(encounter ids order a patient's stays)"
        )
    ids = parsed.astype(np.int64)
    repeated = np.flatnonzero(ids.duplicated().to_numpy())
    if repeated.size:
        first = int(np.flatnonzero((ids == ids.iloc[repeated[0]]).to_numpy())[0])
        raise ReadmissionDataError(
            f"line {_line(int(repeated[0]))}, column {ENCOUNTER}: repeats the id on line "
            f"{_line(first)}"
        )
    return ids


def _require_present(column: pd.Series, name: str) -> None:
    empty = np.flatnonzero(column.isin(MISSING_MARKS).to_numpy())
    if empty.size:
        raise ReadmissionDataError(f"line {_line(int(empty[0]))}, column {name}: missing")


def _numbers(column: pd.Series, name: str) -> pd.Series:
    missing = column.isin(MISSING_MARKS)
    parsed = pd.to_numeric(column.where(~missing), errors="coerce")
    bad = np.flatnonzero((parsed.isna() & ~missing).to_numpy() | np.isinf(parsed.to_numpy()))
    if bad.size:
        value = str(column.iloc[bad[0]])
        shown = value if len(value) <= 20 else value[:20] + "..."
        raise ReadmissionDataError(
            f"line {_line(int(bad[0]))}, column {name}: {shown!r} is not a number"
        )
    return parsed.astype(np.float64)


def _labels(column: pd.Series) -> np.ndarray:
    bad = np.flatnonzero(~column.isin(list(LABEL_VALUES)).to_numpy())
    if bad.size:
        value = str(column.iloc[bad[0]])[:20]
        raise ReadmissionDataError(
            f"line {_line(int(bad[0]))}, column {LABEL_COLUMN}: {value!r} is none of "
            f"{', '.join(LABEL_VALUES)}"
        )
    return column.map(LABEL_VALUES).to_numpy(dtype=np.int8)


def demographic_groups(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Race, sex, age band and payer of each row, "unknown" where the file does not say."""
    sex = table["gender"].str.lower().where(table["gender"].isin(["Female", "Male"]), UNKNOWN)
    age = table["age"].where(table["age"].str.match(AGE_BAND), UNKNOWN)
    return {
        "race": _or_unknown(table["race"]),
        "sex": sex.to_numpy(dtype=object),
        "age_band": age.to_numpy(dtype=object),
        "payer": _or_unknown(table["payer_code"]),
    }


def _or_unknown(column: pd.Series) -> np.ndarray:
    return column.where(~column.isin(MISSING_MARKS), UNKNOWN).to_numpy(dtype=object)


def age_years(bands: pd.Series) -> pd.Series:
    """The middle of each ten-year band ("[70-80)" is 75), NaN when the band is unknown."""
    parts = bands.str.extract(AGE_BAND)
    return (parts[0].astype(float) + parts[1].astype(float)) / 2
