"""Kidney function for dosing decisions: the latest eGFR, measured or computed from creatinine.

Renal dose rules are written against eGFR in mL/min/1.73 m2. Labs report it directly, but a
creatinine drawn after the last reported eGFR is newer evidence, so the eGFR is then computed
with the race-free CKD-EPI 2021 creatinine equation (Inker LA, et al. N Engl J Med
2021;385:1737-1749, doi:10.1056/NEJMoa2102953), which US laboratories adopted on the NKF-ASN
task force's recommendation. A reading older than the allowed age says nothing about today's
kidneys and is ignored. The reading records where it came from so a card can cite it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from careloop.fhir.timeutil import FhirDateError, parse_fhir_instant_range

LOINC = "http://loinc.org"
# eGFR codes: generic (33914-3), MDRD (48642-3, 48643-1), CKD-EPI (62238-1, 88293-6, 88294-4),
# CKD-EPI 2021 (98979-8), and 50044-7 (eGFR for a female patient).
EGFR_LOINC = frozenset(
    {"33914-3", "48642-3", "48643-1", "62238-1", "98979-8", "50044-7", "88293-6", "88294-4"}
)
CREATININE_LOINC = frozenset({"2160-0", "38483-4"})  # serum/plasma and blood creatinine
DEFAULT_MAX_AGE = timedelta(days=90)
EGFR_UNIT = "mL/min/1.73m2"
UMOL_PER_MG_DL = 88.4  # creatinine: 1 mg/dL = 88.4 umol/L
_UNUSABLE_STATUS = frozenset({"entered-in-error", "cancelled", "registered"})
_MICROMOLAR = frozenset({"umol/l", "µmol/l", "μmol/l", "micromol/l"})


@dataclass(frozen=True)
class EgfrReading:
    value: float  # mL/min/1.73 m2
    effective: datetime  # when the sample was taken (UTC)
    reference: str | None  # "Observation/<id>": the eGFR, or the creatinine it came from
    computed: bool  # True: CKD-EPI 2021 from creatinine; False: reported by the lab
    method: str  # e.g. "CKD-EPI 2021 from creatinine 1.30 mg/dL, age 71, female"
    comparator: str | None = None  # ">" when the lab reported e.g. ">60"
    creatinine_mg_dl: float | None = None

    @property
    def source(self) -> str:
        return "computed" if self.computed else "measured"

    def describe(self) -> str:
        """Short text for a card: "eGFR 28 mL/min/1.73m2 (computed ..., 2026-11-20)"."""
        shown = f"{self.comparator or ''}{self.value:.0f}"
        return f"eGFR {shown} {EGFR_UNIT} ({self.method}, {self.effective:%Y-%m-%d})"


def ckd_epi_2021(creatinine_mg_dl: float, age_years: float, female: bool) -> float:
    """eGFR (mL/min/1.73 m2) by the 2021 CKD-EPI creatinine equation, without race.

    142 x min(Scr/k, 1)^a x max(Scr/k, 1)^-1.200 x 0.9938^age [x 1.012 if female],
    with k = 0.7 (female) or 0.9 (male) and a = -0.241 (female) or -0.302 (male).
    """
    if not (creatinine_mg_dl > 0 and math.isfinite(creatinine_mg_dl)):
        raise ValueError("creatinine must be a positive number of mg/dL")
    if not (age_years >= 0 and math.isfinite(age_years)):
        raise ValueError("age must be a non-negative number of years")
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = creatinine_mg_dl / kappa
    value = 142 * min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** -1.200 * 0.9938**age_years
    return value * 1.012 if female else value


def creatinine_in_mg_dl(value: float, unit: str | None) -> float | None:
    """Creatinine converted to mg/dL, or None for a unit we do not know."""
    key = (unit or "").strip().lower()
    if key == "mg/dl":
        return value
    if key in _MICROMOLAR:
        return value / UMOL_PER_MG_DL
    if key == "mmol/l":
        return value * 1000 / UMOL_PER_MG_DL
    return None


def latest_egfr(
    observations: Iterable[Mapping[str, Any]],
    patient: Mapping[str, Any] | None,
    now: datetime,
    max_age: timedelta = DEFAULT_MAX_AGE,
) -> EgfrReading | None:
    """The most recent usable eGFR within `max_age` of `now`, or None.

    A creatinine newer than the latest reported eGFR wins and is converted with CKD-EPI 2021,
    provided the Patient gives an adult age and a male/female sex; otherwise the reported
    eGFR stands. Observations after `now`, without a time or value, or in error are skipped.
    """
    now = _aware(now)
    oldest = now - max_age
    measured = _newest(_measured_readings(observations, oldest, now))
    creatinine = _newest(_computed_readings(observations, patient, oldest, now))
    if creatinine is not None and (measured is None or creatinine.effective > measured.effective):
        return creatinine
    return measured


def _newest(readings: Iterable[EgfrReading]) -> EgfrReading | None:
    return max(readings, key=lambda reading: reading.effective, default=None)


def _measured_readings(
    observations: Iterable[Mapping[str, Any]], oldest: datetime, now: datetime
) -> Iterable[EgfrReading]:
    for observation, code, when, quantity in _lab_values(observations, EGFR_LOINC, oldest, now):
        unit = quantity.get("unit") or quantity.get("code")
        value = _egfr_in_standard_unit(quantity["value"], unit)
        if value is None:
            continue
        comparator = quantity.get("comparator")
        yield EgfrReading(
            value=value,
            effective=when,
            reference=_reference(observation),
            computed=False,
            method=f"reported by the laboratory, LOINC {code}",
            comparator=comparator if isinstance(comparator, str) else None,
        )


def _computed_readings(
    observations: Iterable[Mapping[str, Any]],
    patient: Mapping[str, Any] | None,
    oldest: datetime,
    now: datetime,
) -> Iterable[EgfrReading]:
    for observation, _code, when, quantity in _lab_values(
        observations, CREATININE_LOINC, oldest, now
    ):
        if quantity.get("comparator"):
            continue  # "<0.3 mg/dL" is a bound, not a value to put into an equation
        unit = quantity.get("unit") or quantity.get("code")
        creatinine = creatinine_in_mg_dl(quantity["value"], unit if isinstance(unit, str) else None)
        demographics = _age_and_sex(patient, when)
        if creatinine is None or creatinine <= 0 or demographics is None:
            continue
        age, female = demographics
        yield EgfrReading(
            value=ckd_epi_2021(creatinine, age, female),
            effective=when,
            reference=_reference(observation),
            computed=True,
            method=(
                f"CKD-EPI 2021 from creatinine {creatinine:.2f} mg/dL, age {int(age)}, "
                f"{'female' if female else 'male'}"
            ),
            creatinine_mg_dl=creatinine,
        )


def _lab_values(
    observations: Iterable[Mapping[str, Any]],
    codes: frozenset[str],
    oldest: datetime,
    now: datetime,
) -> Iterable[tuple[Mapping[str, Any], str, datetime, Mapping[str, Any]]]:
    """(observation, LOINC code, time, valueQuantity) for usable results with one of `codes`."""
    for observation in observations:
        if not isinstance(observation, Mapping):
            continue
        status = observation.get("status")
        if not isinstance(status, str) or status in _UNUSABLE_STATUS:
            continue
        code = _loinc_code(observation, codes)
        quantity = observation.get("valueQuantity")
        if code is None or not isinstance(quantity, Mapping):
            continue
        if not _is_number(quantity.get("value")):
            continue
        when = _observation_time(observation)
        if when is not None and oldest <= when <= now:
            yield observation, code, when, quantity


def _loinc_code(observation: Mapping[str, Any], codes: frozenset[str]) -> str | None:
    concept = observation.get("code")
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    for coding in codings if isinstance(codings, list) else []:
        is_loinc = isinstance(coding, Mapping) and coding.get("system") == LOINC
        if is_loinc and coding.get("code") in codes:
            return str(coding["code"])
    return None


def _observation_time(observation: Mapping[str, Any]) -> datetime | None:
    """When the sample was taken: effective[x] (a period's start), else the issue time."""
    period = observation.get("effectivePeriod")
    candidates = (
        observation.get("effectiveDateTime"),
        observation.get("effectiveInstant"),
        period.get("start") if isinstance(period, Mapping) else None,
        observation.get("issued"),
    )
    for value in candidates:
        if isinstance(value, str):
            try:
                return parse_fhir_instant_range(value)[0]
            except FhirDateError:
                return None
    return None


def _egfr_in_standard_unit(value: float, unit: object) -> float | None:
    """eGFR in mL/min/1.73 m2; "mL/min" counts, as the eGFR codes are already normalised."""
    key = unit.strip().lower() if isinstance(unit, str) else ""
    if value <= 0:
        return None
    if key.startswith("ml/min"):
        return float(value)
    if key.startswith("ml/s"):
        return float(value) * 60
    return None


def _age_and_sex(patient: Mapping[str, Any] | None, when: datetime) -> tuple[float, bool] | None:
    """(age in years at `when`, female) for an adult with a recorded male/female sex."""
    if not isinstance(patient, Mapping) or patient.get("gender") not in ("male", "female"):
        return None
    birth = patient.get("birthDate")
    if not isinstance(birth, str):
        return None
    try:
        born = parse_fhir_instant_range(birth)[0].date()
    except FhirDateError:
        return None
    age = _whole_years(born, when.date())
    if age < 18:
        return None  # CKD-EPI is an adult equation; children need the CKiD bedside formula
    return float(age), patient["gender"] == "female"


def _whole_years(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def _reference(observation: Mapping[str, Any]) -> str | None:
    identifier = observation.get("id")
    return f"Observation/{identifier}" if isinstance(identifier, str) else None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
