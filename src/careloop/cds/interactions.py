"""Drug-drug interactions from the ONC high-priority and non-interruptive lists.

The lists (Phansalkar S, et al. JAMIA 2012;19(5):735-743 and JAMIA 2013;20(3):489-493) come as
DrugBank-mapped drug pairs (`*_Mapped.csv`, `$`-separated) plus the published tables that group
the pairs by drug class (the high-priority `.xls`, the non-interruptive `_Formatted.csv`). The
pairs decide what fires; the tables only label a pair with its group and the two classes. Some
table rows name drugs the mapped file lacks (febuxostat with azathioprine, triptans with
moclobamide): those pairs are added from the table, without DrugBank ids.

The data is read at run time from a directory the deployment configures; nothing from it is
kept in this repository. Every name goes through the same normaliser as the orders
(`DrugVocabulary.normalise`), so DrugBank's "Rifampicin" meets RxNorm's "rifampin".
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xlrd

from careloop.cds.evidence import Citation
from careloop.cds.medications import (
    KNOWLEDGE_DIR,
    DrugVocabulary,
    KnowledgeFileError,
    line_of,
    load_knowledge_yaml,
    onc_class_key,
    require_mapping,
    require_names,
    require_text,
)

HIGH_PRIORITY = "ONC high-priority"
NON_INTERRUPTIVE = "ONC non-interruptive"
HIGH_PRIORITY_PAIRS = Path("ONC-High-Priority/ONC_High_Priority_Mapped.csv")
HIGH_PRIORITY_TABLE = Path("ONC-High-Priority/ONC High Priority List.xls")
HIGH_PRIORITY_SHEET = "Revised Table 2"
NON_INTERRUPTIVE_PAIRS = Path("ONC-Non-Interuptive/ONC_Non_Interuptive_Mapped.csv")
NON_INTERRUPTIVE_TABLE = Path("ONC-Non-Interuptive/ONC_Non_Interuptive_List_Mapped_Formatted.csv")
GUIDANCE_FILE = KNOWLEDGE_DIR / "interaction_guidance.yaml"
PHANSALKAR_2012 = Citation(
    "Phansalkar S, et al. High-priority drug-drug interactions for use in electronic health "
    "records. J Am Med Inform Assoc 2012;19(5):735-743",
    "https://doi.org/10.1136/amiajnl-2011-000612",
)
PHANSALKAR_2013 = Citation(
    "Phansalkar S, et al. Drug-drug interactions that should be non-interruptive in order to "
    "reduce alert fatigue in electronic health records. J Am Med Inform Assoc 2013;20(3):489-493",
    "https://doi.org/10.1136/amiajnl-2012-001089",
)
_DRUGBANK_ID = re.compile(r"^DB\d{5}$")
_TABLE_COLUMNS = 11  # the _Formatted.csv: group, object class/drug/id/2 urls, precipitant same


@dataclass(frozen=True)
class Interaction:
    drugs: tuple[str, str]  # normalised ingredient names, sorted
    list_name: str  # HIGH_PRIORITY or NON_INTERRUPTIVE
    severity: str  # "critical" (interruptive) or "info"
    group: str | None  # the list's group number, e.g. "25"
    classes: tuple[str | None, str | None]  # the list's class of drugs[0] and drugs[1]
    drugbank_ids: tuple[str | None, str | None]

    @property
    def key(self) -> str:
        return "+".join(self.drugs)

    def class_of(self, drug: str) -> str | None:
        return self.classes[self.drugs.index(drug)] if drug in self.drugs else None

    @property
    def citation(self) -> Citation:
        return PHANSALKAR_2012 if self.list_name == HIGH_PRIORITY else PHANSALKAR_2013


@dataclass(frozen=True)
class _Group:
    """One group of a class table: drugs on each side, with the class each was listed under."""

    group_id: str
    sides: tuple[dict[str, str | None], dict[str, str | None]]
    explicit: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())

    def label(self, a: str, b: str) -> tuple[str | None, str | None] | None:
        """Classes of a and b when this group pairs them (either way round), else None."""
        first, second = self.sides
        if a in first and b in second:
            return first[a], second[b]
        if b in first and a in second:
            return second[a], first[b]
        return None


@dataclass(frozen=True)
class InteractionIndex:
    """Interacting ingredient pairs; look-ups are dictionary hits on the sorted pair."""

    pairs: Mapping[tuple[str, str], Interaction]
    counts: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, ddi_dir: Path, vocabulary: DrugVocabulary) -> InteractionIndex:
        if not ddi_dir.is_dir():
            raise KnowledgeFileError(f"DDI directory {ddi_dir} does not exist")
        high_table = _high_priority_groups(ddi_dir / HIGH_PRIORITY_TABLE, vocabulary)
        high_groups = _expand(high_table, vocabulary)
        low_groups = _expand(
            _table_groups(ddi_dir / NON_INTERRUPTIVE_TABLE, vocabulary), vocabulary
        )
        low = _pairs_from_file(ddi_dir / NON_INTERRUPTIVE_PAIRS, vocabulary)
        high = _pairs_from_file(ddi_dir / HIGH_PRIORITY_PAIRS, vocabulary)
        pairs: dict[tuple[str, str], Interaction] = {}
        for key, ids in low.items():
            pairs[key] = _interaction(key, ids, NON_INTERRUPTIVE, "info", low_groups)
        for key, ids in high.items():
            pairs[key] = _interaction(key, ids, HIGH_PRIORITY, "critical", high_groups)
        added = _table_only_pairs(high_groups, high, _drugbank_ids(high, low))
        for key, ids in added.items():
            pairs[key] = _interaction(key, ids, HIGH_PRIORITY, "critical", high_groups)
        counts = {
            "high_priority": len(high),
            "non_interruptive": len(low),
            "table_only": len(added),
        }
        return cls(pairs, counts)

    def find(self, a: str, b: str) -> Interaction | None:
        return self.pairs.get(_pair(a, b))

    def between(self, first: Iterable[str], second: Iterable[str]) -> list[Interaction]:
        """Every interaction between an ingredient of `first` and one of `second`."""
        found = {
            hit.drugs: hit
            for a in first
            for b in second
            if a != b and (hit := self.find(a, b)) is not None
        }
        return [found[key] for key in sorted(found)]

    @property
    def drugs(self) -> frozenset[str]:
        return frozenset(drug for pair in self.pairs for drug in pair)


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def _interaction(
    key: tuple[str, str],
    ids: Mapping[str, str | None],
    list_name: str,
    severity: str,
    groups: list[_Group],
) -> Interaction:
    group_id, classes = _label(key, groups)
    return Interaction(
        drugs=key,
        list_name=list_name,
        severity=severity,
        group=group_id,
        classes=classes,
        drugbank_ids=(ids.get(key[0]), ids.get(key[1])),
    )


def _label(key: tuple[str, str], groups: list[_Group]) -> tuple[str | None, tuple]:
    """The first group listing both drugs by name, else the first matching through a class."""
    for explicit_only in (True, False):
        for group in groups:
            if explicit_only and not (
                (key[0] in group.explicit[0] and key[1] in group.explicit[1])
                or (key[1] in group.explicit[0] and key[0] in group.explicit[1])
            ):
                continue
            classes = group.label(*key)
            if classes is not None:
                return group.group_id, classes
    return None, (None, None)


# ---------------------------------------------------------------------------------------------
# The mapped pair files


def _pairs_from_file(
    path: Path, vocabulary: DrugVocabulary
) -> dict[tuple[str, str], dict[str, str | None]]:
    """{sorted pair: {drug: DrugBank id}} from a `$`-separated mapped file."""
    pairs: dict[tuple[str, str], dict[str, str | None]] = {}
    for row_number, row in _csv_rows(path, delimiter="$"):
        if len(row) == 5 and not row[4].strip():
            row = row[:4]
        if len(row) != 4:
            raise _row_error(path, row_number, f"expected 4 fields, found {len(row)}")
        first = _drug(path, row_number, row[0], row[1], vocabulary)
        second = _drug(path, row_number, row[2], row[3], vocabulary)
        if first[0] != second[0]:
            pairs.setdefault(_pair(first[0], second[0]), {}).update([first, second])
    if not pairs:
        raise KnowledgeFileError(f"{path.name}: no drug pairs found")
    return pairs


def _drug(
    path: Path, row_number: int, name: str, drugbank_id: str, vocabulary: DrugVocabulary
) -> tuple[str, str]:
    normalised = vocabulary.normalise(name)
    if normalised is None:
        raise _row_error(path, row_number, f"drug name {name.strip()!r} is empty or not a name")
    if not _DRUGBANK_ID.match(drugbank_id.strip()):
        raise _row_error(path, row_number, f"{drugbank_id.strip()!r} is not a DrugBank id")
    return normalised, drugbank_id.strip()


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank rows with their 1-based row numbers; read errors name the file."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for number, row in enumerate(csv.reader(handle, delimiter=delimiter), start=1):
                if any(cell.strip() for cell in row):
                    yield number, row
    except FileNotFoundError:
        raise KnowledgeFileError(f"{path.name}: missing from the DDI directory") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise KnowledgeFileError(
            f"{path.name}: cannot be read ({exc.__class__.__name__})"
        ) from None


def _row_error(path: Path, row_number: int, problem: str) -> KnowledgeFileError:
    return KnowledgeFileError(f"{path.name} row {row_number}: {problem}")


def _drugbank_ids(
    *sources: Mapping[tuple[str, str], Mapping[str, str | None]],
) -> dict[str, str | None]:
    return {drug: db for source in sources for ids in source.values() for drug, db in ids.items()}


# ---------------------------------------------------------------------------------------------
# The class tables


def _high_priority_groups(path: Path, vocabulary: DrugVocabulary) -> list[_Group]:
    """Groups of the high-priority table; blank cells continue the group and class above."""
    sheet = _sheet(path)
    groups: list[_Group] = []
    current: tuple[str, list[str | None], list[dict[str, str | None]]] | None = None
    for index in range(1, sheet.nrows):
        cells = [_cell_text(sheet.cell_value(index, col)) for col in range(min(5, sheet.ncols))]
        cells += [""] * (5 - len(cells))
        if cells[0]:
            current = (_group_number(path, index + 1, cells[0]), [None, None], [{}, {}])
            groups.append(_Group(current[0], (current[2][0], current[2][1])))
        if current is None:
            if any(cells):
                raise _row_error(path, index + 1, "a drug appears before the first group number")
            continue
        _add_cells(current[1], current[2], cells, vocabulary)
    if not groups:
        raise KnowledgeFileError(f"{path.name}: sheet {HIGH_PRIORITY_SHEET!r} has no groups")
    return groups


def _add_cells(
    classes: list[str | None],
    sides: list[dict[str, str | None]],
    cells: list[str],
    vocabulary: DrugVocabulary,
) -> None:
    for side, (class_col, drug_col) in enumerate(((1, 2), (3, 4))):
        if cells[class_col]:
            classes[side] = " ".join(cells[class_col].split())
        name = vocabulary.normalise(cells[drug_col]) if cells[drug_col] else None
        if name and vocabulary.class_for_name(name) is None:  # "NSAID" is a class, not a drug
            sides[side][name] = classes[side]
        elif classes[side] is not None:
            sides[side].setdefault(_CLASS_ONLY, classes[side])


_CLASS_ONLY = "\x00class"  # marks a side that names a class, for expansion through the vocabulary


def _sheet(path: Path) -> Any:
    try:
        book = xlrd.open_workbook(str(path))
    except FileNotFoundError:
        raise KnowledgeFileError(f"{path.name}: missing from the DDI directory") from None
    except (OSError, xlrd.XLRDError, ValueError) as exc:
        raise KnowledgeFileError(f"{path.name}: not a readable .xls file ({exc})") from None
    try:
        return book.sheet_by_name(HIGH_PRIORITY_SHEET)
    except xlrd.XLRDError:
        raise KnowledgeFileError(f"{path.name}: no sheet named {HIGH_PRIORITY_SHEET!r}") from None


def _cell_text(value: object) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    return str(value).strip()


def _group_number(path: Path, row_number: int, text: str) -> str:
    if not text.isdigit():
        raise _row_error(path, row_number, f"group number {text!r} is not a whole number")
    return text


def _table_groups(path: Path, vocabulary: DrugVocabulary) -> list[_Group]:
    """Groups of the non-interruptive `_Formatted.csv` (one drug pair per row)."""
    by_id: dict[str, tuple[dict[str, str | None], dict[str, str | None]]] = {}
    for row_number, row in _csv_rows(path, delimiter=","):
        if len(row) != _TABLE_COLUMNS:
            raise _row_error(
                path, row_number, f"expected {_TABLE_COLUMNS} fields, found {len(row)}"
            )
        group_id = _group_number(path, row_number, row[0].strip())
        sides = by_id.setdefault(group_id, ({}, {}))
        for side, (class_col, drug_col) in enumerate(((1, 2), (6, 7))):
            name = vocabulary.normalise(row[drug_col])
            label = " ".join(row[class_col].split()) or None
            if name is None:
                raise _row_error(path, row_number, f"drug name {row[drug_col]!r} is empty")
            sides[side][name] = label
            if label:
                sides[side].setdefault(_CLASS_ONLY, label)
    return [_Group(group_id, sides) for group_id, sides in by_id.items()]


def _expand(groups: list[_Group], vocabulary: DrugVocabulary) -> list[_Group]:
    """Note the drugs each group names, then let a side that names a class ("QT prolonging
    agents", listed without drugs) cover the members the reviewed vocabulary gives that class.
    The class members only label pairs from the mapped files; they never add pairs."""
    by_onc_name: dict[str, set[str]] = {}
    for drug_class in vocabulary.classes.values():
        for onc_name in drug_class.onc_names:
            by_onc_name.setdefault(onc_name, set()).update(drug_class.members)
    expanded = []
    for group in groups:
        explicit = tuple(frozenset(k for k in side if k != _CLASS_ONLY) for side in group.sides)
        sides = []
        for side in group.sides:
            widened = {k: v for k, v in side.items() if k != _CLASS_ONLY}
            for label in {v for v in side.values() if v}:
                for member in by_onc_name.get(onc_class_key(label), ()):
                    widened.setdefault(member, label)
            sides.append(widened)
        expanded.append(_Group(group.group_id, (sides[0], sides[1]), (explicit[0], explicit[1])))
    return expanded


def _table_only_pairs(
    groups: list[_Group],
    mapped: Mapping[tuple[str, str], object],
    ids: Mapping[str, str | None],
) -> dict[tuple[str, str], dict[str, str | None]]:
    """Pairs the high-priority table names explicitly but the mapped file lacks."""
    added: dict[tuple[str, str], dict[str, str | None]] = {}
    for group in groups:
        for a in group.explicit[0]:
            for b in group.explicit[1]:
                key = _pair(a, b)
                if a != b and key not in mapped:
                    added[key] = {a: ids.get(a), b: ids.get(b)}
    return added


# ---------------------------------------------------------------------------------------------
# Reviewed guidance per high-priority group


@dataclass(frozen=True)
class Guidance:
    sides: tuple[frozenset[str], frozenset[str]]  # ONC class names or drug names, per side
    risk: str  # a few words for a summary line, e.g. "myopathy and rhabdomyolysis"
    consequence: str
    management: str
    alternatives: tuple[str, ...]
    citations: tuple[Citation, ...]

    def matches(self, interaction: Interaction) -> bool:
        pairs = zip(interaction.drugs, interaction.classes, strict=True)
        first, second = (_side_keys(drug, label) for drug, label in pairs)
        a, b = self.sides
        return bool((a & first and b & second) or (a & second and b & first))


def _side_keys(drug: str, label: str | None) -> frozenset[str]:
    """What a guidance side may name: the drug, its class, or the class before " / "."""
    keys = {drug}
    if label:
        keys.add(onc_class_key(label))
        keys.add(onc_class_key(label.split("/")[0]))
    return frozenset(keys)


def load_guidance(path: Path = GUIDANCE_FILE) -> tuple[Guidance, ...]:
    data = load_knowledge_yaml(path)
    source = path.name
    entries = data.get("groups")
    if not isinstance(entries, list):
        raise KnowledgeFileError(f"{source} line {line_of(data)}: 'groups' must be a list")
    return tuple(_guidance(entry, source, entries) for entry in entries)


def _guidance(node: object, source: str, parent: object) -> Guidance:
    entry = require_mapping(node, "a groups entry", source, parent)
    sides = entry.get("classes")
    if not isinstance(sides, list) or len(sides) != 2:
        raise KnowledgeFileError(f"{source} line {line_of(entry)}: classes must name two sides")
    citations = entry.get("citations")
    if not isinstance(citations, list) or not citations:
        raise KnowledgeFileError(f"{source} line {line_of(entry)}: citations must be a list")
    return Guidance(
        sides=(_side(sides[0], source, entry), _side(sides[1], source, entry)),
        risk=_prose(require_text(entry.get("risk"), "risk", source, entry)),
        consequence=_prose(require_text(entry.get("consequence"), "consequence", source, entry)),
        management=_prose(require_text(entry.get("management"), "management", source, entry)),
        alternatives=tuple(
            require_names(entry.get("alternatives", []), "alternatives", source, entry)
        ),
        citations=tuple(_citation(c, source, citations) for c in citations),
    )


def _side(node: object, source: str, parent: object) -> frozenset[str]:
    """One side of a guidance key: a class or drug name, or a list of them."""
    names = [node] if isinstance(node, str) else node
    return frozenset(onc_class_key(n) for n in require_names(names, "classes", source, parent))


def _citation(node: object, source: str, parent: object) -> Citation:
    entry = require_mapping(node, "a citation", source, parent)
    url = entry.get("url")
    if url is not None and not (isinstance(url, str) and url.startswith("https://")):
        raise KnowledgeFileError(f"{source} line {line_of(entry)}: url must be an https:// link")
    return Citation(_prose(require_text(entry.get("title"), "title", source, entry)), url)


def _prose(text: str) -> str:
    return " ".join(text.split())


def guidance_for(interaction: Interaction, guidance: Iterable[Guidance]) -> Guidance | None:
    return next((g for g in guidance if g.matches(interaction)), None)
