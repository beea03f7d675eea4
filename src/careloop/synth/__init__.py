"""A synthetic demo population of careloop's own making, as FHIR R4 resources.

Nothing here describes a real person: names, towns, identifiers and every value are invented, and
every resource carries the `meta.tag` SYNTHETIC_TAG_SYSTEM|SYNTHETIC_TAG_CODE from
`careloop.fhir.codes`. Output is deterministic: the same (patients, seed, start) gives the same
resources, byte for byte, and patient k is the same whatever the population size.

What is generated
-----------------
- The care site: a hospital and a family clinic (Organization) and four Practitioners.
- Per patient: a Patient (MRN `https://careloop.dev/fhir/sid/demo-mrn|DEMO-000001`, name,
  gender, adult birthDate, address, telecom); a problem list of chronic Conditions coded in
  SNOMED CT and ICD-10-CM (hypertension, type 2 diabetes, hyperlipidemia, heart failure, CKD
  stage 3, COPD, atrial fibrillation; more likely with age); AllergyIntolerance for about a
  quarter; one to five clinic Encounters in the year before `start` with vitals (blood pressure
  panel 85354-9, heart rate, weight, BMI, height) and basic labs; and RxNorm-coded
  MedicationRequests for the usual first-line drug for each diagnosis, citing the Condition.
- Inside the simulated window (from `start`, default 2026-01-01T00:00Z, about 90 days):
  - 30% of patients have an inpatient Encounter (class IMP, 2-6 days) with hourly vital signs
    (heart rate, respiratory rate, SpO2, blood-pressure panel; temperature four-hourly) and labs
    every 6-24 h (lactate, WBC, creatinine, platelets, bilirubin, glucose, potassium, sodium,
    haemoglobin, BUN), with the gaps a real ward chart has. A third of them (10% of patients)
    drift into sepsis: heart rate, respiratory rate and temperature rise and blood pressure and
    SpO2 fall from 10-16 h before onset, with lactate and WBC rising on the labs drawn.
  - 50% wear a wrist tracker (a Device; heart-failure patients also a connected scale) that
    reports one value a day for 60-90 days: resting heart rate (40443-4), HRV SDNN (80404-7),
    steps (41950-7), sleep duration (93832-4), SpO2 (59408-5) and, for heart failure, body
    weight (29463-7). Each person has their own baseline and weekday/weekend rhythm. Some live
    through one episode: heart-failure decompensation (weight up 2-4 kg over days, resting heart
    rate up, steps and sleep down) or an infection-like illness (resting heart rate up, HRV and
    steps down, more sleep).

Where the ground truth lives
---------------------------
Resources that state what really happened carry a second `meta.tag`,
GROUND_TRUTH_TAG_SYSTEM|GROUND_TRUTH_TAG_CODE. They are labels for evaluation: leave them out of
anything a model sees.
- Sepsis: a Condition coded SNOMED 91302008 (ICD-10-CM A41.9), `encounter` = the inpatient stay,
  `onsetDateTime` = the onset the physiology was built around. Inpatient stays without one are
  the negatives.
- Home episodes: a Flag (status inactive) whose `code` is EPISODE_SYSTEM|hf-decompensation or
  EPISODE_SYSTEM|infection-like and whose `period` covers the episode's whole days, end
  exclusive. Trackers without a Flag saw no episode.

Labs carry `issued` (when the result reached the chart), so a replay can use only what was known.
"""

from careloop.synth._fhir import GROUND_TRUTH_TAG_CODE, GROUND_TRUTH_TAG_SYSTEM
from careloop.synth.catalog import EPISODE_SYSTEM
from careloop.synth.population import DEFAULT_START, generate_population, write_population

__all__ = [
    "DEFAULT_START",
    "EPISODE_SYSTEM",
    "GROUND_TRUTH_TAG_CODE",
    "GROUND_TRUTH_TAG_SYSTEM",
    "generate_population",
    "write_population",
]
