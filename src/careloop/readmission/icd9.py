"""ICD-9-CM diagnosis codes as the readmission model and the LACE baseline read them: the
clinical chapter of a code, and the Charlson comorbidities its codes imply.

Codes arrive as text the way the source exports them ("250.01", "428", "V27", "E888"); a trailing
zero may have been lost ("250.4" for "250.40"), so conditions are matched by prefix on whole
digits: "428" matches "428" and "428.x", "250.4" matches "250.4" and "250.4x".
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

CHAPTERS = (
    "circulatory",
    "respiratory",
    "digestive",
    "diabetes",
    "injury",
    "musculoskeletal",
    "genitourinary",
    "neoplasm",
    "infectious",
    "endocrine_other",
    "mental",
    "nervous",
    "skin",
    "blood",
    "symptoms",
    "supplementary",
    "other",
    "missing",
)
# (first, last, chapter) over the numeric 3-digit part; symptom codes that belong to an organ
# system (785 circulatory, 786 respiratory, 787 digestive, 788 genitourinary) go with it, as in
# Strack et al.'s grouping.
_RANGES = (
    (1, 139, "infectious"),
    (140, 239, "neoplasm"),
    (240, 279, "endocrine_other"),
    (280, 289, "blood"),
    (290, 319, "mental"),
    (320, 389, "nervous"),
    (390, 459, "circulatory"),
    (460, 519, "respiratory"),
    (520, 579, "digestive"),
    (580, 629, "genitourinary"),
    (630, 679, "other"),  # pregnancy
    (680, 709, "skin"),
    (710, 739, "musculoskeletal"),
    (740, 759, "other"),  # congenital
    (760, 779, "other"),  # perinatal
    (785, 785, "circulatory"),
    (786, 786, "respiratory"),
    (787, 787, "digestive"),
    (788, 788, "genitourinary"),
    (780, 799, "symptoms"),
    (800, 999, "injury"),
)


def chapter(code: str) -> str:
    """The clinical chapter of an ICD-9 code; "missing" for none, "other" when unreadable."""
    code = code.strip().upper()
    if not code or code == "?":
        return "missing"
    if code[0] in "VE":
        return "supplementary" if code[0] == "V" else "injury"  # E codes: external causes
    head = code.split(".", 1)[0]
    if not head.isdigit():
        return "other"
    number = int(head)
    if number == 250:
        return "diabetes"
    for first, last, name in _RANGES:
        if first <= number <= last:
            return name
    return "other"


def _expand(spec: str) -> tuple[str, ...]:
    """'140-172' -> ('140', ..., '172'); '443.1-443.9' -> ('443.1', ..., '443.9'); else as is."""
    if "-" not in spec:
        return (spec,)
    first, last = spec.split("-")
    if "." in first:
        head, low = first.split(".")
        high = last.split(".")[1]
        return tuple(f"{head}.{digit}" for digit in range(int(low), int(high) + 1))
    width = len(first)
    return tuple(str(n).zfill(width) for n in range(int(first), int(last) + 1))


def _codes(*specs: str) -> tuple[str, ...]:
    return tuple(code for spec in specs for code in _expand(spec))


# Charlson comorbidities in Quan et al.'s ICD-9-CM coding (Med Care 2005), with Charlson's
# weights (J Chronic Dis 1987).
CHARLSON: dict[str, tuple[int, tuple[str, ...]]] = {
    "myocardial_infarction": (1, _codes("410", "412")),
    "heart_failure": (
        1,
        _codes("428", "398.91", "402.01", "402.11", "402.91", "404.01", "404.03", "404.11")
        + _codes("404.13", "404.91", "404.93", "425.4-425.9"),
    ),
    "peripheral_vascular": (
        1,
        _codes("440", "441", "443.1-443.9", "447.1", "557.1", "557.9", "V43.4", "093.0"),
    ),
    "cerebrovascular": (1, _codes("430-438", "362.34")),
    "dementia": (1, _codes("290", "294.1", "331.2")),
    "chronic_pulmonary": (1, _codes("490-505", "506.4", "508.1", "508.8", "416.8", "416.9")),
    "rheumatic": (1, _codes("710.0-710.4", "714.0-714.2", "714.8", "725")),
    "peptic_ulcer": (1, _codes("531-534")),
    "mild_liver": (
        1,
        _codes("570", "571", "070.22", "070.23", "070.32", "070.33", "070.44", "070.54")
        + _codes("070.6", "070.9", "573.3", "573.4", "573.8", "573.9", "V42.7"),
    ),
    "diabetes": (1, _codes("250.0-250.3", "250.8", "250.9")),
    "diabetes_complicated": (2, _codes("250.4-250.7")),
    "hemiplegia": (2, _codes("342", "343", "344.0-344.6", "344.9", "334.1")),
    "renal": (
        2,
        _codes("582", "583.0-583.7", "585", "586", "588.0", "V42.0", "V45.1", "V56")
        + _codes("403.01", "403.11", "403.91", "404.02", "404.03", "404.12", "404.13")
        + _codes("404.92", "404.93"),
    ),
    "malignancy": (2, _codes("140-172", "174-195", "200-208", "238.6")),
    "severe_liver": (3, _codes("456.0-456.2", "572.2-572.8")),
    "metastatic": (6, _codes("196-199")),
    "hiv_aids": (6, _codes("042-044")),
}
# A milder condition is not counted when its severe form is present.
_SUPERSEDED_BY = {
    "diabetes": "diabetes_complicated",
    "mild_liver": "severe_liver",
    "malignancy": "metastatic",
}


def _matches(code: str, prefix: str) -> bool:
    if "." in prefix:
        return code.startswith(prefix)
    return code == prefix or code.startswith(prefix + ".")


def _normalise(code: str) -> str:
    code = code.strip().upper()
    if code[:1].isdigit():
        # "250" and "250.0" both mean uncomplicated diabetes; keep the text as exported
        head, _, tail = code.partition(".")
        return head.zfill(3) + ("." + tail if tail else "")
    return code


@lru_cache(maxsize=4096)
def _conditions_of(code: str) -> frozenset[str]:
    """The Charlson conditions one code implies (cached: a file repeats a few hundred codes)."""
    if not code or code.strip() in {"", "?"}:
        return frozenset()
    normal = _normalise(code)
    if normal == "250":  # diabetes without a stated complication
        return frozenset({"diabetes"})
    return frozenset(
        condition
        for condition, (_, prefixes) in CHARLSON.items()
        if any(_matches(normal, prefix) for prefix in prefixes)
    )


def comorbidities(codes: Iterable[str]) -> set[str]:
    """The Charlson conditions the codes imply (hierarchy applied)."""
    found: set[str] = set()
    for code in codes:
        found |= _conditions_of(code)
    return {c for c in found if _SUPERSEDED_BY.get(c) not in found}


def charlson_index(codes: Iterable[str]) -> int:
    """Charlson comorbidity index of the codes (weights summed over the conditions present)."""
    return sum(CHARLSON[condition][0] for condition in comorbidities(codes))
