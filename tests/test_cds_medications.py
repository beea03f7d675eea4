"""Reading ingredients from RxNorm-style medication names and substances from allergies."""

from __future__ import annotations

import pytest

from careloop.cds.medications import (
    RXNORM,
    SNOMED,
    allergy_classes,
    allergy_is_current,
    drug_classes,
    ingredients_from_name,
    medication_ingredients,
    normalise_ingredient,
    rxnorm_ingredient_names,
)


def _request(display: str | None = None, text: str | None = None, **extra: object) -> dict:
    concept: dict = {}
    if display is not None:
        concept["coding"] = [{"system": RXNORM, "code": "0", "display": display}]
    if text is not None:
        concept["text"] = text
    resource = {"resourceType": "MedicationRequest", "id": "m1", "status": "active"}
    if concept:
        resource["medicationCodeableConcept"] = concept
    resource.update(extra)
    return resource


def _allergy(coding: dict | None = None, text: str | None = None, **status: str) -> dict:
    code: dict = {}
    if coding:
        code["coding"] = [coding]
    if text:
        code["text"] = text
    allergy = {"resourceType": "AllergyIntolerance", "id": "a1", "code": code}
    if "clinical" in status:
        allergy["clinicalStatus"] = {"coding": [{"code": status["clinical"]}]}
    if "verification" in status:
        allergy["verificationStatus"] = {"coding": [{"code": status["verification"]}]}
    return allergy


@pytest.mark.parametrize(
    ("display", "expected"),
    [
        ("Simvastatin 10 MG Oral Tablet", {"simvastatin"}),
        (
            "Amlodipine 5 MG / Hydrochlorothiazide 12.5 MG / Olmesartan medoxomil 20 MG "
            "Oral Tablet",
            {"amlodipine", "hydrochlorothiazide", "olmesartan"},
        ),
        ("24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet", {"metformin"}),
        ("Acetaminophen 325 MG Oral Tablet [Tylenol]", {"acetaminophen"}),
        ("1 ML Epinephrine 1 MG/ML Auto-Injector", {"epinephrine"}),
        ("NDA020503 200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", {"albuterol"}),
        (
            "Acetaminophen 300 MG / HYDROcodone Bitartrate 5 MG [Vicodin]",
            {"acetaminophen", "hydrocodone"},
        ),
        ("Acetaminophen/Hydrocodone", {"acetaminophen", "hydrocodone"}),
        ("Penicillin V Potassium 250 MG Oral Tablet", {"penicillin v"}),
        ("24hr nicotine transdermal patch", {"nicotine"}),
        ("heparin sodium, porcine", {"heparin"}),
        ("NITROFURANTOIN, MACROCRYSTALS 50 MG Oral Capsule", {"nitrofurantoin"}),
        ("Carbamazepine[Tegretol]", {"carbamazepine"}),
        ("Vitamin B 12 5 MG/ML Injectable Solution", {"cyanocobalamin"}),
        ("Lasix 40mg", {"furosemide"}),  # brand only, resolved through the reviewed brand list
        ("Simvistatin 10 MG", {"simvastatin"}),  # Synthea's spelling
        ("Zocor 20 MG Oral Tablet", {"simvastatin"}),
    ],
)
def test_rxnorm_names_give_their_ingredients(display: str, expected: set[str]) -> None:
    assert ingredients_from_name(display) == expected


def test_salt_words_are_kept_when_the_rest_is_not_a_drug() -> None:
    # "ferrous sulfate" is iron, "sodium chloride" is saline: dropping the salt word would
    # leave a word that names no drug.
    assert ingredients_from_name("ferrous sulfate 325 MG Oral Tablet") == {"ferrous sulfate"}
    assert ingredients_from_name("Sodium Chloride 9 MG/ML Injectable Solution") == {
        "sodium chloride"
    }
    assert normalise_ingredient("Calcium Acetate") == "calcium acetate"
    assert normalise_ingredient("Naproxen sodium") == "naproxen"


def test_inn_names_meet_usan_names() -> None:
    # DrugBank (and so the ONC lists) uses INN names; RxNorm uses USAN names.
    assert normalise_ingredient("Rifampicin") == "rifampin"
    assert normalise_ingredient("Acetylsalicylic acid") == "aspirin"
    assert normalise_ingredient("Pethidine") == "meperidine"
    assert normalise_ingredient("Dabigatran etexilate") == "dabigatran"


def test_raw_names_keep_order_and_case() -> None:
    assert rxnorm_ingredient_names("Amoxicillin 250 MG / Clavulanate 125 MG Oral Tablet") == [
        "Amoxicillin",
        "Clavulanate",
    ]
    assert rxnorm_ingredient_names("") == []


def test_text_is_used_only_when_rxnorm_gives_nothing() -> None:
    assert medication_ingredients(_request(text="Warfarin Sodium 5 MG Oral Tablet")) == {"warfarin"}
    both = _request("Simvastatin 20 MG Oral Tablet", text="statin for cholesterol")
    assert medication_ingredients(both) == {"simvastatin"}


def test_contained_and_supplied_medications_are_followed() -> None:
    contained = {
        "resourceType": "Medication",
        "id": "med",
        "code": {"coding": [{"system": RXNORM, "display": "Clarithromycin 500 MG Oral Tablet"}]},
    }
    by_contained = _request(medicationReference={"reference": "#med"}, contained=[contained])
    assert medication_ingredients(by_contained) == {"clarithromycin"}
    by_reference = _request(medicationReference={"reference": "Medication/42"})
    assert medication_ingredients(by_reference) == frozenset()
    supplied = {"Medication/42": {**contained, "id": "42"}}
    assert medication_ingredients(by_reference, supplied) == {"clarithromycin"}


def test_medication_ingredient_list_is_read() -> None:
    medication = {
        "resourceType": "Medication",
        "ingredient": [
            {"itemCodeableConcept": {"coding": [{"system": RXNORM, "display": "Lisinopril"}]}},
            {"itemCodeableConcept": {"text": "Hydrochlorothiazide"}},
        ],
    }
    assert medication_ingredients(medication) == {"lisinopril", "hydrochlorothiazide"}


def test_unreadable_medications_give_nothing() -> None:
    assert medication_ingredients(_request()) == frozenset()
    assert medication_ingredients(_request(display="")) == frozenset()
    assert (
        medication_ingredients(
            {"resourceType": "MedicationRequest", "medicationCodeableConcept": "x"}
        )
        == frozenset()
    )


def test_drug_classes() -> None:
    assert drug_classes("Simvastatin") == {"statins"}
    assert "penicillins" in drug_classes("amoxicillin")
    assert {"nsaids", "salicylates"} <= drug_classes("diflunisal")
    assert drug_classes("unobtainium") == frozenset()


def test_coded_class_allergies() -> None:
    penicillin = _allergy(
        {"system": SNOMED, "code": "91936005", "display": "Allergy to penicillin"}
    )
    assert allergy_classes(penicillin) == {"penicillins"}
    sulfa = _allergy({"system": SNOMED, "code": "294505008"})
    assert allergy_classes(sulfa) == {"sulfonamide_antibiotics"}


def test_rxnorm_ingredient_allergy_includes_its_cross_reacting_class() -> None:
    amoxicillin = _allergy({"system": RXNORM, "code": "723", "display": "Amoxicillin"})
    assert allergy_classes(amoxicillin) == {"amoxicillin", "penicillins"}
    # statins have no cross-reactivity rule: an atorvastatin allergy stays an atorvastatin one
    atorvastatin = _allergy({"system": RXNORM, "code": "83367", "display": "atorvastatin"})
    assert allergy_classes(atorvastatin) == {"atorvastatin"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Allergy to penicillin", {"penicillins"}),
        ("Sulfa drug allergy", {"sulfonamide_antibiotics"}),
        ("Hypersensitivity to cephalosporins", {"cephalosporins"}),
        ("ibuprofen", {"ibuprofen", "nsaids"}),
        ("Allergy to mould", set()),  # not a drug: never becomes one
        ("Shellfish allergy", set()),
    ],
)
def test_free_text_allergies(text: str, expected: set[str]) -> None:
    assert allergy_classes(_allergy(text=text)) == expected


@pytest.mark.parametrize(
    ("clinical", "verification", "current"),
    [
        ("active", "confirmed", True),
        ("inactive", "confirmed", False),
        ("resolved", "confirmed", False),
        ("active", "refuted", False),
        ("active", "entered-in-error", False),
        ("active", "unconfirmed", True),
    ],
)
def test_inactive_or_refuted_allergies_are_skipped(
    clinical: str, verification: str, current: bool
) -> None:
    allergy = _allergy(
        {"system": SNOMED, "code": "91936005"}, clinical=clinical, verification=verification
    )
    assert allergy_is_current(allergy) is current
    assert allergy_classes(allergy) == ({"penicillins"} if current else frozenset())
