"""What the access layer (consent evaluation and the audit record) costs on a FHIR search.

Real Synthea patients are loaded into a store on each backend, each given a research opt-out
Consent, and every other patient a mental-health restriction with an exception as well, so
every read evaluates real provisions and half of them must infer each resource's labels.
Then, in interleaved rounds, the same search for one patient's observations
(`Observation?patient=…&_count=50`) runs:

- **direct**: `ResourceStore.search`, what the API did before the access layer;
- **guarded**: `AccessLayer.search` as a clinician, which adds the consent look-up and evaluation
  for every resource returned and one hash-chained AuditEvent, committed before release;
- **over HTTP**: the guarded search through the FastAPI app (in-process ASGI client, bearer
  token), for the end-to-end latency a client sees.

Latencies are wall-clock per search; the ratio guarded/direct is the access layer's price.

    .venv/bin/python -m bench.access_layer [--patients 40] [--rounds 5] [--no-postgres]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import sqlalchemy

from bench.doc_sections import publish
from bench.ingest import DEFAULT_DATA, DEFAULT_POSTGRES_URL, REPO_ROOT
from bench.ingest_stages import patient_bundles
from bench.machine import machine_facts
from careloop.access.consent import data_class_restriction, opt_out_consent
from careloop.access.labels import DataClass
from careloop.access.layer import AccessLayer
from careloop.access.principal import AccessContext, Principal, Purpose
from careloop.access.roles import Role
from careloop.ingest import IngestOptions, Ingestor
from careloop.store.crypto import MasterKey
from careloop.store.repository import ResourceStore

SECTION = "access-layer"
LABELS = {
    "direct": "store search (no access layer)",
    "guarded": "access layer: consent + audit (opt-out consent only)",
    "guarded, data-class restriction": (
        "access layer: consent + audit (plus a data-class restriction: labels inferred per "
        "resource)"
    ),
    "http": "HTTP API, guarded, in-process",
}
COUNT = 50


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.access_layer")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as scratch:
        yield f"sqlite:///{scratch}/bench.db"


@contextmanager
def postgres_url(base: str) -> Iterator[str]:
    schema = f"bench_access_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(base)
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def load(store: ResourceStore, bundles: list[bytes]) -> list[str]:
    """Ingest the bundles and give every patient two consents; the patient ids."""
    ingestor = Ingestor(store, IngestOptions(workers=0))
    for number, data in enumerate(bundles):
        ingestor.ingest_document(data, f"bundle {number}")
    patients = [item.body["id"] for item in store.search("Patient", count=1000).resources]
    # the practitioner a consent's exception names must exist (references are checked)
    consents: list[dict] = [{"resourceType": "Practitioner", "id": "bench-2", "active": True}]
    for number, patient_id in enumerate(patients):
        consents.append(opt_out_consent(patient_id, [Purpose.RESEARCH]))
        if number % 2 == 0:  # half the patients also restrict a data class
            consents.append(
                data_class_restriction(
                    patient_id, [DataClass.MENTAL_HEALTH], except_actors=["Practitioner/bench-2"]
                )
            )
    for consent in consents:
        ingestor.ingest_document(orjson.dumps(consent), "consent")
    return patients


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def measure(store: ResourceStore, patients: list[str], rounds: int) -> dict[str, list[float]]:
    from fastapi.testclient import TestClient

    from careloop.web import create_app
    from careloop.web.app import AppSettings

    access = AccessLayer(store)
    clinician = Principal("bench-clinician", "user", Role.CLINICIAN, "Practitioner/bench-1")
    ctx = AccessContext(Purpose.TREATMENT)
    samples: dict[str, list[float]] = {name: [] for name in LABELS}

    def direct(patient_id: str) -> object:
        return store.search("Observation", patient_id=patient_id, count=COUNT)

    def guarded(patient_id: str) -> object:
        return access.search(
            clinician,
            ctx,
            "Observation",
            lambda pid: store.search("Observation", patient_id=pid, count=COUNT),
            patient_id=patient_id,
            query_text=f"patient={patient_id}",
        )

    base = "https://testserver"
    app = create_app(store, AppSettings(public_url=base))
    with TestClient(app, base_url=base) as http:
        headers = bench_token(http, store)
        for _ in range(rounds):
            for number, patient_id in enumerate(patients):
                samples["direct"].append(timed(lambda p=patient_id: direct(p)))
                group = "guarded, data-class restriction" if number % 2 == 0 else "guarded"
                samples[group].append(timed(lambda p=patient_id: guarded(p)))
                url = f"/fhir/Observation?patient={patient_id}&_count={COUNT}"
                samples["http"].append(timed(lambda u=url: http.get(u, headers=headers)))
    return samples


def bench_token(http: object, store: ResourceStore) -> dict[str, str]:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from api_clients import auth, bearer_token

    return auth(
        bearer_token(http, store, Role.CLINICIAN, fhir_user="Practitioner/bench-1")  # type: ignore[arg-type]
    )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary_rows(backend: str, samples: dict[str, list[float]]) -> list[str]:
    direct = statistics.median(samples["direct"])
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        rows.append(
            f"| {backend} | {LABELS[name]} | {median * 1e3:,.2f} | "
            f"{percentile(values, 0.95) * 1e3:,.2f} | {1 / median:,.0f} | "
            f"{median / direct:,.2f}x |"
        )
    return rows


def report(
    args: argparse.Namespace, results: dict[str, dict[str, list[float]]], patients: int, obs: int
) -> str:
    machine = machine_facts()
    rows = [
        "| backend | path | median ms | p95 ms | searches/s (1 thread) | vs direct |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for backend, samples in results.items():
        rows += summary_rows(backend, samples)
    return "\n".join(
        [
            "## Access layer: consent and audit on a FHIR search",
            "",
            f"- **Command**: `.venv/bin/python -m bench.access_layer --patients {args.patients} "
            f"--rounds {args.rounds}`",
            f"- **Data**: the first {args.patients} patient bundles of `{args.data.name}` "
            f"({patients} patients, {obs:,} Observations). Every patient has a research "
            "opt-out Consent; every other patient also restricts mental-health data (with an "
            "exception), which makes the layer infer security labels for each resource. The search "
            f"is `Observation?patient=…&_count={COUNT}`, run once per patient per round, the "
            "three paths interleaved; a guarded search writes one AuditEvent per search",
            f"- **Machine**: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, Python "
            f"{machine['python']}; {machine['date_utc']}",
            "",
            *rows,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    bundles = patient_bundles(args.data, args.patients)
    backends: dict[str, Callable[[], object]] = {"SQLite": sqlite_url}
    if not args.no_postgres:
        backends["PostgreSQL"] = lambda: postgres_url(args.postgres_url)
    results: dict[str, dict[str, list[float]]] = {}
    patients = observations = 0
    for backend, make_url in backends.items():
        with make_url() as url:  # type: ignore[attr-defined]
            store = ResourceStore.open(url, MasterKey.from_bytes(os.urandom(32)))
            ids = load(store, bundles)
            patients, observations = len(ids), store.counts_by_type().get("Observation", 0)
            results[backend] = measure(store, ids, args.rounds)
            store.close()
    text = report(args, results, patients, observations)
    return publish(text, args.out, SECTION, write=not args.no_write)


if __name__ == "__main__":
    raise SystemExit(main())
