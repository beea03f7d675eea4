"""The clinical vocabulary of the synthetic population: diagnoses, drugs, allergies, measures.

Codes are real (SNOMED CT, ICD-10-CM, RxNorm, LOINC, UCUM) so downstream code meets what it would
meet in an EHR export. Codes that `careloop.fhir.codes` does not define are kept here, each with
its display text.
"""

from __future__ import annotations

from dataclasses import dataclass

from careloop.fhir import codes
from careloop.synth._fhir import Measure

# Terminology systems that careloop.fhir.codes does not (yet) name.
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"

# Identifier systems and code systems of careloop's own demo data.
MRN_SYSTEM = "https://careloop.dev/fhir/sid/demo-mrn"
PRACTITIONER_ID_SYSTEM = "https://careloop.dev/fhir/sid/demo-practitioner"
ORGANIZATION_ID_SYSTEM = "https://careloop.dev/fhir/sid/demo-organization"
DEVICE_ID_SYSTEM = "https://careloop.dev/fhir/sid/demo-device"
EPISODE_SYSTEM = "https://careloop.dev/fhir/CodeSystem/synthetic-episode"

ORAL_ROUTE_SNOMED = ("26643006", "Oral route (qualifier value)")


@dataclass(frozen=True)
class Diagnosis:
    key: str
    text: str
    snomed: str
    snomed_display: str
    icd10: str
    icd10_display: str


HYPERTENSION = Diagnosis(
    "hypertension",
    "Essential hypertension",
    "59621000",
    "Essential hypertension (disorder)",
    "I10",
    "Essential (primary) hypertension",
)
TYPE2_DIABETES = Diagnosis(
    "type2-diabetes",
    "Type 2 diabetes mellitus",
    "44054006",
    "Diabetes mellitus type 2 (disorder)",
    "E11.9",
    "Type 2 diabetes mellitus without complications",
)
HYPERLIPIDEMIA = Diagnosis(
    "hyperlipidemia",
    "Hyperlipidemia",
    "55822004",
    "Hyperlipidemia (disorder)",
    "E78.5",
    "Hyperlipidemia, unspecified",
)
HEART_FAILURE = Diagnosis(
    "heart-failure",
    "Chronic congestive heart failure",
    "88805009",
    "Chronic congestive heart failure (disorder)",
    "I50.9",
    "Heart failure, unspecified",
)
CKD_STAGE_3 = Diagnosis(
    "ckd-stage-3",
    "Chronic kidney disease stage 3",
    "433144002",
    "Chronic kidney disease stage 3 (disorder)",
    "N18.30",
    "Chronic kidney disease, stage 3 unspecified",
)
COPD = Diagnosis(
    "copd",
    "Chronic obstructive pulmonary disease",
    "13645005",
    "Chronic obstructive lung disease (disorder)",
    "J44.9",
    "Chronic obstructive pulmonary disease, unspecified",
)
ATRIAL_FIBRILLATION = Diagnosis(
    "atrial-fibrillation",
    "Atrial fibrillation",
    "49436004",
    "Atrial fibrillation (disorder)",
    "I48.91",
    "Unspecified atrial fibrillation",
)

PNEUMONIA = Diagnosis(
    "pneumonia",
    "Pneumonia",
    "233604007",
    "Pneumonia (disorder)",
    "J18.9",
    "Pneumonia, unspecified organism",
)
URINARY_TRACT_INFECTION = Diagnosis(
    "urinary-tract-infection",
    "Urinary tract infection",
    "68566005",
    "Urinary tract infectious disease (disorder)",
    "N39.0",
    "Urinary tract infection, site not specified",
)
CELLULITIS = Diagnosis(
    "cellulitis",
    "Cellulitis",
    "128045006",
    "Cellulitis (disorder)",
    "L03.90",
    "Cellulitis, unspecified",
)
COPD_EXACERBATION = Diagnosis(
    "copd-exacerbation",
    "Acute exacerbation of COPD",
    "195951007",
    "Acute exacerbation of chronic obstructive airways disease (disorder)",
    "J44.1",
    "Chronic obstructive pulmonary disease with (acute) exacerbation",
)
SEPSIS = Diagnosis(
    "sepsis",
    "Sepsis",
    "91302008",
    "Sepsis (disorder)",
    "A41.9",
    "Sepsis, unspecified organism",
)

# Chance of each chronic diagnosis at age 40 and at age 90; linear in between, flat outside.
CHRONIC_PREVALENCE: tuple[tuple[Diagnosis, float, float], ...] = (
    (HYPERTENSION, 0.15, 0.70),
    (HYPERLIPIDEMIA, 0.10, 0.50),
    (TYPE2_DIABETES, 0.06, 0.30),
    (HEART_FAILURE, 0.01, 0.18),
    (CKD_STAGE_3, 0.01, 0.22),
    (COPD, 0.02, 0.14),
    (ATRIAL_FIBRILLATION, 0.01, 0.16),
)

INFECTIOUS_ADMISSION_REASONS = (PNEUMONIA, URINARY_TRACT_INFECTION, CELLULITIS)


@dataclass(frozen=True)
class Drug:
    key: str
    rxnorm: str
    display: str
    instruction: str
    doses_per_day: int
    oral: bool = True
    as_needed: bool = False


LISINOPRIL_10 = Drug(
    "lisinopril-10",
    "314076",
    "lisinopril 10 MG Oral Tablet",
    "Take 1 tablet (10 mg) by mouth once daily.",
    1,
)
LISINOPRIL_20 = Drug(
    "lisinopril-20",
    "314077",
    "lisinopril 20 MG Oral Tablet",
    "Take 1 tablet (20 mg) by mouth once daily.",
    1,
)
AMLODIPINE_5 = Drug(
    "amlodipine-5",
    "197361",
    "amlodipine 5 MG Oral Tablet",
    "Take 1 tablet (5 mg) by mouth once daily.",
    1,
)
METFORMIN_500 = Drug(
    "metformin-500",
    "861007",
    "metformin hydrochloride 500 MG Oral Tablet",
    "Take 1 tablet (500 mg) by mouth twice daily with meals.",
    2,
)
ATORVASTATIN_20 = Drug(
    "atorvastatin-20",
    "617310",
    "atorvastatin 20 MG Oral Tablet",
    "Take 1 tablet (20 mg) by mouth once daily in the evening.",
    1,
)
FUROSEMIDE_40 = Drug(
    "furosemide-40",
    "313988",
    "furosemide 40 MG Oral Tablet",
    "Take 1 tablet (40 mg) by mouth once daily in the morning. Weigh yourself every morning.",
    1,
)
CARVEDILOL_25 = Drug(
    "carvedilol-25",
    "200033",
    "carvedilol 25 MG Oral Tablet",
    "Take 1 tablet (25 mg) by mouth twice daily with food.",
    2,
)
APIXABAN_5 = Drug(
    "apixaban-5",
    "1364445",
    "apixaban 5 MG Oral Tablet",
    "Take 1 tablet (5 mg) by mouth twice daily.",
    2,
)
WARFARIN_5 = Drug(
    "warfarin-5",
    "855332",
    "warfarin sodium 5 MG Oral Tablet",
    "Take 1 tablet (5 mg) by mouth once daily in the evening; dose adjusted to INR.",
    1,
)
ALBUTEROL_INHALER = Drug(
    "albuterol-inhaler",
    "745679",
    "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
    "Inhale 2 puffs every 4 to 6 hours as needed for shortness of breath.",
    4,
    oral=False,
    as_needed=True,
)
AMOXICILLIN_500 = Drug(
    "amoxicillin-500",
    "308192",
    "amoxicillin 500 MG Oral Tablet",
    "Take 1 tablet (500 mg) by mouth three times daily for 7 days.",
    3,
)
AZITHROMYCIN_250 = Drug(
    "azithromycin-250",
    "141962",
    "azithromycin 250 MG Oral Capsule",
    "Take 2 capsules on day 1, then 1 capsule daily on days 2 to 5.",
    1,
)
DOXYCYCLINE_100 = Drug(
    "doxycycline-100",
    "1650142",
    "doxycycline monohydrate 100 MG Oral Tablet",
    "Take 1 tablet (100 mg) by mouth twice daily for 7 days.",
    2,
)


@dataclass(frozen=True)
class Allergen:
    key: str
    system: str
    code: str
    display: str
    category: str
    # Oral antibiotics a prescriber must avoid for this allergy (drug keys).
    avoid_drugs: tuple[str, ...] = ()


PENICILLIN = Allergen(
    "penicillin",
    codes.RXNORM,
    "70618",
    "penicillin",
    "medication",
    avoid_drugs=(AMOXICILLIN_500.key,),
)
SULFAMETHOXAZOLE = Allergen(
    "sulfamethoxazole", codes.RXNORM, "10180", "sulfamethoxazole", "medication"
)
PEANUT = Allergen("peanut", codes.SNOMED, "256349002", "Peanut - dietary (substance)", "food")
LATEX = Allergen("latex", codes.SNOMED, "111088007", "Latex (substance)", "environment")

# (allergen, relative frequency) among patients who have any recorded allergy.
ALLERGEN_MIX: tuple[tuple[Allergen, float], ...] = (
    (PENICILLIN, 0.55),
    (SULFAMETHOXAZOLE, 0.2),
    (PEANUT, 0.15),
    (LATEX, 0.1),
)

REACTIONS: tuple[tuple[str, str, str], ...] = (
    # (SNOMED code, display, severity)
    ("247472004", "Wheal (finding)", "mild"),
    ("271807003", "Eruption of skin (disorder)", "moderate"),
    ("39579001", "Anaphylaxis (disorder)", "severe"),
)


def _vital(loinc: str, display: str, unit: str, ucum: str, decimals: int) -> Measure:
    return Measure(loinc, display, unit, ucum, decimals, "vital-signs")


def _lab(loinc: str, display: str, unit: str, ucum: str, decimals: int) -> Measure:
    return Measure(loinc, display, unit, ucum, decimals, "laboratory")


HEART_RATE = _vital(codes.HEART_RATE, "Heart rate", "beats/minute", "/min", 0)
RESPIRATORY_RATE = _vital(codes.RESPIRATORY_RATE, "Respiratory rate", "breaths/minute", "/min", 0)
OXYGEN_SATURATION = _vital(
    codes.OXYGEN_SATURATION, "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%", 0
)
BODY_TEMPERATURE = _vital(codes.BODY_TEMPERATURE, "Body temperature", "Cel", "Cel", 1)
SYSTOLIC_BP = _vital(codes.SYSTOLIC_BP, "Systolic blood pressure", "mmHg", "mm[Hg]", 0)
DIASTOLIC_BP = _vital(codes.DIASTOLIC_BP, "Diastolic blood pressure", "mmHg", "mm[Hg]", 0)
BLOOD_PRESSURE_PANEL_DISPLAY = "Blood pressure panel with all children optional"
BODY_WEIGHT = _vital(codes.BODY_WEIGHT, "Body weight", "kg", "kg", 1)
BODY_HEIGHT = _vital(codes.BODY_HEIGHT, "Body height", "cm", "cm", 1)
BMI = _vital(codes.BMI, "Body mass index (BMI) [Ratio]", "kg/m2", "kg/m2", 1)

LACTATE = _lab(codes.LACTATE, "Lactate [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L", 1)
WBC = _lab(codes.WBC, "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", "10*3/uL", 1)
CREATININE = _lab(
    codes.CREATININE, "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 2
)
PLATELETS = _lab(
    codes.PLATELETS, "Platelets [#/volume] in Blood by Automated count", "10*3/uL", "10*3/uL", 0
)
BILIRUBIN_TOTAL = _lab(
    codes.BILIRUBIN_TOTAL, "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 1
)
GLUCOSE = _lab(codes.GLUCOSE, "Glucose [Mass/volume] in Blood", "mg/dL", "mg/dL", 0)
POTASSIUM = _lab(
    codes.POTASSIUM, "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L", 1
)
SODIUM = _lab(codes.SODIUM, "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L", 0)
HEMOGLOBIN = _lab(codes.HEMOGLOBIN, "Hemoglobin [Mass/volume] in Blood", "g/dL", "g/dL", 1)
BUN = _lab(codes.BUN, "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 0)
# LOINC 4548-4 is not in careloop.fhir.codes; diabetic follow-up visits record it.
HBA1C = _lab("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "%", 1)

RESTING_HEART_RATE = _vital(
    codes.RESTING_HEART_RATE, "Heart rate --resting", "beats/minute", "/min", 0
)
HRV_SDNN = _vital(
    codes.HEART_RATE_VARIABILITY_SDNN,
    "R-R interval.standard deviation (Heart rate variability)",
    "ms",
    "ms",
    0,
)
STEPS = Measure(
    codes.STEPS_24H, "Number of steps in 24 hour Measured", "steps/day", "/d", 0, "activity"
)
SLEEP_DURATION = Measure(codes.SLEEP_DURATION, "Sleep duration", "h", "h", 1, "activity")

# Visit types (SNOMED procedures, as EHRs code them on Encounter.type).
CHECK_UP_VISIT = ("185349003", "Encounter for check up (procedure)")
PROBLEM_VISIT = ("185347001", "Encounter for problem (procedure)")
EMERGENCY_ADMISSION = ("183452005", "Emergency hospital admission (procedure)")

# Made-up people and places: none of these belong together in the real world.
GIVEN_NAMES_FEMALE = (
    "Ada",
    "Beatriz",
    "Chloe",
    "Dalia",
    "Elena",
    "Farah",
    "Grace",
    "Hana",
    "Ines",
    "Joy",
    "Keiko",
    "Lena",
    "Marisol",
    "Nadia",
    "Olive",
    "Priya",
    "Rosa",
    "Sofia",
    "Tamar",
    "Yara",
)
GIVEN_NAMES_MALE = (
    "Aaron",
    "Bilal",
    "Carlos",
    "Dmitri",
    "Emeka",
    "Felix",
    "Gustavo",
    "Hiro",
    "Ivan",
    "Jonah",
    "Kwame",
    "Luis",
    "Mateo",
    "Nikhil",
    "Omar",
    "Pavel",
    "Rafael",
    "Samuel",
    "Tomas",
    "Viktor",
)
FAMILY_NAMES = (
    "Abara",
    "Bellweather",
    "Castellano",
    "Dunmore",
    "Eklund",
    "Fairbanks",
    "Galloway",
    "Haddad",
    "Ishikawa",
    "Jaramillo",
    "Kowalczyk",
    "Lindqvist",
    "Mbeki",
    "Novak",
    "Okafor",
    "Pellegrino",
    "Quill",
    "Rasmussen",
    "Sandoval",
    "Thornbury",
    "Umberto",
    "Varga",
    "Whitlock",
    "Xu",
    "Yilmaz",
    "Zielinski",
)
STREET_NAMES = (
    "Alder Lane",
    "Birch Street",
    "Cedar Court",
    "Dogwood Drive",
    "Elm Row",
    "Fern Way",
    "Harbor Road",
    "Juniper Avenue",
    "Larkspur Terrace",
    "Meadow Loop",
    "Orchard Path",
)
# (city, state, first three digits of the postal code); invented towns.
TOWNS = (
    ("Riverbend", "OR", "973"),
    ("Cedar Hollow", "OR", "974"),
    ("Maple Ridge", "WA", "986"),
    ("Port Alder", "WA", "983"),
    ("Willow Falls", "OR", "970"),
)
