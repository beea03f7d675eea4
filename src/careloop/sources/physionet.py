"""Reader for the PhysioNet/CinC Challenge 2019 ICU files (one pipe-separated `.psv` per stay).

Published format (Reyna et al., "Early Prediction of Sepsis From Clinical Data: the
PhysioNet/Computing in Cardiology Challenge 2019", Crit Care Med 2020): one row per hour of the
ICU stay, 34 physiological columns (NaN = not measured), then Age (years; 100 for patients aged
90 or above), Gender (0 female, 1 male), Unit1 (MICU), Unit2 (SICU), HospAdmTime (hours between
hospital and ICU admission), ICULOS (hours since ICU admission, counted from 1) and, in training
sets only, SepsisLabel (1 from 6 hours before sepsis onset).

Each stay becomes a `PatientTimeline` of LOINC-coded points (codes from
`careloop.sepsis.signals`), the same shape `careloop.timeline.build_timeline` makes from FHIR, so
the features never know which source they read. `stay_to_fhir` writes the same stay as FHIR for
`careloop ingest`; read back from the store it gives the same hourly grid.

Time. The files carry no dates, only ICULOS. Every stay is placed on a fixed, obviously fictional
clock: ``start = ANCHOR + ICULOS[0] hours`` with ``ANCHOR = 2100-01-01T00:00Z``, and row ``i``'s
values are timed at exactly ``start + i hours`` (the start of grid row ``i`` in
`careloop.sepsis.grid`). When ICULOS is missing, repeats, goes back or skips an hour, the stay is
flagged "invalid" and its rows are still taken as consecutive hours.

Problems. Nothing in a file raises: each stay carries `DataProblem`s. "invalid" (cannot be read,
or impossible) and "insufficient" (too little to score) make a stay unscorable; "implausible"
(values outside a signal's plausible range, dropped and counted), "missing-columns" and
"extra-columns" are notes. Messages name the file, column and row, never a value: rows are
numbered from 0 like hours, with the file's line number alongside.
"""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Final

import numpy as np
import orjson

from careloop.fhir.codes import ACT_CODE, LOINC, OBSERVATION_CATEGORY, UCUM
from careloop.sepsis.signals import SIGNAL_BY_NAME, Signal
from careloop.timeline import EncounterEntry, ObservationPoint, PatientTimeline

__all__ = [
    "ANCHOR",
    "COLUMN_SIGNALS",
    "MIN_HOURS",
    "DataProblem",
    "PhysioNetStay",
    "read_physionet",
    "read_psv",
    "stay_to_fhir",
    "write_fhir_ndjson",
]

# A date nobody can mistake for a real admission; see the module docstring.
ANCHOR: Final = datetime(2100, 1, 1, tzinfo=UTC)
# Fewer rows than this cannot show a trend, so such a stay is not scored.
MIN_HOURS: Final = 2
HOUR: Final = timedelta(hours=1)
# Ages are coded as fractional years; a Julian year turns them into days.
DAYS_PER_YEAR: Final = 365.25
MAX_AGE: Final = 120.0

COLUMN_SIGNALS: Final[dict[str, str]] = {
    "HR": "hr",
    "O2Sat": "spo2",
    "Temp": "temp",
    "SBP": "sbp",
    "MAP": "map",
    "DBP": "dbp",
    "Resp": "resp",
    "EtCO2": "etco2",
    "BaseExcess": "base_excess",
    "HCO3": "hco3",
    "FiO2": "fio2",
    "pH": "ph",
    "PaCO2": "paco2",
    "SaO2": "sao2",
    "AST": "ast",
    "BUN": "bun",
    "Alkalinephos": "alk_phos",
    "Calcium": "calcium",
    "Chloride": "chloride",
    "Creatinine": "creatinine",
    "Bilirubin_direct": "bili_direct",
    "Glucose": "glucose",
    "Lactate": "lactate",
    "Magnesium": "magnesium",
    "Phosphate": "phosphate",
    "Potassium": "potassium",
    "Bilirubin_total": "bili_total",
    "TroponinI": "troponin_i",
    "Hct": "hct",
    "Hgb": "hgb",
    "PTT": "ptt",
    "WBC": "wbc",
    "Fibrinogen": "fibrinogen",
    "Platelets": "platelets",
}
STAY_COLUMNS: Final = ("Age", "Gender", "Unit1", "Unit2", "HospAdmTime", "ICULOS")
LABEL_COLUMN: Final = "SepsisLabel"
VITAL_COLUMNS: Final = tuple(c for c, s in COLUMN_SIGNALS.items() if SIGNAL_BY_NAME[s].vital)
# SepsisLabel is absent from test sets, so its absence is not worth a note.
EXPECTED_COLUMNS: Final = (*COLUMN_SIGNALS, *STAY_COLUMNS)

BLOCKING_KINDS: Final = frozenset({"invalid", "insufficient"})
NA_TEXTS: Final = frozenset({"", "nan", "NaN", "NAN", "NA"})


@dataclass(frozen=True)
class DataProblem:
    """What is wrong with a file, and where; `kind` says whether the stay can still be scored."""

    kind: str  # "invalid", "insufficient" (blocking); "implausible", "*-columns" (notes)
    message: str


@dataclass
class PhysioNetStay:
    """One ICU stay read from one `.psv` file."""

    stay_id: str  # the file stem, e.g. "p000001"
    timeline: PatientTimeline
    start: datetime  # time of row 0 (aware UTC)
    hours: int  # number of rows; row i is hour i of predictions
    labels: np.ndarray | None  # SepsisLabel per row (int8); None if absent or unreadable
    unit: str | None  # "MICU", "SICU" or None
    hosp_adm_hours: float | None  # HospAdmTime
    problems: tuple[DataProblem, ...] = ()

    @property
    def scorable(self) -> bool:
        return not any(problem.kind in BLOCKING_KINDS for problem in self.problems)


# --------------------------------------------------------------------------------------------
# Reading files and archives
# --------------------------------------------------------------------------------------------


def read_physionet(path: Path, *, limit: int | None = None) -> Iterator[PhysioNetStay]:
    """The stays of a directory of `.psv` files (recursively), a `.tar.gz`/`.tgz` or a `.zip`.

    Stays come in stay_id order whatever the archive order. Raises ValueError at once for a
    path that does not exist or is none of these, and on iteration for a corrupt archive.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    members = _members(path)
    return _stays(members, limit)


def _stays(members: Iterator[tuple[str, bytes]], limit: int | None) -> Iterator[PhysioNetStay]:
    for count, (name, data) in enumerate(members):
        if limit is not None and count >= limit:
            return
        yield read_psv(name, data)


def _members(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        return _directory_members(path)
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return _tar_members(path)
    if name.endswith(".zip"):
        return _zip_members(path)
    raise ValueError(f"{path} is not a directory of .psv files, a .tar.gz/.tgz or a .zip")


def _is_psv(member_name: str) -> bool:
    # macOS archivers add "._name" resource forks and __MACOSX folders: not data.
    pure = PurePosixPath(member_name)
    return pure.suffix == ".psv" and not pure.name.startswith("._") and "__MACOSX" not in pure.parts


def _order(member_name: str) -> tuple[str, str]:
    return PurePosixPath(member_name).stem, member_name


def _directory_members(path: Path) -> Iterator[tuple[str, bytes]]:
    files = sorted(
        (file for file in path.rglob("*.psv") if file.is_file() and _is_psv(file.as_posix())),
        key=lambda file: _order(file.as_posix()),
    )
    for file in files:
        yield file.name, file.read_bytes()


def _zip_members(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path} is not a readable zip archive: {exc}") from exc
    with archive:
        names = sorted(
            (info.filename for info in archive.infolist() if not info.is_dir()),
            key=_order,
        )
        for name in names:
            if _is_psv(name):
                yield PurePosixPath(name).name, archive.read(name)


def _tar_members(path: Path) -> Iterator[tuple[str, bytes]]:
    # A gzip stream cannot seek, and archive order is arbitrary: one streaming pass keeps each
    # member's raw bytes, recompressed (about 4x smaller), then yields them in stay order.
    pending: list[tuple[tuple[str, str], bytes]] = []
    try:
        with tarfile.open(path, "r|gz") as archive:
            for member in archive:
                if not member.isfile() or not _is_psv(member.name):
                    continue
                stream = archive.extractfile(member)
                if stream is not None:
                    pending.append((_order(member.name), zlib.compress(stream.read(), 1)))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable .tar.gz archive: {exc}") from exc
    pending.sort(key=lambda item: item[0])
    for (_, name), packed in pending:
        yield PurePosixPath(name).name, zlib.decompress(packed)


# --------------------------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------------------------


@dataclass
class _Problems:
    file: str
    found: list[DataProblem] = field(default_factory=list)

    def add(self, kind: str, what: str, row: int | None = None) -> None:
        # Row r is line r + 2 of the file: line 1 is the header.
        where = "" if row is None else f", row {row} (line {row + 2})"
        self.found.append(DataProblem(kind, f"{self.file}{where}: {what}"))


def read_psv(name: str, data: bytes) -> PhysioNetStay:
    """One stay from one file's bytes; never raises for bad content (see `problems`)."""
    pure = PurePosixPath(name)
    problems = _Problems(pure.name)
    stay_id = pure.stem
    table = _read_table(data, problems)
    if table is None:
        return _empty_stay(stay_id, problems)
    columns, values = table
    hours = values.shape[0]
    start = _start(columns, values, problems)
    _check_columns(columns, problems)
    birth_date = _birth_date(columns, values, start, problems)
    sex = _sex(columns, values, problems)
    points = _points(columns, values, start, stay_id, problems)
    if hours < MIN_HOURS:
        problems.add("insufficient", f"{hours} hour(s) of data; at least {MIN_HOURS} are needed")
    timeline = PatientTimeline(
        patient_id=stay_id,
        birth_date=birth_date,
        sex=sex,
        observations=points,
        encounters=[_encounter_entry(stay_id, start, hours)],
    )
    return PhysioNetStay(
        stay_id=stay_id,
        timeline=timeline,
        start=start,
        hours=hours,
        labels=_labels(columns, values, problems),
        unit=_unit(columns, values),
        hosp_adm_hours=_first_value(columns, values, "HospAdmTime"),
        problems=tuple(problems.found),
    )


def _empty_stay(stay_id: str, problems: _Problems) -> PhysioNetStay:
    return PhysioNetStay(
        stay_id=stay_id,
        timeline=PatientTimeline(patient_id=stay_id),
        start=ANCHOR,
        hours=0,
        labels=None,
        unit=None,
        hosp_adm_hours=None,
        problems=tuple(problems.found),
    )


def _read_table(data: bytes, problems: _Problems) -> tuple[dict[str, int], np.ndarray] | None:
    """Column positions by name and the rows as floats (NaN = empty); None if unreadable."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        problems.add("invalid", "the file is not text (UTF-8)")
        return None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not lines[0].strip():
        problems.add("invalid", "the file is empty")
        return None
    header = [name.strip() for name in lines[0].split("|")]
    columns: dict[str, int] = {}
    for position, name in enumerate(header):
        if name in columns:
            problems.add("invalid", f"column {name} appears twice; the first is read")
        else:
            columns[name] = position
    rows = lines[1:]
    if not rows:
        problems.add("invalid", "the file has a header but no rows")
        return None
    return columns, _parse_rows(rows, header, problems)


def _parse_rows(rows: list[str], header: list[str], problems: _Problems) -> np.ndarray:
    # numpy's C parser reads clean files (nearly all of them) fast; anything it rejects is
    # read again cell by cell to say exactly where the problem is.
    try:
        values = np.loadtxt(rows, delimiter="|", comments=None, ndmin=2, dtype=np.float64)
    except ValueError:
        values = None
    if values is not None and values.shape == (len(rows), len(header)):
        return values
    return _parse_rows_slowly(rows, header, problems)


def _parse_rows_slowly(rows: list[str], header: list[str], problems: _Problems) -> np.ndarray:
    width = len(header)
    values = np.full((len(rows), width), np.nan)
    for row, line in enumerate(rows):
        cells = line.split("|")
        if len(cells) != width:
            problems.add("invalid", f"{len(cells)} fields where the header has {width}", row)
            continue
        for position, cell in enumerate(cells):
            cell = cell.strip()
            if cell in NA_TEXTS:
                continue
            try:
                values[row, position] = float(cell)
            except ValueError:
                problems.add("invalid", f"{header[position]} is not a number", row)
    return values


def _name_row(problems: _Problems, column: str, row: int, what: str) -> None:
    problems.add("invalid", f"{column} {what}", row)


def _start(columns: dict[str, int], values: np.ndarray, problems: _Problems) -> datetime:
    """The time of row 0 from ICULOS; flags an ICULOS that does not count hours one by one."""
    if "ICULOS" not in columns:
        problems.add("invalid", "column ICULOS is missing; rows are taken as consecutive hours")
        return ANCHOR
    los = values[:, columns["ICULOS"]]
    unreadable = np.flatnonzero(~np.isfinite(los))
    if unreadable.size:
        _name_row(problems, "ICULOS", int(unreadable[0]), "is missing")
    steps = np.diff(los)
    backwards = np.flatnonzero(steps <= 0)
    if backwards.size:
        _name_row(problems, "ICULOS", int(backwards[0]) + 1, "is not increasing")
    else:
        skips = np.flatnonzero(steps > 1)
        if skips.size:
            _name_row(problems, "ICULOS", int(skips[0]) + 1, "skips hours")
    first = float(los[0])
    if not np.isfinite(first) or first != round(first) or abs(first) > 24 * 365 * 10:
        if np.isfinite(first):
            _name_row(problems, "ICULOS", 0, "is not a whole number of hours in range")
        return ANCHOR
    return ANCHOR + timedelta(hours=first)


def _check_columns(columns: dict[str, int], problems: _Problems) -> None:
    if not any(column in columns for column in VITAL_COLUMNS):
        problems.add("invalid", f"no vital-sign column ({', '.join(VITAL_COLUMNS)})")
    missing = [c for c in EXPECTED_COLUMNS if c not in columns and c != "ICULOS"]
    if missing:
        problems.add("missing-columns", f"columns missing: {', '.join(missing)}")
    extra = [c for c in columns if c not in EXPECTED_COLUMNS and c != LABEL_COLUMN]
    if extra:
        problems.add("extra-columns", f"unknown columns ignored: {', '.join(extra)}")


def _first_value(columns: dict[str, int], values: np.ndarray, column: str) -> float | None:
    """The first measured value of a per-stay column (they repeat on every row)."""
    if column not in columns:
        return None
    series = values[:, columns[column]]
    found = np.flatnonzero(~np.isnan(series))
    return float(series[found[0]]) if found.size else None


def _birth_date(
    columns: dict[str, int], values: np.ndarray, start: datetime, problems: _Problems
) -> date | None:
    # Approximate to the day: the files give age in years, and the clock is fictional anyway.
    age = _first_value(columns, values, "Age")
    if age is None:
        return None
    if not 0 <= age <= MAX_AGE:
        problems.add("invalid", f"Age is outside 0-{MAX_AGE:g} years")
        return None
    return start.date() - timedelta(days=round(age * DAYS_PER_YEAR))


def _sex(columns: dict[str, int], values: np.ndarray, problems: _Problems) -> str | None:
    gender = _first_value(columns, values, "Gender")
    if gender is None:
        return None
    if gender not in (0.0, 1.0):
        problems.add("implausible", "Gender is neither 0 (female) nor 1 (male); left unknown")
        return None
    return "male" if gender == 1.0 else "female"


def _unit(columns: dict[str, int], values: np.ndarray) -> str | None:
    for column, unit in (("Unit1", "MICU"), ("Unit2", "SICU")):
        if column in columns and bool(np.any(values[:, columns[column]] == 1)):
            return unit
    return None


def _labels(columns: dict[str, int], values: np.ndarray, problems: _Problems) -> np.ndarray | None:
    if LABEL_COLUMN not in columns:
        return None
    raw = values[:, columns[LABEL_COLUMN]]
    bad = np.flatnonzero((raw != 0) & (raw != 1))  # NaN compares unequal to both
    if bad.size:
        _name_row(problems, LABEL_COLUMN, int(bad[0]), "is not 0 or 1")
        return None
    return raw.astype(np.int8)


@dataclass(frozen=True, slots=True)
class _ColumnCode:
    """What every point of one column shares, built once per column rather than per point."""

    signal: Signal
    codes: frozenset[tuple[str | None, str]]


_COLUMN_CODES: Final = {
    column: _ColumnCode(SIGNAL_BY_NAME[name], frozenset({(LOINC, SIGNAL_BY_NAME[name].loinc)}))
    for column, name in COLUMN_SIGNALS.items()
}


def _points(
    columns: dict[str, int],
    values: np.ndarray,
    start: datetime,
    stay_id: str,
    problems: _Problems,
) -> list[ObservationPoint]:
    times = [start + row * HOUR for row in range(values.shape[0])]
    encounter_id = _encounter_id(stay_id)
    points: list[ObservationPoint] = []
    vitals_measured = 0
    for column, shared in _COLUMN_CODES.items():
        if column not in columns:
            continue
        signal = shared.signal
        series = values[:, columns[column]]
        measured = ~np.isnan(series)
        plausible = measured & (series >= signal.low) & (series <= signal.high)
        if signal.vital:
            vitals_measured += int(measured.sum())
        dropped = np.flatnonzero(measured & ~plausible)
        if dropped.size:
            problems.add(
                "implausible",
                f"{column}: {dropped.size} value(s) outside {_range_text(signal)} dropped, "
                f"the first at row {int(dropped[0])}",
            )
        rows = np.flatnonzero(plausible)
        for row, value in zip(rows.tolist(), series[rows].tolist(), strict=True):
            points.append(
                ObservationPoint(
                    code=signal.loinc,
                    system=LOINC,
                    time=times[row],
                    value=value,
                    unit=signal.unit,
                    display=signal.display,
                    encounter_id=encounter_id,
                    codes=shared.codes,
                )
            )
    if vitals_measured == 0 and any(column in columns for column in VITAL_COLUMNS):
        problems.add("insufficient", "no vital sign is measured in any row")
    return points


def _range_text(signal: Signal) -> str:
    unit = "" if signal.unit == "1" else f" {signal.unit}"
    return f"{signal.low:g} to {signal.high:g}{unit}"


def _encounter_id(stay_id: str) -> str:
    return f"{stay_id}-icu"


def _encounter_entry(stay_id: str, start: datetime, hours: int) -> EncounterEntry:
    return EncounterEntry(
        class_code="IMP",
        start=start,
        end=start + hours * HOUR,
        status="finished",
        source_id=_encounter_id(stay_id),
    )


# --------------------------------------------------------------------------------------------
# FHIR
# --------------------------------------------------------------------------------------------


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stay_to_fhir(stay: PhysioNetStay) -> list[dict]:
    """Patient, Encounter and one Observation per kept value, with ids derived from the stay.

    Implausible values are not written (they are not in the timeline either), so a store loaded
    from these resources yields the same hourly grid as the reader.
    """
    patient_ref = {"reference": f"Patient/{stay.stay_id}"}
    encounter_id = _encounter_id(stay.stay_id)
    encounter_ref = {"reference": f"Encounter/{encounter_id}"}
    patient: dict = {"resourceType": "Patient", "id": stay.stay_id}
    if stay.timeline.sex is not None:
        patient["gender"] = stay.timeline.sex
    if stay.timeline.birth_date is not None:
        patient["birthDate"] = stay.timeline.birth_date.isoformat()
    encounter: dict = {
        "resourceType": "Encounter",
        "id": encounter_id,
        "status": "finished",
        "class": {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
        "subject": patient_ref,
        "period": {"start": _instant(stay.start), "end": _instant(stay.start + stay.hours * HOUR)},
    }
    if stay.unit is not None:
        encounter["type"] = [{"text": stay.unit}]
    resources = [patient, encounter]
    for point in stay.timeline.observations(_ALL_LOINC):
        resources.append(_observation(stay, point, patient_ref, encounter_ref))
    return resources


_SIGNAL_OF_LOINC: Final = {shared.signal.loinc: shared.signal for shared in _COLUMN_CODES.values()}
_ALL_LOINC: Final = frozenset(_SIGNAL_OF_LOINC)


def _observation(
    stay: PhysioNetStay, point: ObservationPoint, patient_ref: dict, encounter_ref: dict
) -> dict:
    signal = _SIGNAL_OF_LOINC[point.code]
    row = int((point.time - stay.start) // HOUR)
    category = "vital-signs" if signal.vital else "laboratory"
    return {
        "resourceType": "Observation",
        "id": f"{stay.stay_id}-{signal.loinc}-{row}",
        "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category}]}],
        "code": {
            "coding": [{"system": LOINC, "code": signal.loinc, "display": signal.display}],
            "text": signal.display,
        },
        "subject": patient_ref,
        "encounter": encounter_ref,
        "effectiveDateTime": _instant(point.time),
        "valueQuantity": {
            "value": point.value,
            "unit": signal.unit,
            "system": UCUM,
            "code": signal.unit,
        },
    }


def write_fhir_ndjson(path_in: Path, out_dir: Path, *, limit: int | None = None) -> dict[str, int]:
    """Write Patient.ndjson, Encounter.ndjson and Observation.ndjson for `careloop ingest`.

    Stays with an "invalid" problem are left out (their times or values cannot be trusted) and
    counted under "skipped"; returns resources written per type.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"Patient": 0, "Encounter": 0, "Observation": 0, "skipped": 0}
    stays = read_physionet(path_in, limit=limit)
    kinds = ("Patient", "Encounter", "Observation")
    files = {kind: (out_dir / f"{kind}.ndjson").open("wb") for kind in kinds}
    try:
        for stay in stays:
            if any(problem.kind == "invalid" for problem in stay.problems):
                counts["skipped"] += 1
                continue
            for resource in stay_to_fhir(stay):
                kind = resource["resourceType"]
                files[kind].write(orjson.dumps(resource) + b"\n")
                counts[kind] += 1
    finally:
        for handle in files.values():
            handle.close()
    return counts
