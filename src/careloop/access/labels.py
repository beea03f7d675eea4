"""Sensitive data classes and the security labels that name them.

A patient's Consent can permit or deny five classes of data that law and practice treat as
specially sensitive: mental health, substance-use treatment (42 CFR Part 2 in the US), HIV,
genetics and reproductive health. FHIR marks such data with `meta.security` labels from
HL7 v3 ActCode's InformationSensitivityPolicy codes, and a Consent provision names the labels it
covers in `provision.securityLabel`. Real EHR feeds (and Synthea) almost never label, so the
labels are also *inferred* from the codes a resource carries.

Labels used (v3-ActCode, http://terminology.hl7.org/CodeSystem/v3-ActCode):

| class | labels careloop emits | also read as this class |
|---|---|---|
| mental health | PSY (psychiatry disorder), MH (mental health), BH | PSYTHPN, EMOTDIS |
| substance use | ETH (substance abuse), SUD (substance use disorder), BH | ETHUD, OPIOIDUD |
| HIV | HIV (HIV/AIDS) | |
| genetics | GDIS (genetic disease) | |
| reproductive health | SEX (sexuality and reproductive health) | |

BH (behavioral health) is the umbrella: it is emitted for both mental health and substance
use, and an explicit BH label alone is read as both (the stricter reading). MH and SUD are
siblings under BH in ActCode, and 42 CFR Part 2 governs substance-use records separately, so
ICD-10 F10-F19 is substance use only, not mental health. Other explicit ActCode labels (STD, SDV,
TBOO, ...) pass through `security_labels` unchanged, so a consent naming them still matches, but
they are not one of the five classes and are never inferred.

Inference is by exact code look-up in the tables below (and ICD-10 category ranges), over every
coding anywhere in the resource: not only `Condition.code` or `Observation.code`, because a Claim
or ExplanationOfBenefit repeats the diagnosis and service codes of the encounter it bills, and
contained resources carry their own codes. Look-ups are by (system, code), so scanning more
elements cannot label an ordinary resource. What is *not* inferred, on purpose:

- tobacco (ICD-10 F17, "Smokes tobacco daily", nicotine patches): ubiquitous in risk models and
  outside what substance-use confidentiality rules protect;
- drug overdose (SNOMED 55680006, ICD-10 T40): often accidental, not by itself a use disorder;
- psychiatric drugs (SSRIs, benzodiazepines, stimulants) and methadone: they have other uses
  (pain, sleep, menopause), and Synthea's RxNorm codes for some of them could not be confirmed;
  the conditions they treat carry the label;
- a resource that merely *references* a labelled Condition (e.g. `reasonReference`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Final

from careloop.fhir import codes

CONFIDENTIALITY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


class DataClass(StrEnum):
    MENTAL_HEALTH = "mental-health"
    SUBSTANCE_USE = "substance-use"
    HIV = "hiv"
    GENETICS = "genetics"
    REPRODUCTIVE_HEALTH = "reproductive-health"


_MH = DataClass.MENTAL_HEALTH
_SUD = DataClass.SUBSTANCE_USE
_HIV = DataClass.HIV
_GEN = DataClass.GENETICS
_REPRO = DataClass.REPRODUCTIVE_HEALTH

# The labels careloop emits for a class, and puts in a consent that restricts the class.
CLASS_LABELS: Final[Mapping[DataClass, frozenset[str]]] = {
    _MH: frozenset({"PSY", "MH"}),
    _SUD: frozenset({"ETH", "SUD"}),
    _HIV: frozenset({"HIV"}),
    _GEN: frozenset({"GDIS"}),
    _REPRO: frozenset({"SEX"}),
}
BEHAVIORAL_HEALTH_LABEL: Final = "BH"
_BEHAVIORAL = frozenset({_MH, _SUD})

# Explicit ActCode labels read as a class (more specific codes included).
LABEL_CLASSES: Final[Mapping[str, frozenset[DataClass]]] = {
    "PSY": frozenset({_MH}),
    "MH": frozenset({_MH}),
    "PSYTHPN": frozenset({_MH}),
    "EMOTDIS": frozenset({_MH}),
    "BH": _BEHAVIORAL,
    "ETH": frozenset({_SUD}),
    "SUD": frozenset({_SUD}),
    "ETHUD": frozenset({_SUD}),
    "OPIOIDUD": frozenset({_SUD}),
    "HIV": frozenset({_HIV}),
    "GDIS": frozenset({_GEN}),
    "SEX": frozenset({_REPRO}),
}

# --- ICD-10 (both ICD-10-CM and WHO ICD-10) ----------------------------------------------------
# Inclusive ranges of 3-character categories. Categories compare as strings because each is one
# letter and two characters ("O9A" sorts after "O99").
ICD10_CATEGORY_RANGES: Final[tuple[tuple[str, str, DataClass], ...]] = (
    ("F01", "F09", _MH),  # mental disorders due to known physiological conditions
    ("F10", "F16", _SUD),  # alcohol, opioid, cannabis, sedative, cocaine, stimulant, hallucinogen
    # F17 nicotine dependence: deliberately not labelled (see the module docstring)
    ("F18", "F19", _SUD),  # inhalant, other psychoactive substance
    ("F20", "F99", _MH),  # schizophrenia through unspecified mental disorder
    ("B20", "B24", _HIV),  # HIV disease (B21-B24 exist in WHO ICD-10 only)
    ("Z21", "Z21", _HIV),  # asymptomatic HIV infection status
    ("R75", "R75", _HIV),  # inconclusive laboratory evidence of HIV
    ("Z14", "Z15", _GEN),  # genetic carrier; genetic susceptibility to disease
    ("Q90", "Q99", _GEN),  # chromosomal abnormalities
    ("O00", "O9A", _REPRO),  # pregnancy, childbirth and the puerperium
    ("Z30", "Z37", _REPRO),  # contraception, procreation, pregnancy, antenatal screening, delivery
    # Z38 (liveborn infant) is the newborn's own birth record, not reproductive care
    ("Z39", "Z39", _REPRO),  # postpartum care
    ("Z3A", "Z3A", _REPRO),  # weeks of gestation
    ("N46", "N46", _REPRO),  # male infertility
    ("N96", "N97", _REPRO),  # recurrent pregnancy loss; female infertility
)
# Subcategories (code without its dot, as a prefix) that name a class outside the ranges above.
ICD10_PREFIXES: Final[Mapping[str, frozenset[DataClass]]] = {
    "Z206": frozenset({_HIV}),  # contact with / exposure to HIV
    "Z717": frozenset({_HIV}),  # HIV counselling
    "O987": frozenset({_HIV, _REPRO}),  # HIV disease complicating pregnancy
    "Z7141": frozenset({_SUD}),  # alcohol abuse counselling
    "Z7151": frozenset({_SUD}),  # drug abuse counselling
    "O9931": frozenset({_SUD, _REPRO}),  # alcohol use complicating pregnancy
    "O9932": frozenset({_SUD, _REPRO}),  # drug use complicating pregnancy
    "R45851": frozenset({_MH}),  # suicidal ideation
    "T1491": frozenset({_MH}),  # suicide attempt
    "Z915": frozenset({_MH}),  # personal history of self-harm
    "Z137": frozenset({_GEN}),  # screening for genetic and chromosomal anomalies
    "Z3143": frozenset({_GEN, _REPRO}),  # genetic testing (procreative management), female
    "Z3144": frozenset({_GEN, _REPRO}),  # genetic testing (procreative management), male
    "Z975": frozenset({_REPRO}),  # presence of intrauterine contraceptive device
    "Z9851": frozenset({_REPRO}),  # tubal ligation status
    "Z9852": frozenset({_REPRO}),  # vasectomy status
}

# --- SNOMED CT codes seen in the shared Synthea R4 set ----------------------------------------
# Found by scanning every bundle of ../shared/data/synthea_r4 (Synthea v2.4, 615 patients) for
# the codes of Condition, Encounter (type and reasonCode), Procedure, CarePlan (category) and
# Observation; counts are resources in that set, displays as Synthea writes them.
SYNTHEA_SNOMED: Final[Mapping[str, tuple[frozenset[DataClass], str]]] = {
    # mental health
    "370143000": (frozenset({_MH}), "Major depression disorder"),  # 3 conditions
    "36923009": (frozenset({_MH}), "Major depression, single episode"),  # encounter reason
    "47505003": (frozenset({_MH}), "Posttraumatic stress disorder"),  # 2 + 97 encounters
    "192127007": (frozenset({_MH}), "Child attention deficit disorder"),  # ICD-10 F90
    "79094001": (frozenset({_MH}), "Initial psychiatric interview with mental status evaluation"),
    "171207006": (frozenset({_MH}), "Depression screening"),  # 235 procedures
    "715252007": (frozenset({_MH}), "Depression screening using PHQ-9"),
    "385892002": (frozenset({_MH}), "Mental health screening"),
    "228557008": (frozenset({_MH}), "Cognitive and behavioral therapy"),  # 83 procedures
    "736254008": (frozenset({_MH}), "Psychiatry care plan"),
    "718347000": (frozenset({_MH}), "Mental health care plan"),
    "737434004": (frozenset({_MH}), "Major depressive disorder clinical management plan"),
    "386522008": (frozenset({_MH}), "Overactivity/inattention behavior management"),
    # substance use
    "7200002": (frozenset({_SUD}), "Alcoholism"),
    "5602001": (frozenset({_SUD}), "Opioid abuse (disorder)"),
    "56876005": (frozenset({_SUD}), "Drug rehabilitation and detoxification"),  # 71 encounters
    # HIV
    "31676001": (frozenset({_HIV}), "Human immunodeficiency virus antigen test"),  # prenatal
    # genetics (prenatal, so also reproductive health)
    "443529005": (
        frozenset({_GEN, _REPRO}),
        "Screening for chromosomal aneuploidy in prenatal amniotic fluid",
    ),
    "267253006": (frozenset({_GEN, _REPRO}), "Fetus with chromosomal abnormality"),
    # reproductive health: pregnancy, its complications and care
    "72892002": (frozenset({_REPRO}), "Normal pregnancy"),  # 253 conditions, 1758 encounters
    "19169002": (frozenset({_REPRO}), "Miscarriage in first trimester"),
    "156073000": (frozenset({_REPRO}), "Fetus with unknown complication"),
    "79586000": (frozenset({_REPRO}), "Tubal pregnancy"),
    "198992004": (frozenset({_REPRO}), "Antepartum eclampsia"),
    "35999006": (frozenset({_REPRO}), "Blighted ovum"),
    "398254007": (frozenset({_REPRO}), "Preeclampsia"),
    "609496007": (frozenset({_REPRO}), "Complication occuring during pregnancy"),
    "37849005": (frozenset({_REPRO}), "Congenital uterine anomaly"),
    "424619006": (frozenset({_REPRO}), "Prenatal visit"),
    "424441002": (frozenset({_REPRO}), "Prenatal initial visit"),
    "183460006": (frozenset({_REPRO}), "Obstetric emergency hospital admission"),
    "225158009": (frozenset({_REPRO}), "Auscultation of the fetal heart"),
    "274804006": (frozenset({_REPRO}), "Evaluation of uterine fundal height"),
    "169230002": (frozenset({_REPRO}), "Ultrasound scan for fetal viability"),
    "252160004": (frozenset({_REPRO}), "Standard pregnancy test"),
    "271442007": (frozenset({_REPRO}), "Fetal anatomy study"),
    "169673001": (frozenset({_REPRO}), "Antenatal RhD antibody screening"),
    "66348005": (frozenset({_REPRO}), "Childbirth"),
    "65588006": (frozenset({_REPRO}), "Premature birth of newborn"),
    "236974004": (frozenset({_REPRO}), "Instrumental delivery"),
    "10383002": (frozenset({_REPRO}), "Counseling for termination of pregnancy"),
    "386394001": (frozenset({_REPRO}), "Pregnancy termination care"),
    "714812005": (frozenset({_REPRO}), "Induced termination of pregnancy"),
    "236931002": (frozenset({_REPRO}), "Methotrexate injection into tubal pregnancy"),
    "445912000": (
        frozenset({_REPRO}),
        "Excision of fallopian tube and surgical removal of ectopic pregnancy",
    ),
    # reproductive health: contraception and sterilisation
    "65200003": (frozenset({_REPRO}), "Insertion of intrauterine contraceptive device"),
    "68254000": (frozenset({_REPRO}), "Removal of intrauterine device"),
    "46706006": (frozenset({_REPRO}), "Replacement of contraceptive intrauterine device"),
    "169553002": (frozenset({_REPRO}), "Insertion of subcutaneous contraceptive"),
    "301807007": (frozenset({_REPRO}), "Removal of subcutaneous contraceptive"),
    "755621000000101": (frozenset({_REPRO}), "Replacement of subcutaneous contraceptive"),
    "287664005": (frozenset({_REPRO}), "Bilateral tubal ligation"),
    "22523008": (frozenset({_REPRO}), "Vasectomy"),
}

# Common SNOMED CT disorders the shared Synthea set does not contain but other feeds (and newer
# Synthea modules) use; well-known concept ids.
COMMON_SNOMED: Final[Mapping[str, tuple[frozenset[DataClass], str]]] = {
    "35489007": (frozenset({_MH}), "Depressive disorder"),
    "197480006": (frozenset({_MH}), "Anxiety disorder"),
    "58214004": (frozenset({_MH}), "Schizophrenia"),
    "13746004": (frozenset({_MH}), "Bipolar disorder"),
    "66590003": (frozenset({_SUD}), "Alcohol dependence"),
    "15167005": (frozenset({_SUD}), "Alcohol abuse"),
    "26416006": (frozenset({_SUD}), "Drug abuse"),
    "86406008": (frozenset({_HIV}), "Human immunodeficiency virus infection"),
    "62479008": (frozenset({_HIV}), "Acquired immune deficiency syndrome"),
    "77386006": (frozenset({_REPRO}), "Pregnant"),
}

# --- LOINC --------------------------------------------------------------------------------------
LOINC_CODES: Final[Mapping[str, tuple[frozenset[DataClass], str]]] = {
    # seen in the shared Synthea set
    "75443-2": (frozenset({_MH}), "Mental health Outpatient Note"),
    "84215-3": (frozenset({_MH}), "Mental health Telehealth Note"),
    "55277-8": (frozenset({_HIV}), "HIV status"),  # a status is HIV information either way
    # standard instruments and reports
    "44249-1": (frozenset({_MH}), "PHQ-9 quick depression assessment panel"),
    "44261-6": (frozenset({_MH}), "PHQ-9 total score"),
    "55758-7": (frozenset({_MH}), "PHQ-2 total score"),
    "69737-5": (frozenset({_MH}), "GAD-7 panel"),
    "70274-6": (frozenset({_MH}), "GAD-7 total score"),
    "75626-2": (frozenset({_SUD}), "AUDIT-C total score"),
    "75622-1": (frozenset({_HIV}), "HIV 1 and 2 Ag+Ab [Presence] in Serum by Immunoassay"),
    "51969-4": (frozenset({_GEN}), "Genetic analysis report"),
    "69548-6": (frozenset({_GEN}), "Genetic variant assessment"),
    "81247-9": (frozenset({_GEN}), "Master HL7 genetic variant reporting panel"),
    "82810-3": (frozenset({_REPRO}), "Pregnancy status"),
}

# --- RxNorm -------------------------------------------------------------------------------------
RXNORM_CODES: Final[Mapping[str, tuple[frozenset[DataClass], str]]] = {
    # Substance-use treatment: from the eCQM value set "Opiate Antagonists"
    # (2.16.840.1.113883.3.464.1003.198.12.1132, CMS137), keeping only products used for opioid
    # or alcohol use disorder: buprenorphine/naloxone and sublingual buprenorphine, naltrexone,
    # acamprosate, disulfiram. Injectable buprenorphine (an analgesic) and bupropion/naltrexone
    # (a weight-loss drug) are left out.
    "351264": (frozenset({_SUD}), "buprenorphine 2 MG Sublingual Tablet"),
    "351265": (frozenset({_SUD}), "buprenorphine 8 MG Sublingual Tablet"),
    "351266": (frozenset({_SUD}), "buprenorphine 2 MG / naloxone 0.5 MG Sublingual Tablet"),
    "351267": (frozenset({_SUD}), "buprenorphine 8 MG / naloxone 2 MG Sublingual Tablet"),
    "1010600": (frozenset({_SUD}), "buprenorphine 2 MG / naloxone 0.5 MG Sublingual Film"),
    "1010604": (frozenset({_SUD}), "buprenorphine 8 MG / naloxone 2 MG Sublingual Film"),
    "1307056": (frozenset({_SUD}), "buprenorphine 4 MG / naloxone 1 MG Sublingual Film"),
    "1307061": (frozenset({_SUD}), "buprenorphine 12 MG / naloxone 3 MG Sublingual Film"),
    "1597568": (frozenset({_SUD}), "buprenorphine 11.4 MG / naloxone 2.9 MG Sublingual Tablet"),
    "1597573": (frozenset({_SUD}), "buprenorphine 8.6 MG / naloxone 2.1 MG Sublingual Tablet"),
    "637213": (frozenset({_SUD}), "naltrexone 380 MG Injection"),
    "1483744": (frozenset({_SUD}), "naltrexone hydrochloride 50 MG Oral Tablet"),
    "835726": (frozenset({_SUD}), "acamprosate calcium 333 MG Delayed Release Oral Tablet"),
    "197623": (frozenset({_SUD}), "disulfiram 250 MG Oral Tablet"),
    "197624": (frozenset({_SUD}), "disulfiram 500 MG Oral Tablet"),
    # HIV: integrase strand transfer inhibitors, from the CSTE value set "HIV Infection (ARV
    # Integrase Strand Transfer Inhibitors [INSTIs]) (RXNORM)" (2.16.840.1.113762.1.4.1146.1600).
    # INSTIs are used only against HIV (treatment or prevention); tenofovir/emtricitabine alone is
    # left out because it also treats hepatitis B.
    "1433873": (frozenset({_HIV}), "dolutegravir 50 MG Oral Tablet"),
    "1433879": (frozenset({_HIV}), "dolutegravir 50 MG Oral Tablet [Tivicay]"),
    "744842": (frozenset({_HIV}), "raltegravir 400 MG Oral Tablet"),
    "744846": (frozenset({_HIV}), "raltegravir 400 MG Oral Tablet [Isentress]"),
    "1924313": (frozenset({_HIV}), "raltegravir 600 MG Oral Tablet"),
    "1924315": (frozenset({_HIV}), "raltegravir 600 MG Oral Tablet [Isentress]"),
    "1999667": (
        frozenset({_HIV}),
        "bictegravir 50 MG / emtricitabine 200 MG / tenofovir alafenamide 25 MG Oral Tablet",
    ),
    "1999673": (
        frozenset({_HIV}),
        "bictegravir / emtricitabine / tenofovir alafenamide [Biktarvy]",
    ),
    "2475199": (frozenset({_HIV}), "cabotegravir 30 MG Oral Tablet"),
    "2475205": (frozenset({_HIV}), "cabotegravir 30 MG Oral Tablet [Vocabria]"),
    # Contraceptives as the shared Synthea set prescribes them (its contraceptive module): the
    # codes and product names appear together in the data.
    "757594": (frozenset({_REPRO}), "Jolivette 28 Day Pack"),
    "748962": (frozenset({_REPRO}), "Camila 28 Day Pack"),
    "751905": (frozenset({_REPRO}), "Trinessa 28 Day Pack"),
    "389221": (frozenset({_REPRO}), "Etonogestrel 68 MG Drug Implant"),
    "1000126": (frozenset({_REPRO}), "1 ML medroxyprogesterone acetate 150 MG/ML Injection"),
    "1000156": (frozenset({_REPRO}), "0.65 ML medroxyprogesterone acetate 160 MG/ML Syringe"),
    "748856": (frozenset({_REPRO}), "Yaz 28 Day Pack"),
    "831533": (frozenset({_REPRO}), "Errin 28 Day Pack"),
    "749762": (frozenset({_REPRO}), "Seasonique 91 Day Pack"),
    "807283": (frozenset({_REPRO}), "Mirena 52 MG Intrauterine System"),
    "1367439": (frozenset({_REPRO}), "NuvaRing 0.12/0.015 MG per 24HR 21 Day Vaginal Ring"),
    "748879": (frozenset({_REPRO}), "Levora 0.15/30 28 Day Pack"),
    "978950": (frozenset({_REPRO}), "Natazia 28 Day Pack"),
    "1534809": (frozenset({_REPRO}), "Ethinyl Estradiol / norelgestromin Transdermal System"),
    "1605257": (frozenset({_REPRO}), "Liletta 52 MG Intrauterine System"),
    "1856546": (frozenset({_REPRO}), "Kyleena 19.5 MG Intrauterine System"),
    "235389": (frozenset({_REPRO}), "Mestranol / Norethynodrel [Enovid]"),
    "749785": (frozenset({_REPRO}), "Ortho Tri-Cyclen 28 Day Pack"),
    "1359133": (frozenset({_REPRO}), "Estrostep Fe 28 Day Pack"),
    "749882": (frozenset({_REPRO}), "Norinyl 1+50 28 Day Pack"),
}

# DiagnosticReport.category "GE" (HL7 v2 table 0074, diagnostic service section: Genetics).
V2_DIAGNOSTIC_SERVICE: Final = "http://terminology.hl7.org/CodeSystem/v2-0074"
OTHER_CODES: Final[Mapping[tuple[str, str], frozenset[DataClass]]] = {
    (V2_DIAGNOSTIC_SERVICE, "GE"): frozenset({_GEN}),
}


def _code_table() -> dict[tuple[str, str], frozenset[DataClass]]:
    table: dict[tuple[str, str], frozenset[DataClass]] = dict(OTHER_CODES)
    sources: tuple[tuple[str, Mapping[str, tuple[frozenset[DataClass], str]]], ...] = (
        (codes.SNOMED, SYNTHEA_SNOMED),
        (codes.SNOMED, COMMON_SNOMED),
        (codes.LOINC, LOINC_CODES),
        (codes.RXNORM, RXNORM_CODES),
    )
    for system, entries in sources:
        for code, (classes, _display) in entries.items():
            key = (system, code)
            table[key] = table.get(key, frozenset()) | classes
    return table


# (system, code) -> classes, compiled once from the named tables above.
CODE_CLASSES: Final[Mapping[tuple[str, str], frozenset[DataClass]]] = _code_table()
_ICD10_SYSTEMS = frozenset({codes.ICD10_CM, codes.ICD10})
_ICD10_PREFIX_LENGTHS = sorted({len(prefix) for prefix in ICD10_PREFIXES}, reverse=True)
_NO_CLASSES: frozenset[DataClass] = frozenset()


def security_labels(resource: dict) -> frozenset[str]:
    """The v3-ActCode sensitivity codes that apply to a resource: its explicit `meta.security`
    ActCode labels plus the labels of every class inferred from its codes."""
    explicit = _explicit_labels(resource)
    labels = set(explicit)
    for data_class in _classes(resource, explicit):
        labels |= CLASS_LABELS[data_class]
        if data_class in _BEHAVIORAL:
            labels.add(BEHAVIORAL_HEALTH_LABEL)
    return frozenset(labels)


def data_classes(resource: dict) -> frozenset[DataClass]:
    """The sensitive classes a resource belongs to, from explicit labels and inferred codes."""
    return _classes(resource, _explicit_labels(resource))


def classes_of_code(system: str, code: str) -> frozenset[DataClass]:
    """The classes one coding names (empty for an ordinary code)."""
    if system in _ICD10_SYSTEMS:
        return _icd10_classes(code)
    return CODE_CLASSES.get((system, code.strip()), _NO_CLASSES)


def _classes(resource: dict, explicit: frozenset[str]) -> frozenset[DataClass]:
    found: set[DataClass] = set()
    for label in explicit:
        found |= LABEL_CLASSES.get(label, _NO_CLASSES)
    for system, code in _codings(resource):
        found |= classes_of_code(system, code)
    return frozenset(found)


def _icd10_classes(code: str) -> frozenset[DataClass]:
    normal = code.strip().upper().replace(".", "")
    if len(normal) < 3:
        return _NO_CLASSES
    found: set[DataClass] = set()
    category = normal[:3]
    for start, end, data_class in ICD10_CATEGORY_RANGES:
        if start <= category <= end:
            found.add(data_class)
    for length in _ICD10_PREFIX_LENGTHS:
        found |= ICD10_PREFIXES.get(normal[:length], _NO_CLASSES)
    return frozenset(found)


def _explicit_labels(resource: dict) -> frozenset[str]:
    """ActCode codes in `meta.security` of the resource and of its contained resources."""
    labels: set[str] = set()
    holders = [resource]
    contained = resource.get("contained")
    if isinstance(contained, list):
        holders.extend(item for item in contained if isinstance(item, dict))
    for holder in holders:
        meta = holder.get("meta")
        security = meta.get("security") if isinstance(meta, dict) else None
        for coding in security if isinstance(security, list) else ():
            if (
                isinstance(coding, dict)
                and coding.get("system") == CONFIDENTIALITY_SYSTEM
                and isinstance(coding.get("code"), str)
            ):
                labels.add(coding["code"].strip())
    return frozenset(labels)


def _codings(resource: dict) -> Iterator[tuple[str, str]]:
    """(system, code) of every coding in the resource, walked without recursion so a hostile,
    deeply nested document cannot exhaust the stack."""
    stack: list[object] = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            system, code = node.get("system"), node.get("code")
            if isinstance(system, str) and isinstance(code, str):
                yield system, code
            stack.extend(_containers(node.values()))
        elif isinstance(node, list):
            stack.extend(_containers(node))


def _containers(values: Iterable[object]) -> Iterator[object]:
    return (value for value in values if isinstance(value, dict | list))
