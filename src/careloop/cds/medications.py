"""Ingredients of medications and substances of allergies, read from the names EHRs send.

Medication safety compares ingredients, not products: "Simvastatin 10 MG Oral Tablet" and
"Zocor 20 MG" are both simvastatin. Orders and lists arrive RxNorm-coded, and RxNorm's clinical
and branded drug names follow a fixed pattern (ingredient + strength joined by " / ", a
quantity prefix for packs and injections, the brand in brackets), so the ingredients can be
read from the display name without a terminology server. Names are normalised to one spelling
per ingredient (lower case, salt and ester words dropped, INN synonyms mapped to the USAN names
RxNorm uses) so that they meet the DrugBank names of the ONC interaction lists.

The reviewed vocabulary (synonyms, brands, classes, allergy cross-reactivity) lives in
`knowledge/drug_classes.yaml`; module-level functions use it, loaded once on first use.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
KNOWLEDGE_DIR = Path(__file__).resolve().parent / "knowledge"
DRUG_CLASSES_FILE = KNOWLEDGE_DIR / "drug_classes.yaml"
SEVERITIES = ("info", "warning", "critical")

# Salt, ester and hydrate words that name the form, not the active moiety: "metoprolol
# succinate" is metoprolol. "hydrocholoride" is a misspelling found in Synthea's names.
_SALT_WORDS = frozenset(
    """hydrochloride hydrocholoride hcl dihydrochloride hydrobromide bromide sodium potassium
    calcium magnesium succinate tartrate bitartrate besylate besilate maleate mesylate mesilate
    sulfate sulphate medoxomil etexilate acetate diacetate citrate fumarate phosphate
    monohydrate dihydrate trihydrate hyclate propionate dipropionate aspartate saccharate
    benzathine trometamol tromethamine hemihydrate valerate""".split()
)
# What remains when the "salt" word is in fact the drug: "ferrous sulfate" is iron, "calcium
# acetate" is a phosphate binder. Such names are kept whole.
_INORGANIC_BASES = frozenset(
    """ferrous ferric iron sodium potassium calcium magnesium zinc aluminum aluminium lithium
    ammonium barium copper cupric silver""".split()
)
# Dose-form words that may trail an ingredient name with no strength in between
# ("24hr nicotine transdermal patch").
_DOSE_FORM_WORDS = frozenset(
    """oral tablet tablets capsule capsules injection injectable solution suspension patch
    transdermal system cream ointment gel topical inhaler inhalant spray nasal mucosal chewable
    extended release delayed prefilled syringe auto-injector cartridge pen drug implant
    intrauterine vaginal ring powder dry metered dose lozenge film disintegrating ophthalmic
    otic drops elixir syrup suppository rectal enema kit pack day foam lotion shampoo""".split()
)
_BRACKET = re.compile(r"\[([^\]]*)\]")
_PREFIX = re.compile(
    r"^(?:(?:NDA|ANDA|BLA)\d+|abuse-deterrent|\d+(?:\.\d+)?\s*"
    r"(?:hr|ml|actuat|l|mg|g|mcg|unt|day|cm2|sq\s*cm)\b|\d+hr\b)\s*",
    re.IGNORECASE,
)
_SPACED_SLASH = re.compile(r"\s+/\s+")
_WORD_SLASH = re.compile(r"(?<=[A-Za-z])/(?=[A-Za-z])")
_ALLERGY_TEXT = re.compile(
    r"^(?:allergy|allergic|hypersensitivity|intolerance)\s+(?:reaction\s+)?(?:to|of)\s+(.+)$"
    r"|^(.+?)\s+(?:allergy|hypersensitivity|intolerance)$",
    re.IGNORECASE,
)
_INACTIVE_CLINICAL = frozenset({"inactive", "resolved"})
_REFUTED = frozenset({"refuted", "entered-in-error"})


class KnowledgeFileError(ValueError):
    """A knowledge file is malformed; the message names the file and the line."""


@dataclass(frozen=True)
class DrugClass:
    key: str  # e.g. "penicillins"
    display: str  # e.g. "Penicillins"
    members: frozenset[str]  # normalised ingredient names
    aliases: frozenset[str]  # words an allergy text may use for the class
    duplicate_therapy: bool  # two members at once deserve a duplicate-therapy warning
    onc_names: frozenset[str]  # lower-cased class names the ONC files use for this class


@dataclass(frozen=True)
class CrossReactivity:
    allergy_class: str
    order_class: str
    severity: str  # "info" | "warning" | "critical"
    note: str


@dataclass(frozen=True)
class DrugVocabulary:
    """The reviewed drug knowledge: spelling, brands, classes and allergy cross-reactivity."""

    synonyms: Mapping[str, str]
    brands: Mapping[str, tuple[str, ...]]
    classes: Mapping[str, DrugClass]
    cross_reactivity: tuple[CrossReactivity, ...]
    allergy_codes: Mapping[tuple[str, str], frozenset[str]]
    source: str = "drug_classes.yaml"

    @classmethod
    def load(cls, path: Path = DRUG_CLASSES_FILE) -> DrugVocabulary:
        return _vocabulary_from(load_knowledge_yaml(path), path.name)

    @functools.cached_property
    def _classes_by_member(self) -> Mapping[str, frozenset[str]]:
        index: dict[str, set[str]] = {}
        for drug_class in self.classes.values():
            for member in drug_class.members:
                index.setdefault(member, set()).add(drug_class.key)
        return {member: frozenset(keys) for member, keys in index.items()}

    @functools.cached_property
    def _classes_by_alias(self) -> Mapping[str, str]:
        return {alias: c.key for c in self.classes.values() for alias in c.aliases}

    @functools.cached_property
    def allergy_group_classes(self) -> frozenset[str]:
        """Classes whose members cross-react for allergy purposes (they have a rule)."""
        return frozenset(rule.allergy_class for rule in self.cross_reactivity)

    def normalise(self, name: str) -> str | None:
        """One ingredient name in careloop's spelling, or None when nothing is left of it."""
        text = _clean(name)
        text = self.synonyms.get(text, text)
        words = text.split()
        while len(words) > 1 and words[-1] in _SALT_WORDS and words[-2] not in _INORGANIC_BASES:
            words.pop()
        text = " ".join(words)
        text = self.synonyms.get(text, text)
        return text if any(ch.isalpha() for ch in text) else None

    def resolve(self, name: str) -> frozenset[str]:
        """Ingredients a single name stands for: itself normalised, or a brand's ingredients."""
        normalised = self.normalise(name)
        if normalised is None:
            return frozenset()
        brand = self.brands.get(normalised)
        if brand is not None:
            return frozenset(brand)
        return frozenset({normalised})

    def ingredients_from_name(self, display: str) -> frozenset[str]:
        """Ingredients named in an RxNorm-style medication name (or free text)."""
        found: set[str] = set()
        for raw in rxnorm_ingredient_names(display):
            found |= self.resolve(raw)
        if not found:
            for brand in _BRACKET.findall(display):
                found |= self.resolve(brand)
        return frozenset(found)

    def drug_classes(self, ingredient: str) -> frozenset[str]:
        normalised = self.normalise(ingredient)
        return self._classes_by_member.get(normalised or "", frozenset())

    def class_for_name(self, text: str) -> str | None:
        """The class a free-text substance name denotes ("penicillin", "sulfa drugs")."""
        cleaned = _clean(text)
        if cleaned in self.classes:
            return cleaned
        return self._classes_by_alias.get(cleaned)

    def medication_ingredients(
        self, resource: Mapping[str, Any], referenced: Mapping[str, Mapping[str, Any]] | None = None
    ) -> frozenset[str]:
        return frozenset(_medication_ingredients(self, resource, referenced or {}))

    def allergy_classes(self, allergy: Mapping[str, Any]) -> frozenset[str]:
        if not allergy_is_current(allergy):
            return frozenset()
        substances = set(_allergy_substances(self, allergy))
        expanded = set(substances)
        for substance in substances:
            if substance not in self.classes:
                expanded |= self.drug_classes(substance) & self.allergy_group_classes
        return frozenset(expanded)


def rxnorm_ingredient_names(display: str) -> list[str]:
    """The raw ingredient names in an RxNorm name, in order, before normalisation.

    "Amlodipine 5 MG / Hydrochlorothiazide 12.5 MG / Olmesartan medoxomil 20 MG Oral Tablet"
    gives ["Amlodipine", "Hydrochlorothiazide", "Olmesartan medoxomil"]. Never raises: text
    that does not follow the convention yields whatever words precede the first strength.
    """
    if not isinstance(display, str):
        return []
    text = _BRACKET.sub(" ", display)
    names: list[str] = []
    for part in _SPACED_SLASH.split(text):
        pieces = [part] if any(ch.isdigit() for ch in part) else _WORD_SLASH.split(part)
        for piece in pieces:
            name = _component_name(piece)
            if name:
                names.append(name)
    return names


def _component_name(component: str) -> str:
    text = component.strip()
    while True:
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    words: list[str] = []
    for token in text.split():
        if token[0].isdigit() and not (token.isdigit() and words and len(words[-1]) == 1):
            break
        if token.lower() == "per":
            break
        words.append(token)
    while words and words[-1].lower().strip(",") in _DOSE_FORM_WORDS:
        words.pop()
    name = " ".join(words).split(",", 1)[0]
    return name.strip(" -.;:")


def _clean(name: str) -> str:
    text = name.replace("’", "'").replace("\u200b", "").lower()
    return " ".join(text.split()).strip(" -.,;:")


def _codeable_displays(concept: object) -> tuple[list[str], list[str]]:
    """(RxNorm displays, other texts) of a CodeableConcept, ignoring malformed parts."""
    if not isinstance(concept, Mapping):
        return [], []
    rxnorm: list[str] = []
    other: list[str] = []
    codings = concept.get("coding")
    for coding in codings if isinstance(codings, list) else []:
        if isinstance(coding, Mapping) and isinstance(coding.get("display"), str):
            (rxnorm if coding.get("system") == RXNORM else other).append(coding["display"])
    if isinstance(concept.get("text"), str):
        other.append(concept["text"])
    return rxnorm, other


def _concept_ingredients(vocabulary: DrugVocabulary, concept: object) -> set[str]:
    """RxNorm displays first; text and other displays only when RxNorm yields nothing."""
    rxnorm, other = _codeable_displays(concept)
    for group in (rxnorm, other):
        found: set[str] = set()
        for display in group:
            found |= vocabulary.ingredients_from_name(display)
        if found:
            return found
    return set()


def _medication_ingredients(
    vocabulary: DrugVocabulary,
    resource: Mapping[str, Any],
    referenced: Mapping[str, Mapping[str, Any]],
) -> set[str]:
    if not isinstance(resource, Mapping):
        return set()
    if resource.get("resourceType") == "Medication":
        return _medication_resource_ingredients(vocabulary, resource)
    found = _concept_ingredients(vocabulary, resource.get("medicationCodeableConcept"))
    if found:
        return found
    medication = _referenced_medication(resource, referenced)
    return _medication_resource_ingredients(vocabulary, medication) if medication else set()


def _medication_resource_ingredients(
    vocabulary: DrugVocabulary, medication: Mapping[str, Any]
) -> set[str]:
    found = _concept_ingredients(vocabulary, medication.get("code"))
    ingredients = medication.get("ingredient")
    for ingredient in ingredients if isinstance(ingredients, list) else []:
        if isinstance(ingredient, Mapping):
            found |= _concept_ingredients(vocabulary, ingredient.get("itemCodeableConcept"))
    return found


def _referenced_medication(
    resource: Mapping[str, Any], referenced: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The Medication a medicationReference points at: contained ("#id") or supplied."""
    reference = resource.get("medicationReference")
    target = reference.get("reference") if isinstance(reference, Mapping) else None
    if not isinstance(target, str):
        return None
    if target.startswith("#"):
        contained = resource.get("contained")
        for candidate in contained if isinstance(contained, list) else []:
            if isinstance(candidate, Mapping) and candidate.get("id") == target[1:]:
                return candidate
        return None
    return referenced.get(target)


def allergy_is_current(allergy: Mapping[str, Any]) -> bool:
    """False for allergies recorded as inactive/resolved or refuted/entered in error."""
    clinical = _status_codes(allergy.get("clinicalStatus"))
    verification = _status_codes(allergy.get("verificationStatus"))
    return not (clinical & _INACTIVE_CLINICAL or verification & _REFUTED)


def _status_codes(concept: object) -> set[str]:
    if not isinstance(concept, Mapping):
        return set()
    codings = concept.get("coding")
    return {
        c["code"]
        for c in (codings if isinstance(codings, list) else [])
        if isinstance(c, Mapping) and isinstance(c.get("code"), str)
    }


def _allergy_substances(vocabulary: DrugVocabulary, allergy: Mapping[str, Any]) -> set[str]:
    """Class keys and ingredient names an allergy is to: from codes, RxNorm names, text."""
    concepts: list[object] = [allergy.get("code")]
    reactions = allergy.get("reaction")
    for reaction in reactions if isinstance(reactions, list) else []:
        if isinstance(reaction, Mapping):
            concepts.append(reaction.get("substance"))
    found: set[str] = set()
    for concept in concepts:
        found |= _concept_substances(vocabulary, concept)
    return found


def _concept_substances(vocabulary: DrugVocabulary, concept: object) -> set[str]:
    if not isinstance(concept, Mapping):
        return set()
    found: set[str] = set()
    codings = concept.get("coding")
    for coding in codings if isinstance(codings, list) else []:
        if not isinstance(coding, Mapping):
            continue
        system, code = coding.get("system"), coding.get("code")
        coded = (
            vocabulary.allergy_codes.get((system, code))
            if isinstance(system, str) and isinstance(code, str)
            else None
        )
        if coded:
            found |= coded
        elif coding.get("system") == RXNORM and isinstance(coding.get("display"), str):
            found |= vocabulary.ingredients_from_name(coding["display"])
    if found:
        return found
    texts = [c.get("display") for c in codings if isinstance(c, Mapping)] if codings else []
    texts.append(concept.get("text"))
    for text in texts:
        if isinstance(text, str):
            found |= _substances_from_text(vocabulary, text)
    return found


def _substances_from_text(vocabulary: DrugVocabulary, text: str) -> set[str]:
    """ "Allergy to penicillin", "Sulfa drug allergy", "amoxicillin" -> class or ingredient.

    Free text only counts when it names a known class or a drug that some class lists, so a
    food or environmental allergy ("Allergy to mould") never turns into a drug.
    """
    cleaned = _clean(text)
    match = _ALLERGY_TEXT.match(cleaned)
    subject = next((g for g in match.groups() if g), cleaned) if match else cleaned
    subject = re.sub(r"\s*\((?:finding|substance|disorder)\)$", "", subject)
    class_key = vocabulary.class_for_name(subject)
    if class_key:
        return {class_key}
    return {name for name in vocabulary.resolve(subject) if vocabulary.drug_classes(name)}


# ---------------------------------------------------------------------------------------------
# Loading the reviewed YAML, with line numbers for every error


class _Located(dict):
    """A YAML mapping that remembers the line it started on, for error messages."""

    line: int = 0


class _LocatedList(list):
    line: int = 0


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Located:
    mapping = _Located()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise KnowledgeFileError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _LocatedList:
    sequence = _LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    sequence.line = node.start_mark.line + 1
    return sequence


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)
_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG,
    _construct_sequence,  # type: ignore[arg-type]
)


def load_knowledge_yaml(path: Path) -> Any:
    """Parse a reviewed knowledge file; any problem is a KnowledgeFileError naming file+line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowledgeFileError(f"{path.name}: cannot be read ({exc.__class__.__name__})") from exc
    try:
        data = yaml.load(text, Loader=_LineLoader)  # a SafeLoader: no arbitrary objects
    except KnowledgeFileError as exc:
        raise KnowledgeFileError(f"{path.name} {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "unknown line"
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise KnowledgeFileError(f"{path.name} {where}: {problem}") from None
    if not isinstance(data, dict):
        raise KnowledgeFileError(f"{path.name} line 1: expected a mapping at the top level")
    return data


def line_of(node: object, default: int = 1) -> int:
    return getattr(node, "line", default)


def require_mapping(node: object, where: str, source: str, parent: object) -> dict:
    if not isinstance(node, dict):
        raise KnowledgeFileError(f"{source} line {line_of(parent)}: {where} must be a mapping")
    return node


def require_text(node: object, where: str, source: str, parent: object) -> str:
    if not isinstance(node, str) or not node.strip():
        raise KnowledgeFileError(f"{source} line {line_of(parent)}: {where} must be text")
    return node.strip()


def require_names(node: object, where: str, source: str, parent: object) -> list[str]:
    if not isinstance(node, list) or not all(isinstance(x, str) and x.strip() for x in node):
        where_line = line_of(node, line_of(parent))
        raise KnowledgeFileError(f"{source} line {where_line}: {where} must be a list of names")
    return [x.strip() for x in node]


def require_severity(node: object, where: str, source: str, parent: object) -> str:
    if node not in SEVERITIES:
        raise KnowledgeFileError(
            f"{source} line {line_of(parent)}: {where} must be one of {', '.join(SEVERITIES)}"
        )
    return str(node)


def _vocabulary_from(data: dict, source: str) -> DrugVocabulary:
    synonyms = {
        _clean(k): _clean(require_text(v, f"synonym {k!r}", source, data.get("synonyms")))
        for k, v in require_mapping(data.get("synonyms", {}), "synonyms", source, data).items()
    }
    bare = DrugVocabulary(synonyms, {}, {}, (), {}, source)
    brands_node = require_mapping(data.get("brands", {}), "brands", source, data)
    brands = {
        _clean(brand): tuple(
            _normalised(bare, n, source, brands_node)
            for n in require_names(names, f"brand {brand!r}", source, brands_node)
        )
        for brand, names in brands_node.items()
    }
    classes_node = require_mapping(data.get("classes"), "classes", source, data)
    classes = {
        str(key): _drug_class(bare, str(key), node, source, classes_node)
        for key, node in classes_node.items()
    }
    rules = _cross_reactivity(data.get("allergy_cross_reactivity", []), classes, source, data)
    codes = _allergy_codes(bare, data.get("allergy_codes", []), classes, source, data)
    return DrugVocabulary(synonyms, brands, classes, rules, codes, source)


def _normalised(vocabulary: DrugVocabulary, name: str, source: str, parent: object) -> str:
    normalised = vocabulary.normalise(name)
    if normalised is None:
        raise KnowledgeFileError(f"{source} line {line_of(parent)}: {name!r} is not a drug name")
    return normalised


def _drug_class(
    vocabulary: DrugVocabulary, key: str, node: object, source: str, parent: object
) -> DrugClass:
    body = require_mapping(node, f"class {key!r}", source, parent)
    duplicate = body.get("duplicate_therapy")
    if not isinstance(duplicate, bool):
        raise KnowledgeFileError(
            f"{source} line {line_of(body)}: class {key!r}: duplicate_therapy must be true/false"
        )
    members = require_names(body.get("members"), f"class {key!r}: members", source, body)
    return DrugClass(
        key=key,
        display=require_text(body.get("display"), f"class {key!r}: display", source, body),
        members=frozenset(_normalised(vocabulary, m, source, body) for m in members),
        aliases=frozenset(
            _clean(a)
            for a in require_names(body.get("aliases", []), f"class {key!r}: aliases", source, body)
        ),
        duplicate_therapy=duplicate,
        onc_names=frozenset(
            onc_class_key(a)
            for a in require_names(
                body.get("onc_names", []), f"class {key!r}: onc_names", source, body
            )
        ),
    )


def onc_class_key(name: str) -> str:
    """ONC class names compared without case, stray spaces or line breaks."""
    return " ".join(name.replace("\n", " ").split()).lower()


def _cross_reactivity(
    node: object, classes: Mapping[str, DrugClass], source: str, parent: object
) -> tuple[CrossReactivity, ...]:
    if not isinstance(node, list):
        raise KnowledgeFileError(
            f"{source} line {line_of(parent)}: allergy_cross_reactivity must be a list"
        )
    rules = []
    for item in node:
        rule = require_mapping(item, "an allergy_cross_reactivity entry", source, node)
        for side in ("allergy", "order"):
            if rule.get(side) not in classes:
                raise KnowledgeFileError(
                    f"{source} line {line_of(rule)}: {side} {rule.get(side)!r} is not a class"
                )
        rules.append(
            CrossReactivity(
                allergy_class=rule["allergy"],
                order_class=rule["order"],
                severity=require_severity(rule.get("severity"), "severity", source, rule),
                note=" ".join(require_text(rule.get("note"), "note", source, rule).split()),
            )
        )
    return tuple(rules)


def _allergy_codes(
    vocabulary: DrugVocabulary,
    node: object,
    classes: Mapping[str, DrugClass],
    source: str,
    parent: object,
) -> dict[tuple[str, str], frozenset[str]]:
    if not isinstance(node, list):
        raise KnowledgeFileError(f"{source} line {line_of(parent)}: allergy_codes must be a list")
    codes: dict[tuple[str, str], frozenset[str]] = {}
    for item in node:
        entry = require_mapping(item, "an allergy_codes entry", source, node)
        system = require_text(entry.get("system"), "system", source, entry)
        code = require_text(entry.get("code"), "code (quoted text)", source, entry)
        names = require_names(entry.get("substances"), "substances", source, entry)
        codes[(system, code)] = frozenset(
            n if n in classes else _normalised(vocabulary, n, source, entry) for n in names
        )
    return codes


# ---------------------------------------------------------------------------------------------
# Module-level API over the shipped vocabulary


@functools.cache
def default_vocabulary() -> DrugVocabulary:
    """The shipped, reviewed vocabulary; loaded once per process."""
    return DrugVocabulary.load()


def medication_ingredients(
    resource: Mapping[str, Any],
    referenced: Mapping[str, Mapping[str, Any]] | None = None,
    vocabulary: DrugVocabulary | None = None,
) -> frozenset[str]:
    """Normalised ingredient names of a MedicationRequest/Statement/Dispense or Medication.

    Reads RxNorm codings first, then text, then a contained Medication ("#id") or one given in
    `referenced` under its reference ("Medication/123"). Empty when nothing can be read.
    """
    return (vocabulary or default_vocabulary()).medication_ingredients(resource, referenced)


def allergy_classes(
    allergy: Mapping[str, Any], vocabulary: DrugVocabulary | None = None
) -> frozenset[str]:
    """Class keys (e.g. "penicillins") and ingredient names an AllergyIntolerance is to.

    Empty for allergies that are inactive, resolved, refuted or entered in error, and for
    allergies to things that are not drugs careloop knows (foods, pollen).
    """
    return (vocabulary or default_vocabulary()).allergy_classes(allergy)


def drug_classes(ingredient: str, vocabulary: DrugVocabulary | None = None) -> frozenset[str]:
    """Class keys an ingredient belongs to, e.g. "simvastatin" -> {"statins"}."""
    return (vocabulary or default_vocabulary()).drug_classes(ingredient)


def ingredients_from_name(display: str, vocabulary: DrugVocabulary | None = None) -> frozenset[str]:
    """Normalised ingredients of one medication name such as an RxNorm display."""
    return (vocabulary or default_vocabulary()).ingredients_from_name(display)


def normalise_ingredient(name: str, vocabulary: DrugVocabulary | None = None) -> str | None:
    return (vocabulary or default_vocabulary()).normalise(name)
