"""SMART scopes: v2 and v1 syntax, what a set of scopes allows, and hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from careloop.identity.scopes import Scope, ScopeSet, parse_scope


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("system/Observation.rs", Scope("system", "Observation", "rs")),
        ("user/*.cruds", Scope("user", "*", "cruds")),
        ("patient/Observation.read", Scope("patient", "Observation", "rs")),
        ("patient/*.write", Scope("patient", "*", "cud")),
        ("user/Patient.*", Scope("user", "Patient", "cruds")),
        ("system/Condition.c", Scope("system", "Condition", "c")),
        ("system/Encounter.ds", Scope("system", "Encounter", "ds")),
        (
            "patient/Observation.rs?category=laboratory",
            Scope("patient", "Observation", "rs", (("category", "laboratory"),)),
        ),
        (
            "system/Observation.s?category=http://terminology.hl7.org/cs|vital-signs&status=final",
            Scope(
                "system",
                "Observation",
                "s",
                (("category", "http://terminology.hl7.org/cs|vital-signs"), ("status", "final")),
            ),
        ),
    ],
)
def test_valid_scopes_parse_to_their_meaning(text, expected):
    assert parse_scope(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "1 to 512"),
        ("openid", "starts with patient/"),
        ("launch/patient", "starts with patient/"),
        ("clinic/Observation.rs", "starts with patient/"),
        ("system/Observation", "resource type"),
        ("system/observation.rs", "resource type"),
        ("system/.rs", "resource type"),
        ("system/Observation.", "permissions"),
        ("system/Observation.sr", "in that order"),
        ("system/Observation.rr", "in that order"),
        ("system/Observation.x", "in that order"),
        ("system/Observation.READ", "in that order"),
        ("system/Observation.rs system/Patient.rs", "spaces"),
        ("patient/Observation.read?category=laboratory", "v1 scope"),
        ("system/Observation.rs?category", "name=value"),
        ("system/Observation.rs?=laboratory", "name=value"),
        ("system/Observation.rs?category=a&", "name=value"),
        ("system/Observation.rs?category=<script>", "name=value"),
        ("system/" + "A" * 600 + ".rs", "1 to 512"),
    ],
)
def test_invalid_scopes_are_refused_with_a_reason(text, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_scope(text)


def test_query_values_are_kept_as_written_so_the_canonical_form_round_trips():
    scope = parse_scope("system/Observation.r?code=a%26b")
    assert scope.query == (("code", "a%26b"),)
    assert parse_scope(str(scope)) == scope


def test_errors_do_not_repeat_the_scope_text():
    # a query may carry an identifier; the message must not echo it
    with pytest.raises(ValueError) as caught:
        parse_scope("patient/Observation.read?patient=mrn-443-21-0987")
    assert "443-21" not in str(caught.value)


def test_a_scope_set_allows_only_what_its_scopes_name():
    scopes = ScopeSet.parse("system/Observation.rs system/Patient.read patient/*.c")

    assert scopes.allows("Observation", "r") and scopes.allows("Observation", "s")
    assert not scopes.allows("Observation", "u") and not scopes.allows("Observation", "d")
    assert scopes.allows("Patient", "s")
    assert not scopes.allows("Condition", "r")
    assert scopes.allows("Condition", "c")  # patient/*.c
    assert not scopes.allows("Condition", "c", context="system")
    assert scopes.allows("Observation", "r", context="system")
    assert not scopes.allows("Observation", "r", context="patient")


def test_wildcard_type_and_v1_star_allow_everything():
    scopes = ScopeSet.parse(["user/*.*"])
    for resource_type in ("Observation", "Patient", "MedicationRequest"):
        assert all(scopes.allows(resource_type, i) for i in "cruds")


def test_an_unknown_interaction_is_an_error_not_a_no():
    with pytest.raises(ValueError, match="one of c, r, u, d, s"):
        ScopeSet.parse("system/*.cruds").allows("Observation", "read")


def test_a_restricted_scope_grants_nothing_through_allows_but_reports_its_query():
    scopes = ScopeSet.parse("patient/Observation.rs?category=laboratory")
    assert not scopes.allows("Observation", "r")
    assert scopes.restrictions("Observation", "r") == [(("category", "laboratory"),)]
    assert scopes.restrictions("Observation", "c") == []
    assert scopes.restrictions("Condition", "r") == []


def test_covers_compares_context_type_permissions_and_query():
    registered = ScopeSet.parse("system/*.rs system/Observation.cruds")
    assert registered.covers(parse_scope("system/Patient.r"))
    assert registered.covers(parse_scope("system/Observation.cud"))
    assert registered.covers(parse_scope("system/Observation.read"))
    assert not registered.covers(parse_scope("system/Patient.c"))
    assert not registered.covers(parse_scope("patient/Observation.r"))  # another context
    restricted = ScopeSet.parse("system/Observation.rs?category=laboratory")
    assert restricted.covers(parse_scope("system/Observation.r?category=laboratory"))
    assert not restricted.covers(parse_scope("system/Observation.r"))
    assert not restricted.covers(parse_scope("system/Observation.r?category=vital-signs"))


def test_a_set_names_the_bad_scope_by_position_and_drops_duplicates():
    with pytest.raises(ValueError, match="scope 2:"):
        ScopeSet.parse("system/Observation.rs openid")
    assert len(ScopeSet.parse("system/Observation.read system/Observation.rs")) == 1


def test_a_set_refuses_non_text_entries():
    with pytest.raises(ValueError, match="text"):
        ScopeSet.parse([b"system/Observation.rs"])  # type: ignore[list-item]


SCOPE_ALPHABET = "patienusrym/*.?=&:|%crudsObvCRUD OW read write-_" + "\t\n\x00é"


@given(st.text())
def test_arbitrary_text_parses_or_raises_value_error(text):
    try:
        scope = parse_scope(text)
    except ValueError:
        return
    assert parse_scope(str(scope)) == scope


@given(st.text(alphabet=SCOPE_ALPHABET, max_size=60))
def test_near_scope_text_parses_or_raises_value_error(text):
    try:
        scopes = ScopeSet.parse(text)
    except ValueError:
        return
    for scope in scopes:
        assert scope.context in ("patient", "user", "system")
        assert scope.permissions and set(scope.permissions) <= set("cruds")


_v2_scopes = st.builds(
    Scope,
    st.sampled_from(["patient", "user", "system"]),
    st.sampled_from(["*", "Observation", "Patient", "MedicationRequest"]),
    st.sets(st.sampled_from("cruds"), min_size=1).map(
        lambda letters: "".join(c for c in "cruds" if c in letters)
    ),
    st.lists(
        st.tuples(
            st.sampled_from(["category", "code", "status"]),
            st.from_regex(r"[a-z0-9|:/.-]{1,20}", fullmatch=True),
        ),
        max_size=2,
    ).map(tuple),
)


@given(_v2_scopes)
def test_canonical_text_round_trips_and_a_scope_covers_itself(scope):
    assert parse_scope(str(scope)) == scope
    assert scope.covers(scope)
    assert all(scope.grants(scope.resource_type, i) == (i in scope.permissions) for i in "cruds")
