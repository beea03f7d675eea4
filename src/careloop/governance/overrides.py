"""Governance limits (the gate's tolerances, drift's thresholds) overridden from a file: a YAML or
JSON mapping of the limits' own names, so a hospital's AI committee keeps its choices in one
reviewed file instead of on command lines."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

Limits = TypeVar("Limits")


def load_overrides(cls: type[Limits], path: Path, what: str) -> Limits:
    """`cls()`'s defaults overridden by the mapping in `path`; unknown names, values that are
    not numbers >= 0, and unreadable files are errors naming the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {what}s {path}: {exc.strerror}") from None
    values = _parse_mapping(text, path, what)
    known = [item.name for item in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(
            f"{path}: unknown {what}(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
    for name, value in values.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{path}: {what} {name} must be a number >= 0, not {value!r}")
    try:
        return replace(cls(), **values)  # type: ignore[type-var]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def _parse_mapping(text: str, path: Path, what: str) -> dict[str, Any]:
    import yaml  # JSON is YAML, so one parser reads both

    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is neither YAML nor JSON: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of {what} names to numbers")
    return {str(key): value for key, value in values.items()}
