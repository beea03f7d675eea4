"""A fast, strict check of FHIR R4 structure, compiled from fhir.resources' own model definitions.

fhir.resources validates through layers of Python validators, about 700 µs for an average Synthea
resource: the cost that bounds ingest. This module reads the same models once (element names,
cardinality, types, required elements, choice groups) into plain lookup tables and checks a
resource dict against them in one tight walk, with FHIR JSON's strict rules for primitives.

It is a fast path, not a second authority: `conforms` returns True only when a resource is
certainly valid. Anything it does not accept, including valid shapes it does not model (an
extension on a repeated primitive, a leap second, an unusual primitive), goes to fhir.resources for
the verdict and the error message. It is stricter than fhir.resources (which accepts "5" for an
integer or an empty array) and never more lenient: tests check that on real and generated data.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache

from fhir.resources.R4B import get_fhir_model_class

INT32 = (-(2**31), 2**31 - 1)

_CODE = re.compile(r"^[^\s]+(\s[^\s]+)*$")
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # the `id` datatype
_URI = re.compile(r"^\S+$")
_OID = re.compile(r"^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$")
_UUID = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_BASE64 = re.compile(r"^(\s*([0-9a-zA-Z+/=]){4}\s*)+$")
_DATE = re.compile(r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$")
_DATETIME = re.compile(
    r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01])"
    r"(T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00)))?)?)?$"
)
_INSTANT = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00))$"
)
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?$")


def _is_text(value: object) -> bool:
    return type(value) is str and value.strip() != ""


def _matches(pattern: re.Pattern[str]) -> Callable[[object], bool]:
    return lambda value: type(value) is str and pattern.match(value) is not None


def _calendar_date(value: object) -> bool:
    if type(value) is not str or not _DATE.match(value):
        return False
    return len(value) < 10 or _parses(date.fromisoformat, value)


def _date_time(value: object) -> bool:
    if type(value) is not str or not _DATETIME.match(value):
        return False
    if len(value) <= 10:
        return len(value) < 10 or _parses(date.fromisoformat, value)
    return _parses(datetime.fromisoformat, value.replace("Z", "+00:00"))


def _instant(value: object) -> bool:
    return _date_time(value) and _INSTANT.match(value) is not None  # type: ignore[arg-type]


def _parses(parse: Callable[[str], object], value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


def _never(_value: object) -> bool:
    return False


def _integer(low: int, high: int) -> Callable[[object], bool]:
    return lambda value: type(value) is int and low <= value <= high


def _decimal(value: object) -> bool:
    return (type(value) is int and INT32[0] <= value <= INT32[1] * 1000) or (
        type(value) is float and value == value and abs(value) != float("inf")
    )


# FHIR JSON's rules per primitive type, keyed by fhir_core's `__visit_name__`.
PRIMITIVE_CHECKS: dict[str, Callable[[object], bool]] = {
    "string": _is_text,
    "markdown": _is_text,
    "xhtml": lambda value: type(value) is str and value.lstrip().startswith("<div"),
    "code": _matches(_CODE),
    "id": _matches(FHIR_ID),
    "uri": _matches(_URI),
    "url": _matches(_URI),
    "canonical": _matches(_URI),
    "oid": _matches(_OID),
    "uuid": _matches(_UUID),
    "base64Binary": _matches(_BASE64),
    "boolean": lambda value: type(value) is bool,
    "integer": _integer(*INT32),
    "unsignedInt": _integer(0, INT32[1]),
    "positiveInt": _integer(1, INT32[1]),
    "decimal": _decimal,
    "date": _calendar_date,
    "dateTime": _date_time,
    "instant": _instant,
    "time": _matches(_TIME),
}


@dataclass(frozen=True, slots=True)
class ElementRule:
    is_list: bool
    primitive: Callable[[object], bool] | None  # set for primitives
    model: type | None  # set for complex types; None with primitive None means any resource
    required: bool
    choice_group: str | None


@dataclass(frozen=True, slots=True)
class ModelRules:
    elements: dict[str, ElementRule]  # by JSON key
    required: tuple[str, ...]
    choice_groups: dict[str, tuple[tuple[str, ...], bool]]  # group -> (keys, one required)


class _NotModelled(Exception):
    """A field shape this compiler does not know: such a model is always left to fhir.resources."""


def conforms(resource: dict) -> bool:
    """True only if the resource is certainly valid FHIR R4 structure."""
    resource_type = resource.get("resourceType")
    if type(resource_type) is not str:
        return False
    model = _resource_model(resource_type)
    return model is not None and _conforms_to(resource, model, is_resource=True)


@cache
def model_class(resource_type: str) -> type | None:
    """fhir.resources' model for a resource type name, or None for a name that is not one."""
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None


def _resource_model(resource_type: str) -> type | None:
    model = None if resource_type == "Bundle" else model_class(resource_type)
    return model if model is not None and _rules_for(model) is not None else None


def _conforms_to(node: object, model: type, is_resource: bool = False) -> bool:
    if type(node) is not dict or not node:
        return False
    rules = _rules_for(model)
    if rules is None:
        return False
    elements = rules.elements
    for key, value in node.items():
        if key == "resourceType" and is_resource:
            continue
        rule = elements.get(key)
        if rule is None or not _value_conforms(value, rule):
            return False
    for key in rules.required:
        if key not in node:
            return False
    for keys, one_required in rules.choice_groups.values():
        present = sum(1 for key in keys if key in node)
        if present > 1 or (one_required and present == 0):
            return False
    return True


def _value_conforms(value: object, rule: ElementRule) -> bool:
    if rule.is_list:
        if type(value) is not list or not value:
            return False
        return all(_single_conforms(item, rule) for item in value)
    return _single_conforms(value, rule)


def _single_conforms(value: object, rule: ElementRule) -> bool:
    if rule.primitive is not None:
        return rule.primitive(value)
    if rule.model is not None:
        return _conforms_to(value, rule.model)
    return type(value) is dict and conforms(value)  # a contained resource


@cache
def _rules_for(model: type) -> ModelRules | None:
    try:
        return _compile(model)
    except _NotModelled:
        return None


def _compile(model: type) -> ModelRules:
    elements: dict[str, ElementRule] = {}
    groups: dict[str, tuple[list[str], bool]] = {}
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        if name == "fhir_comments":
            continue
        key = field.alias or name
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        is_list, primitive, target = _field_shape(field.annotation)
        group = extra.get("one_of_many")
        required = bool(field.is_required() or extra.get("element_required"))
        elements[key] = ElementRule(is_list, primitive, target, required, group)
        if group:
            keys, one_required = groups.get(group, ([], False))
            groups[group] = (keys + [key], one_required or bool(extra.get("one_of_many_required")))
    required = tuple(k for k, rule in elements.items() if rule.required and not rule.choice_group)
    return ModelRules(
        elements=elements,
        required=required,
        choice_groups={g: (tuple(keys), req) for g, (keys, req) in groups.items()},
    )


def _field_shape(annotation: object) -> tuple[bool, Callable[[object], bool] | None, type | None]:
    """(is a list, primitive check, complex model) from a pydantic field annotation."""
    inner = _without_none(annotation)
    is_list = typing.get_origin(inner) in (list, typing.List)  # noqa: UP006
    if is_list:
        inner = _without_none(typing.get_args(inner)[0])
    if typing.get_origin(inner) is typing.Annotated:
        for marker in typing.get_args(inner)[1:]:
            check = PRIMITIVE_CHECKS.get(getattr(type(marker), "__visit_name__", ""))
            if check is not None:
                return is_list, check, None
        # a primitive we do not model (Extension.valueUuid is a python UUID): never fast-accepted
        return is_list, _never, None
    if isinstance(inner, type) and hasattr(inner, "get_model_klass"):
        if inner.__name__ == "ResourceType":
            return is_list, None, None
        return is_list, None, inner.get_model_klass()
    if inner is bool:
        return is_list, PRIMITIVE_CHECKS["boolean"], None
    raise _NotModelled(str(annotation))


def _without_none(annotation: object) -> object:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(options) != 1:
            raise _NotModelled(str(annotation))
        return options[0]
    return annotation
