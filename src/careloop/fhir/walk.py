"""One pass over a resource that finds the elements ingest looks at more closely.

References (dicts with a string `reference`) are rewritten and checked; codings (dicts with a
string `system` and a `code`) are checked for format. Finding both in one walk matters: a Synthea
claim has hundreds of nested elements, and each extra walk was a measurable share of ingest.
Locations stay tuples of keys and indexes and become text only when a message needs one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Location = tuple[str | int, ...]


@dataclass(slots=True)
class FoundElements:
    references: list[tuple[dict, Location]] = field(default_factory=list)
    codings: list[tuple[dict, Location]] = field(default_factory=list)


def scan(resource: dict) -> FoundElements:
    found = FoundElements()
    _visit(resource, (), found)
    return found


def _visit(node: dict, location: Location, found: FoundElements) -> None:
    if type(node.get("reference")) is str:
        found.references.append((node, location))
    if type(node.get("system")) is str and "code" in node:
        found.codings.append((node, location))
    for key, value in node.items():
        kind = type(value)
        if kind is dict:
            _visit(value, (*location, key), found)
        elif kind is list:
            for index, item in enumerate(value):
                if type(item) is dict:
                    _visit(item, (*location, key, index), found)


def path_text(resource_type: str, location: Iterable[str | int], leaf: str | None = None) -> str:
    """`Observation.component[0].code.coding[1]` style text for a location."""
    text = resource_type
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return f"{text}.{leaf}" if leaf else text
