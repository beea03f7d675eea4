"""The ICU signals the sepsis model reads, named by LOINC, with units and plausible ranges.

One table serves every source: the PhysioNet reader maps its columns through it to LOINC-coded
timeline points, the store's FHIR Observations carry the same codes, and features query the
timeline by these codes only. No feature code knows a CSV column name.

Plausible ranges are physiological limits, not normal ranges: a value outside is a recording
error (a heart rate of 900), flagged and dropped rather than scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from careloop.fhir import codes


@dataclass(frozen=True, slots=True)
class Signal:
    name: str  # our short name, used in feature names and explanations
    loinc: str
    display: str  # for a clinician: "respiratory rate"
    unit: str  # UCUM
    low: float  # plausible physiological limits (inclusive)
    high: float
    vital: bool  # charted hourly at the bedside, as opposed to a lab drawn now and then


SIGNALS: Final[tuple[Signal, ...]] = (
    Signal("hr", codes.HEART_RATE, "heart rate", "/min", 10, 300, True),
    Signal("spo2", codes.OXYGEN_SATURATION, "oxygen saturation", "%", 20, 100, True),
    Signal("temp", codes.BODY_TEMPERATURE, "temperature", "Cel", 25, 45, True),
    Signal("sbp", codes.SYSTOLIC_BP, "systolic blood pressure", "mm[Hg]", 20, 300, True),
    Signal("map", codes.MEAN_ARTERIAL_PRESSURE, "mean arterial pressure", "mm[Hg]", 10, 250, True),
    Signal("dbp", codes.DIASTOLIC_BP, "diastolic blood pressure", "mm[Hg]", 5, 250, True),
    Signal("resp", codes.RESPIRATORY_RATE, "respiratory rate", "/min", 1, 80, True),
    Signal("etco2", codes.END_TIDAL_CO2, "end-tidal CO2", "mm[Hg]", 1, 120, True),
    Signal("base_excess", "1925-7", "base excess", "mmol/L", -40, 40, False),
    Signal("hco3", "1960-4", "bicarbonate (arterial)", "mmol/L", 1, 60, False),
    Signal(
        "fio2", codes.INHALED_OXYGEN_FRACTION, "inspired oxygen fraction", "1", 0.15, 1.0, False
    ),
    Signal("ph", codes.PH_ARTERIAL, "arterial pH", "[pH]", 6.5, 8.0, False),
    Signal("paco2", codes.PACO2, "arterial pCO2", "mm[Hg]", 5, 150, False),
    Signal("sao2", codes.OXYGEN_SATURATION_ARTERIAL, "arterial O2 saturation", "%", 20, 100, False),
    Signal("ast", "1920-8", "AST", "U/L", 1, 20000, False),
    Signal("bun", codes.BUN, "blood urea nitrogen", "mg/dL", 1, 300, False),
    Signal("alk_phos", "6768-6", "alkaline phosphatase", "U/L", 1, 5000, False),
    Signal("calcium", "17861-6", "calcium", "mg/dL", 1, 25, False),
    Signal("chloride", "2075-0", "chloride", "mmol/L", 50, 160, False),
    Signal("creatinine", codes.CREATININE, "creatinine", "mg/dL", 0.05, 30, False),
    Signal("bili_direct", "1968-7", "direct bilirubin", "mg/dL", 0, 50, False),
    Signal("glucose", "2345-7", "glucose", "mg/dL", 10, 2000, False),
    Signal("lactate", codes.LACTATE, "lactate", "mmol/L", 0.1, 40, False),
    Signal("magnesium", "19123-9", "magnesium", "mg/dL", 0.2, 15, False),
    Signal("phosphate", "2777-1", "phosphate", "mg/dL", 0.1, 25, False),
    Signal("potassium", codes.POTASSIUM, "potassium", "mmol/L", 1, 12, False),
    Signal("bili_total", codes.BILIRUBIN_TOTAL, "total bilirubin", "mg/dL", 0.05, 80, False),
    Signal("troponin_i", "10839-9", "troponin I", "ng/mL", 0, 500, False),
    Signal("hct", "4544-3", "hematocrit", "%", 5, 75, False),
    Signal("hgb", codes.HEMOGLOBIN, "hemoglobin", "g/dL", 1, 25, False),
    Signal("ptt", "3173-2", "partial thromboplastin time", "s", 5, 250, False),
    Signal("wbc", codes.WBC, "white cell count", "10*3/uL", 0.05, 500, False),
    Signal("fibrinogen", "3255-7", "fibrinogen", "mg/dL", 10, 2000, False),
    Signal("platelets", codes.PLATELETS, "platelets", "10*3/uL", 1, 3000, False),
)

SIGNAL_BY_NAME: Final = {signal.name: signal for signal in SIGNALS}
SIGNAL_BY_LOINC: Final = {signal.loinc: signal for signal in SIGNALS}
