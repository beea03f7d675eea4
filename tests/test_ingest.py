"""Ingest end to end on both backends: what loads, what is rejected, and that a reject writes
nothing."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from careloop.ingest import IngestOptions, Ingestor, IngestReport
from careloop.store.repository import ResourceStore, resources
from samples import (
    PATIENT_ID,
    heart_rate,
    ndjson,
    patient,
    transaction_bundle,
    with_change,
    write_gz,
    write_json,
    write_tar_gz,
    write_zip,
)


def row_count(store: ResourceStore) -> int:
    with store.engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(resources)).scalar_one()


def ingest(store: ResourceStore, *paths: Path, workers: int = 0) -> IngestReport:
    return Ingestor(store, IngestOptions(workers=workers)).ingest_paths(list(paths))


def test_transaction_bundle_loads_with_references_rewritten(store, tmp_path):
    report = ingest(store, write_json(tmp_path / "b.json", transaction_bundle(4)))

    assert report.ok, report.rejected
    assert report.created == {"Patient": 1, "Encounter": 1, "Observation": 4}
    observation = store.read("Observation", "hr-2").body
    assert observation["subject"] == {"reference": f"Patient/{PATIENT_ID}"}
    encounter_id = observation["encounter"]["reference"].removeprefix("Encounter/")
    assert store.read("Encounter", encounter_id) is not None
    assert observation["code"]["coding"][0] == {"system": "http://loinc.org", "code": "8867-4"}


def test_same_data_again_creates_nothing_and_a_change_makes_a_version(store, tmp_path):
    bundle = transaction_bundle(3)
    ingest(store, write_json(tmp_path / "b.json", bundle))
    rows = row_count(store)

    again = ingest(store, write_json(tmp_path / "b.json", bundle))
    assert again.ok and sum(again.unchanged.values()) == 5 and not again.created
    assert row_count(store) == rows

    changed = with_change(bundle, 2, ["valueQuantity", "value"], 131)
    third = ingest(store, write_json(tmp_path / "c.json", changed))
    assert third.updated == {"Observation": 1}
    assert row_count(store) == rows + 1
    history = store.history("Observation", "hr-0")
    assert [h.version for h in history] == [2, 1]
    assert [h.body["valueQuantity"]["value"] for h in history] == [131, 80]
    assert store.read("Observation", "hr-0").body["meta"]["versionId"] == "2"


def test_parallel_workers_give_the_same_result_as_inline(store, tmp_path):
    for index in range(6):
        bundle = transaction_bundle(5)
        for entry in bundle["entry"]:
            entry["resource"]["id"] = (
                f"{entry['resource']['resourceType'].lower()}-{index}-" + (entry["fullUrl"][-6:])
            )
        write_json(tmp_path / f"bundle-{index}.json", bundle)

    report = ingest(store, tmp_path, workers=2)

    assert report.ok, report.rejected
    assert report.units_loaded == 6
    assert store.counts_by_type() == {"Patient": 6, "Encounter": 6, "Observation": 30}


def test_ndjson_loads_in_chunks_and_may_refer_forwards_within_a_file(store, tmp_path):
    observations = [
        heart_rate(i, 70 + i % 30, "2024-05-01T00:00:00Z", "Patient/p-1") for i in range(25)
    ]
    lines = ndjson([*observations, patient("p-1")])  # the patient comes last
    path = tmp_path / "Mixed.ndjson"
    path.write_bytes(lines)

    report = Ingestor(store, IngestOptions(workers=0, ndjson_chunk_lines=7)).ingest_paths([path])

    assert report.ok, report.rejected
    assert store.counts_by_type() == {"Observation": 25, "Patient": 1}


@pytest.mark.parametrize("packaging", ["dir", "gz", "tar.gz", "zip"])
def test_archives_and_directories_of_bundles_and_ndjson(store, tmp_path, packaging):
    bundle = orjson.dumps(transaction_bundle(2))
    extra = ndjson(
        [heart_rate(90 + i, 60, "2024-03-02T00:00:00Z", f"Patient/{PATIENT_ID}") for i in range(3)]
    )
    members = {"a/bundle.json": bundle, "b/Observation.ndjson": extra, "README.txt": b"hello"}
    if packaging == "dir":
        for name, data in members.items():
            (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "in" / name).write_bytes(data)
        target = tmp_path / "in"
    elif packaging == "gz":
        (tmp_path / "in").mkdir()
        write_gz(tmp_path / "in" / "1-bundle.json.gz", bundle)
        write_gz(tmp_path / "in" / "2-Observation.ndjson.gz", extra)
        target = tmp_path / "in"
    elif packaging == "tar.gz":
        target = write_tar_gz(tmp_path / "in.tar.gz", members)
    else:
        target = write_zip(tmp_path / "in.zip", members)

    report = ingest(store, target)

    assert report.ok, report.rejected
    assert store.counts_by_type() == {"Patient": 1, "Encounter": 1, "Observation": 5}
    if packaging != "gz":
        assert any(name.endswith("README.txt") for name in report.skipped)


# -- bad input: a clear error naming what and where, and nothing written ------------------------


def _bad_bundles() -> dict[str, tuple[dict | bytes, list[str]]]:
    good = transaction_bundle(3)
    duplicate = with_change(good, 3, ["id"], "hr-0")
    dangling = with_change(good, 2, ["subject"], {"reference": "Patient/nobody-here"})
    return {
        "malformed json": (b'{"resourceType": "Bundle", "entry": [', ["malformed JSON", "line 1"]),
        "not utf-8": (b'{"resourceType": "Bundle", "id": "\xff\xfe"}', ["not valid UTF-8"]),
        "unknown type": (
            with_change(good, 3, ["resourceType"], "Observashun"),
            ["entry 3", "'Observashun'", "resourceType"],
        ),
        "wrong case type": (with_change(good, 0, ["resourceType"], "patient"), ["entry 0"]),
        "invalid date": (
            with_change(good, 4, ["effectiveDateTime"], "2024-13-45T99:00:00Z"),
            ["entry 4 (Observation)", "Observation.effectiveDateTime"],
        ),
        "invalid code": (
            with_change(good, 2, ["status"], "done-ish"),
            ["entry 2 (Observation)", "Observation.status"],
        ),
        "wrong value type": (
            with_change(good, 3, ["valueQuantity", "value"], "eighty"),
            ["entry 3 (Observation)", "Observation.valueQuantity.value"],
        ),
        "dangling reference": (
            dangling,
            ["entry 2 (Observation)", "Observation.subject.reference", "dangling", "nobody-here"],
        ),
        "dangling urn": (
            with_change(good, 2, ["subject"], {"reference": "urn:uuid:1b2c3d4e-0000-4000-8000-1"}),
            ["entry 2 (Observation)", "dangling reference"],
        ),
        "duplicate ids": (duplicate, ["entry 3 (Observation)", "repeats entry 2"]),
        "delete request": (
            {**good, "entry": [{**good["entry"][0], "request": {"method": "DELETE", "url": "x"}}]},
            ["entry 0", "DELETE"],
        ),
        "searchset bundle": ({**good, "type": "searchset"}, ["Bundle.type"]),
        "not an object": (b"[1, 2, 3]", ["expected a JSON object"]),
    }


@pytest.mark.parametrize("case", sorted(_bad_bundles()))
def test_bad_bundle_is_rejected_whole_with_its_location(store, tmp_path, case):
    ingest(store, write_json(tmp_path / "seed.json", transaction_bundle(1)))
    before = (row_count(store), store.counts_by_type())
    content, expected_fragments = _bad_bundles()[case]
    path = tmp_path / "bad.json"
    path.write_bytes(content if isinstance(content, bytes) else orjson.dumps(content))

    report = ingest(store, path)

    assert not report.ok and report.units_loaded == 0
    message = str(report.rejected[0])
    assert message.startswith(str(path))
    for fragment in expected_fragments:
        assert fragment in message, message
    assert (row_count(store), store.counts_by_type()) == before


def test_one_bad_bundle_does_not_stop_the_good_ones(store, tmp_path):
    write_json(tmp_path / "1-good.json", transaction_bundle(2))
    write_json(tmp_path / "2-bad.json", with_change(transaction_bundle(2), 2, ["status"], "??"))
    other = transaction_bundle(1)
    other["entry"] = other["entry"][:1]
    other["entry"][0]["resource"]["id"] = "second-patient"
    other["entry"][0]["fullUrl"] = "urn:uuid:5d7c3b1a-0000-4000-8000-000000000002"
    write_json(tmp_path / "3-good.json", other)

    report = ingest(store, tmp_path)

    assert report.units_loaded == 2 and len(report.rejected) == 1
    assert "2-bad.json" in str(report.rejected[0])
    assert store.counts_by_type()["Patient"] == 2


def test_bad_ndjson_line_rejects_the_whole_file(store, tmp_path):
    lines = [patient("p-9"), *[heart_rate(i, 70, "2024-01-01", "Patient/p-9") for i in range(10)]]
    data = ndjson(lines).split(b"\n")
    data[6] = b'{"resourceType": "Observation", "status": '  # cut short
    path = tmp_path / "Observation.ndjson"
    path.write_bytes(b"\n".join(data))

    report = Ingestor(store, IngestOptions(workers=0, ndjson_chunk_lines=3)).ingest_paths([path])

    assert "line 7" in str(report.rejected[0]) and "malformed JSON" in str(report.rejected[0])
    assert store.counts_by_type() == {}


def test_a_gigantic_ndjson_line_is_refused_without_reading_it_whole(store, tmp_path):
    path = tmp_path / "Huge.ndjson"
    with path.open("wb") as handle:
        handle.write(ndjson([patient("p-2")]))
        handle.write(b'{"resourceType": "Basic", "text": "' + b"x" * 3_000_000 + b'"}\n')

    report = Ingestor(store, IngestOptions(workers=0, max_line_bytes=1_000_000)).ingest_paths(
        [path]
    )

    assert "line 2" in str(report.rejected[0]) and "longer than" in str(report.rejected[0])
    assert store.counts_by_type() == {}


def test_truncated_archives_are_rejected_before_anything_is_written(store, tmp_path):
    members = {f"b{i}.json": orjson.dumps(transaction_bundle(2)) for i in range(3)}
    whole = write_tar_gz(tmp_path / "whole.tar.gz", members).read_bytes()
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    gz = write_gz(tmp_path / "whole.ndjson.gz", ndjson([patient("p-3")] * 1)).read_bytes()
    cut_gz = tmp_path / "cut.ndjson.gz"
    cut_gz.write_bytes(gz[:-6])
    cut_zip = tmp_path / "cut.zip"
    cut_zip.write_bytes(write_zip(tmp_path / "z.zip", members).read_bytes()[:-40])

    for damaged in (truncated, cut_gz, cut_zip):
        report = ingest(store, damaged)
        assert not report.ok, damaged
        assert str(damaged) in str(report.rejected[0])
        assert "damaged" in str(report.rejected[0]) or "gzip" in str(report.rejected[0])
        assert store.counts_by_type() == {}


def test_missing_path_is_reported(store, tmp_path):
    report = ingest(store, tmp_path / "nowhere.json")
    assert "no such file" in str(report.rejected[0])


def test_conditional_reference_resolves_against_the_store(store, tmp_path):
    ingest(store, write_json(tmp_path / "p.json", transaction_bundle(0)))
    observation = heart_rate(
        1,
        77,
        "2024-03-02T10:00:00Z",
        "Patient?identifier=https://hospital.example/mrn|MRN-58213377",
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": observation, "request": {"method": "PUT", "url": "Observation/hr-1"}}
        ],
    }

    report = ingest(store, write_json(tmp_path / "o.json", bundle))

    assert report.ok, report.rejected
    assert store.read("Observation", "hr-1").body["subject"]["reference"] == f"Patient/{PATIENT_ID}"


def test_synthea_bundles_load_through_the_real_path(store, synthea_archive, tmp_path):
    """A slice of the real Synthea archive: infrastructure bundles plus a few patients."""
    with tarfile.open(synthea_archive, "r:gz") as archive:
        names = [m for m in archive.getmembers() if m.isfile()]
        chosen = [m for m in names if "Information" in m.name]
        chosen += [m for m in names if "Information" not in m.name][:4]
        for member in chosen:
            (tmp_path / Path(member.name).name).write_bytes(archive.extractfile(member).read())

    report = ingest(store, tmp_path, workers=2)

    assert report.ok, report.rejected[:3]
    counts = store.counts_by_type()
    assert counts["Patient"] == 4 and counts["Observation"] > 100
    patient_id = store.search("Patient", count=1).resources[0].body["id"]
    conditions = store.search("Condition", patient_id=patient_id, count=500)
    assert all(
        c.body["subject"]["reference"] == f"Patient/{patient_id}" for c in conditions.resources
    )
    assert ingest(store, tmp_path).created == {}


def test_gzip_member_inside_tar(store, tmp_path):
    data = gzip.compress(ndjson([patient("p-7")]))
    report = ingest(store, write_tar_gz(tmp_path / "bulk.tar.gz", {"Patient.ndjson.gz": data}))
    assert report.ok and store.counts_by_type() == {"Patient": 1}


def test_required_binding_and_malformed_terminology(store, tmp_path):
    """A status outside its required value set rejects; a malformed LOINC code only warns."""
    bad_status = with_change(transaction_bundle(2), 2, ["status"], "done-ish")
    report = ingest(store, write_json(tmp_path / "status.json", bad_status))
    assert "Observation.status" in str(report.rejected[0]) and "required value set" in str(
        report.rejected[0]
    )

    typo = with_change(transaction_bundle(2), 2, ["code", "coding", 0, "code"], "8867-5")
    report = ingest(store, write_json(tmp_path / "typo.json", typo))
    assert report.ok and report.warning_count == 1
    assert "Observation.code.coding[0].code" in str(report.warnings[0])
    assert store.read("Observation", "hr-0").body["code"]["coding"][0]["code"] == "8867-5"


@pytest.mark.parametrize("archive_kind", ["tar.gz", "zip"])
def test_a_damaged_gzip_member_inside_a_sound_archive_is_rejected_by_name(
    store, tmp_path, archive_kind
):
    damaged = gzip.compress(ndjson([patient("p-8"), patient("p-9")]))[:-10]
    members = {"good/Patient.ndjson": ndjson([patient("p-7")]), "bad/Patient.ndjson.gz": damaged}
    writer = write_tar_gz if archive_kind == "tar.gz" else write_zip
    archive = writer(tmp_path / f"bulk.{archive_kind}", members)

    report = ingest(store, archive)

    assert len(report.rejected) == 1
    assert "bad/Patient.ndjson.gz" in str(report.rejected[0])
    assert "damaged gzip" in str(report.rejected[0])
    assert store.counts_by_type() == {"Patient": 1}


def test_tar_members_named_with_a_leading_dot_slash_are_read(store, tmp_path):
    """`tar czf x.tar.gz .` names members ./file.json, as the Synthea archive does."""
    archive = write_tar_gz(
        tmp_path / "dot.tar.gz", {"./bundle.json": orjson.dumps(transaction_bundle(1))}
    )
    report = ingest(store, archive)
    assert report.ok and report.units_loaded == 1


def test_input_without_any_fhir_file_is_an_error(store, tmp_path):
    (tmp_path / "notes.txt").write_text("no FHIR here")
    report = ingest(store, tmp_path)
    assert not report.ok and "no FHIR input found" in str(report.rejected[0])


def test_the_real_synthea_archive_plans_every_bundle(synthea_archive):
    from careloop.ingest.sources import plan_units

    units, skipped = plan_units([synthea_archive])
    assert len(units) == 617 and skipped == []
    assert sum("Information" in unit.name for unit in units) == 2
