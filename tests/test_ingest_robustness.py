"""Hostile and generated input: the parser never crashes, and a killed ingest leaves no trace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careloop.ingest import IngestOptions, Ingestor
from careloop.ingest.errors import IngestProblem
from careloop.ingest.pipeline import prepare_document, prepare_lines
from careloop.store.repository import ResourceStore
from samples import PATIENT_ID, heart_rate, ndjson, patient, transaction_bundle

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_either_rejected_with_a_located_problem_or_parsed(data):
    prepared = prepare_document(data, "fuzz.json", "fast")
    for problem in prepared.problems:
        assert isinstance(problem, IngestProblem)
        assert str(problem).startswith("fuzz.json")


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_documents_never_crash_the_parser(document):
    # the standard library writes integers of any size, which a FHIR parser must refuse cleanly
    prepared = prepare_document(json.dumps(document).encode(), "fuzz.json", "fast")
    for problem in prepared.problems:
        assert str(problem).startswith("fuzz.json") and problem.message
    if not prepared.problems:  # accepted: every entry became a record to write
        assert len(prepared.records) == len(prepared.keys)
        assert not isinstance(document, dict) or document.get("resourceType")


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "resourceType",
                "id",
                "status",
                "code",
                "subject",
                "effectiveDateTime",
                "valueQuantity",
                "entry",
                "type",
            ]
        ),
        json_values,
        max_size=6,
    )
)
def test_resource_shaped_noise_in_a_bundle_is_rejected_or_accepted_cleanly(resource):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}
    prepared = prepare_document(json.dumps(bundle).encode(), "fuzz.json", "fast")
    for problem in prepared.problems:
        assert problem.source == "fuzz.json" and problem.message


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=80).filter(lambda b: b"\n" not in b), min_size=1, max_size=6))
def test_ndjson_noise_names_the_line(lines):
    numbered = list(enumerate(lines, start=1))
    prepared = prepare_lines(
        [(n, line + b"\n") for n, line in numbered if line.strip()], "x", "fast"
    )
    for problem in prepared.problems:
        assert problem.entry_label == "line" and problem.entry is not None


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(min_value=2, max_value=6), st.data())
def test_any_single_corruption_of_a_good_bundle_writes_nothing(tmp_path, count, data):
    """Generated damage to one entry: the bundle is rejected whole or loaded whole."""
    database = tmp_path / f"h-{count}-{os.urandom(4).hex()}.db"
    store = ResourceStore.open(f"sqlite:///{database}", None, encrypt=False)
    bundle = transaction_bundle(count)
    index = data.draw(st.integers(min_value=0, max_value=len(bundle["entry"]) - 1))
    key = data.draw(st.sampled_from(sorted(bundle["entry"][index]["resource"])))
    bundle["entry"][index]["resource"][key] = data.draw(json_values)
    path = tmp_path / "fuzzed.json"
    path.write_bytes(json.dumps(bundle).encode())

    report = Ingestor(store, IngestOptions(workers=0)).ingest_paths([path])

    counts = store.counts_by_type()
    store.close()
    if report.ok:
        assert sum(counts.values()) == count + 2
    else:
        assert counts == {}, report.rejected


def test_an_id_of_json_null_is_read_as_absent(tmp_path):
    """Found by the test above: fhir.resources reads `"id": null` as no id, so ingest gives the
    resource the id it would have had without one instead of crashing on the blind index."""
    store = ResourceStore.open(f"sqlite:///{tmp_path / 'null-id.db'}", None, encrypt=False)
    bundle = transaction_bundle(2)
    bundle["entry"][2]["resource"]["id"] = None
    path = tmp_path / "null-id.json"
    path.write_bytes(json.dumps(bundle).encode())
    report = Ingestor(store, IngestOptions(workers=0)).ingest_paths([path])
    counts = store.counts_by_type()
    store.close()
    assert report.ok, report.rejected
    assert sum(counts.values()) == 4


@pytest.mark.parametrize("layout", ["document", "ndjson"])
def test_json_nested_too_deeply_is_a_rejected_unit_not_a_crash(tmp_path, layout):
    nested: dict = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(400):
        nested = {"url": "http://example.org/x", "extension": [nested]}
    patient = {"resourceType": "Patient", "id": "deep", "extension": [nested]}
    path = tmp_path / ("deep.json" if layout == "document" else "Patient.ndjson")
    path.write_text(json.dumps(patient) + ("\n" if layout == "ndjson" else ""))
    store = ResourceStore.open(f"sqlite:///{tmp_path / 'deep.db'}", None, encrypt=False)
    report = Ingestor(store, IngestOptions(workers=0)).ingest_paths([path])
    counts = store.counts_by_type()
    store.close()
    assert not report.ok and "nested too deeply" in str(report.rejected[0])
    assert counts == {}


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from careloop.ingest import IngestOptions, Ingestor
    from careloop.store.crypto import MasterKey
    from careloop.store.repository import ResourceStore

    url, key, kill_after, *paths = sys.argv[1:]

    class KillMidway:
        calls = 0
        def planned(self, total_bytes):
            pass
        def advanced(self, nbytes, resources):
            # called after each chunk is written, before its unit commits
            KillMidway.calls += 1
            if KillMidway.calls == int(kill_after):
                os.kill(os.getpid(), signal.SIGKILL)

    store = ResourceStore.open(url, MasterKey.from_text(key, "argv"))
    options = IngestOptions(workers=0, ndjson_chunk_lines=50)
    Ingestor(store, options).ingest_paths([Path(p) for p in paths], progress=KillMidway())
    """
)


def test_killing_the_process_mid_unit_leaves_the_store_as_before_that_unit(database_url, tmp_path):
    patients = tmp_path / "1-Patient.ndjson"
    patients.write_bytes(ndjson([patient()]))
    observations = tmp_path / "2-Observation.ndjson"
    subject = f"Patient/{PATIENT_ID}"
    observations.write_bytes(
        ndjson([heart_rate(i, 60 + i % 40, "2024-02-01T00:00:00Z", subject) for i in range(400)])
    )
    key = "A" * 43 + "="
    script = tmp_path / "killer.py"
    script.write_text(KILLER)

    # call 1 ends the patient file (committed); calls 2.. are chunks of the observation file
    result = subprocess.run(
        [sys.executable, str(script), database_url, key, "4", str(patients), str(observations)],
        capture_output=True,
        timeout=120,
    )

    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    from careloop.store.crypto import MasterKey

    store = ResourceStore.open(database_url, MasterKey.from_text(key, "test"))
    assert store.counts_by_type() == {"Patient": 1}
    report = Ingestor(store, IngestOptions(workers=0)).ingest_paths([patients, observations])
    assert report.ok and store.counts_by_type() == {"Patient": 1, "Observation": 400}
    store.close()


def test_a_kill_between_bundles_keeps_the_bundles_already_loaded(tmp_path):
    first, second = transaction_bundle(2), transaction_bundle(2)
    second["entry"] = second["entry"][:1]
    second["entry"][0]["resource"]["id"] = "another-patient"
    second["entry"][0]["fullUrl"] = "urn:uuid:5d7c3b1a-0000-4000-8000-000000000009"
    (tmp_path / "a.json").write_bytes(orjson.dumps(first))
    (tmp_path / "b.json").write_bytes(orjson.dumps(second))
    url = f"sqlite:///{tmp_path / 'k.db'}"
    key = "B" * 43 + "="
    script = tmp_path / "killer.py"
    script.write_text(KILLER)

    result = subprocess.run(
        [
            sys.executable,
            str(script),
            url,
            key,
            "2",
            str(tmp_path / "a.json"),
            str(tmp_path / "b.json"),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]

    from careloop.store.crypto import MasterKey

    store = ResourceStore.open(url, MasterKey.from_text(key, "test"))
    # the kill came after the second bundle was written but before it committed
    assert store.counts_by_type() == {"Patient": 1, "Encounter": 1, "Observation": 2}
    store.close()


def test_problems_cross_process_boundaries_intact():
    import pickle

    problem = IngestProblem(
        "f.json", "bad", entry=3, resource_type="Observation", field="x.y", kind="reference"
    )
    assert pickle.loads(pickle.dumps(problem)).as_dict() == problem.as_dict()
