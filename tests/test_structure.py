"""The compiled structure check: fast on real data, and never more lenient than fhir.resources."""

from __future__ import annotations

import copy
import tarfile

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop.fhir.structure import conforms
from careloop.ingest.pipeline import prepare_document
from careloop.synth import generate_population
from samples import transaction_bundle

ODD_VALUES = [
    None,
    "",
    " ",
    "x",
    "a b",
    " a",
    "5",
    "true",
    "2020",
    "2020-13-01",
    "2020-02-30",
    "2020-01-01T10:00:00",
    "2020-01-01T25:00:00Z",
    "2020-01-01T10:00:60Z",
    "12:00",
    "24:00:00",
    "urn:uuid:x",
    "http://x y",
    "<p>x</p>",
    0,
    -1,
    1.5,
    2**40,
    True,
    [],
    {},
    [None],
    [{}],
    {"a": 1},
]


def library_accepts(resource: dict) -> bool:
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except Exception:
        return False
    return True


def _locations(node: object, path: tuple = ()) -> list[tuple]:
    found = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else []
    )
    for key, value in items:
        found.append((*path, key))
        found.extend(_locations(value, (*path, key)))
    return found


@pytest.fixture(scope="module")
def real_resources() -> list[dict]:
    resources = [e["resource"] for e in transaction_bundle(4)["entry"]]
    return resources + list(generate_population(12, seed=3))


def test_synthetic_and_sample_resources_take_the_fast_path(real_resources):
    assert all(conforms(resource) for resource in real_resources)


def test_real_synthea_resources_take_the_fast_path(synthea_archive):
    with tarfile.open(synthea_archive, "r:gz") as archive:
        member = next(m for m in archive if m.isfile() and "Information" not in m.name)
        bundle = orjson.loads(archive.extractfile(member).read())
    resources = [entry["resource"] for entry in bundle["entry"]]
    assert len(resources) > 50
    assert [r["resourceType"] for r in resources if not conforms(r)] == []


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_never_accepts_what_fhir_resources_rejects(real_resources, data):
    """Corrupt one place of a real resource: a fast accept must be a library accept too."""
    resource = copy.deepcopy(data.draw(st.sampled_from(real_resources)))
    location = data.draw(st.sampled_from(_locations(resource)))
    parent = resource
    for key in location[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "wrap", "rename"]))
    if action == "replace":
        parent[location[-1]] = data.draw(st.sampled_from(ODD_VALUES))
    elif action == "delete":
        del parent[location[-1]]
    elif action == "wrap":
        parent[location[-1]] = [parent[location[-1]]]
    elif isinstance(location[-1], str):
        parent[location[-1] + "x"] = parent.pop(location[-1])
    if resource.get("resourceType") and conforms(resource):
        assert library_accepts(resource), orjson.dumps(resource)[:500]


@pytest.mark.parametrize(
    ("element", "value"),
    [("valueInteger", "5"), ("valueBoolean", "true"), ("category", [])],
)
def test_stricter_shapes_fall_back_to_fhir_resources_for_the_verdict(element, value):
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    observation[element] = value
    assert not conforms(observation)
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": observation}]}
    fast = prepare_document(orjson.dumps(bundle), "b.json", "fast")
    library = prepare_document(orjson.dumps(bundle), "b.json", "library")
    assert [str(p) for p in fast.problems] == [str(p) for p in library.problems]
    assert library_accepts(observation) == (not fast.problems)
