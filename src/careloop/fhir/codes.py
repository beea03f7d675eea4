"""Code systems and the codes careloop reads, named once so every module agrees on them.

Codes are kept as the source coded them; these constants are what our own features, rules and
synthetic data look for. LOINC codes follow the FHIR vital-signs profile where one exists.
"""

from __future__ import annotations

from typing import Final

LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
RXNORM: Final = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10_CM: Final = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10: Final = "http://hl7.org/fhir/sid/icd-10"
UCUM: Final = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/condition-clinical"
ALLERGY_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

# Tag that marks data careloop generated itself, so nobody mistakes it for a real person.
SYNTHETIC_TAG_SYSTEM: Final = "https://careloop.dev/fhir/CodeSystem/data-origin"
SYNTHETIC_TAG_CODE: Final = "synthetic"

# Vital signs (LOINC).
HEART_RATE: Final = "8867-4"
RESPIRATORY_RATE: Final = "9279-1"
OXYGEN_SATURATION: Final = "59408-5"  # SpO2 by pulse oximetry
OXYGEN_SATURATION_ARTERIAL: Final = "2708-6"
BODY_TEMPERATURE: Final = "8310-5"
BLOOD_PRESSURE_PANEL: Final = "85354-9"
SYSTOLIC_BP: Final = "8480-6"
DIASTOLIC_BP: Final = "8462-4"
MEAN_ARTERIAL_PRESSURE: Final = "8478-0"
BODY_WEIGHT: Final = "29463-7"
BODY_HEIGHT: Final = "8302-2"
BMI: Final = "39156-5"
GLASGOW_COMA_SCORE: Final = "9269-2"
INHALED_OXYGEN_FRACTION: Final = "3150-0"
END_TIDAL_CO2: Final = "19889-5"

# Laboratory (LOINC).
LACTATE: Final = "2524-7"
WBC: Final = "6690-2"
CREATININE: Final = "2160-0"
EGFR: Final = "33914-3"
PLATELETS: Final = "777-3"
BILIRUBIN_TOTAL: Final = "1975-2"
GLUCOSE: Final = "2339-0"
POTASSIUM: Final = "2823-3"
SODIUM: Final = "2951-2"
HEMOGLOBIN: Final = "718-7"
BUN: Final = "3094-0"
PH_ARTERIAL: Final = "2744-1"
PACO2: Final = "2019-8"
BICARBONATE: Final = "1963-8"

# Wearable and home-device signals (LOINC).
RESTING_HEART_RATE: Final = "40443-4"
HEART_RATE_VARIABILITY_SDNN: Final = "80404-7"
STEPS_24H: Final = "41950-7"  # number of steps in 24 hours, measured
SLEEP_DURATION: Final = "93832-4"
