"""SMART on FHIR scopes: App Launch v2 (`system/Observation.rs`) and v1 (`patient/*.read`).

A scope is `<context>/<resource type or *>.<permissions>[?<query>]`:
- context: `patient` (one patient's compartment), `user` (what the user may see) or `system`
  (a backend client acting on its own behalf);
- permissions: v2 letters in the order c, r, u, d, s (create, read, update, delete, search),
  any non-empty subsequence of "cruds"; or v1 `read` (= rs), `write` (= cud) or `*` (= cruds).
- query (v2 only): `param=value` pairs joined by `&`, e.g. `?category=laboratory`. It is parsed
  and kept, but careloop cannot yet enforce a search restriction on every interaction, so a
  restricted scope grants nothing through `ScopeSet.allows`: refusing is the safe reading. A
  caller able to apply the restriction asks `ScopeSet.restrictions` for it.

Anything else is a ValueError whose message says what is wrong without repeating the text (a
query may carry an identifier).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

CONTEXTS = ("patient", "user", "system")
INTERACTIONS = "cruds"
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
MAX_SCOPE_LENGTH = 512

_TYPE = re.compile(r"^(\*|[A-Z][A-Za-z]{0,63})$")
_V2_PERMISSIONS = re.compile(r"^c?r?u?d?s?$")
_QUERY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
_QUERY_VALUE = re.compile(r"^[A-Za-z0-9_.:|%/+-]{1,256}$")

Query = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scope:
    context: str  # patient, user or system
    resource_type: str  # a FHIR resource type, or "*" for all
    permissions: str  # a subsequence of "cruds"
    query: Query = ()

    def __str__(self) -> str:
        """The canonical v2 form."""
        text = f"{self.context}/{self.resource_type}.{self.permissions}"
        if self.query:
            text += "?" + "&".join(f"{name}={value}" for name, value in self.query)
        return text

    def grants(self, resource_type: str, interaction: str) -> bool:
        """Whether this scope names the type and interaction, ignoring any query."""
        _check_interaction(interaction)
        type_ok = self.resource_type in ("*", resource_type)
        return type_ok and interaction in self.permissions

    def covers(self, other: Scope) -> bool:
        """Whether everything `other` grants, this scope grants too."""
        return (
            self.context == other.context
            and self.resource_type in ("*", other.resource_type)
            and set(other.permissions) <= set(self.permissions)
            and (not self.query or self.query == other.query)
        )


def parse_scope(text: str) -> Scope:
    """Parse one SMART resource scope; raises ValueError saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError("a scope must be text")
    if not text or len(text) > MAX_SCOPE_LENGTH:
        raise ValueError(f"a scope must be 1 to {MAX_SCOPE_LENGTH} characters")
    if any(ch.isspace() for ch in text):
        raise ValueError("a scope must not contain spaces; separate scopes with a space")
    body, has_query, query_text = text.partition("?")
    context, slash, rest = body.partition("/")
    if not slash or context not in CONTEXTS:
        raise ValueError("a scope starts with patient/, user/ or system/")
    resource_type, dot, permissions = rest.rpartition(".")
    if not dot or not _TYPE.fullmatch(resource_type):
        raise ValueError("a scope names a resource type (or *) followed by '.' and permissions")
    if permissions in V1_PERMISSIONS:
        if has_query:
            raise ValueError("a v1 scope (.read, .write, .*) cannot carry a query")
        return Scope(context, resource_type, V1_PERMISSIONS[permissions])
    if not permissions or not _V2_PERMISSIONS.fullmatch(permissions):
        raise ValueError(
            "scope permissions are letters of c, r, u, d, s in that order, or read, write, *"
        )
    query = _parse_query(query_text) if has_query else ()
    return Scope(context, resource_type, permissions, query)


def _parse_query(text: str) -> Query:
    pairs = []
    for part in text.split("&"):
        name, equals, value = part.partition("=")
        if not equals or not _QUERY_NAME.fullmatch(name) or not _QUERY_VALUE.fullmatch(value):
            raise ValueError("a scope query is name=value pairs joined by '&'")
        pairs.append((name, value))  # kept as written (percent-encoding too): comparable
    return tuple(pairs)


def _check_interaction(interaction: str) -> None:
    if len(interaction) != 1 or interaction not in INTERACTIONS:
        raise ValueError("an interaction is one of c, r, u, d, s")


@dataclass(frozen=True)
class ScopeSet:
    scopes: tuple[Scope, ...] = ()

    @classmethod
    def parse(cls, scopes: str | Iterable[str]) -> ScopeSet:
        """From a space-separated string (as OAuth sends it) or a list of scope strings."""
        texts = scopes.split() if isinstance(scopes, str) else list(scopes)
        parsed: list[Scope] = []
        for index, text in enumerate(texts, start=1):
            try:
                scope = parse_scope(text)
            except ValueError as exc:
                raise ValueError(f"scope {index}: {exc}") from None
            if scope not in parsed:
                parsed.append(scope)
        return cls(tuple(parsed))

    def __iter__(self) -> Iterator[Scope]:
        return iter(self.scopes)

    def __len__(self) -> int:
        return len(self.scopes)

    def __str__(self) -> str:
        return " ".join(str(scope) for scope in self.scopes)

    def allows(self, resource_type: str, interaction: str, *, context: str | None = None) -> bool:
        """Whether an unrestricted scope grants `interaction` (c, r, u, d or s) on the type.

        `context` limits the answer to scopes of that context (e.g. "patient").
        """
        _check_interaction(interaction)
        return any(
            not scope.query and scope.grants(resource_type, interaction)
            for scope in self._in_context(context)
        )

    def restrictions(
        self, resource_type: str, interaction: str, *, context: str | None = None
    ) -> list[Query]:
        """The queries of the restricted scopes that would grant the interaction."""
        _check_interaction(interaction)
        return [
            scope.query
            for scope in self._in_context(context)
            if scope.query and scope.grants(resource_type, interaction)
        ]

    def covers(self, scope: Scope) -> bool:
        return any(mine.covers(scope) for mine in self.scopes)

    def _in_context(self, context: str | None) -> Iterator[Scope]:
        return (s for s in self.scopes if context is None or s.context == context)
