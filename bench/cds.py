"""CDS Hooks latency and throughput against the real server on loopback.

A careloop server (uvicorn, one process, the embedded SQLite store, the shipped sepsis model and
playbooks, the ONC interaction lists) runs in a child process; this process is the EHR. It
registers, signs a fresh ES384 JWT per request (signed before the clock starts, so the load
generator's own cost stays out of the figures) and sends, at 1, 10 and 50 concurrent clients:

- `patient-view` with the full prefetch of a real PhysioNet ICU stay (48 hours of vitals and
  labs; the sepsis model scores it, NEWS2 and the playbooks run, the card and its RiskAssessment
  and Provenance are written, consent is checked and the call is audited);
- `order-sign` for a patient with ten active medications and one draft (interactions, allergy,
  duplicate therapy and renal checks; DetectedIssues written; consent and audit on);
- `GET /healthz` as the floor: what the same server and client cost for a request that does
  nothing, measured in the same run, so the CDS figures can be read as a ratio to it.

Latency is wall-clock per request at the client; throughput is completed requests per second
over the whole level. Requests of one level are spread over 20 real patients.

    .venv/bin/python -m bench.cds [--requests 400] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from bench.doc_sections import publish
from bench.ingest import REPO_ROOT
from bench.machine import machine_facts
from bench.server import start_server
from careloop.cds.client_auth import CdsClientRegistry
from careloop.cds.prefetch import prefetch_for
from careloop.cds.services import ORDER_KEYS, PATIENT_VIEW_KEYS
from careloop.sources.physionet import read_physionet, stay_to_fhir
from careloop.store.crypto import MasterKey, generate_key_text
from careloop.store.repository import ResourceStore

SECTION = "cds-hooks"
DEFAULT_SET_A = REPO_ROOT.parent / "shared" / "data" / "physionet2019" / "training_setA.tar.gz"
DDI_DIR = REPO_ROOT.parent / "shared" / "data" / "ddi"
ISSUER = "https://bench-ehr.example.org"
CONCURRENCY = (1, 10, 50)
PATIENTS = 20
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TEN_MEDICATIONS = [
    ("316672", "Simvastatin 10 MG Oral Tablet"),
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    ("197361", "Amlodipine 5 MG Oral Tablet"),
    ("310798", "Hydrochlorothiazide 25 MG Oral Tablet"),
    ("243670", "aspirin 81 MG Oral Tablet"),
    ("1049221", "Acetaminophen 325 MG / Oxycodone Hydrochloride 5 MG Oral Tablet"),
    ("855332", "Warfarin Sodium 5 MG Oral Tablet"),
    ("310965", "Ibuprofen 200 MG Oral Tablet"),
    ("197591", "Diazepam 5 MG Oral Tablet"),
]
DRAFT = ("197517", "Clarithromycin 500 MG Oral Tablet")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cds")
    parser.add_argument("--data", type=Path, default=DEFAULT_SET_A)
    parser.add_argument("--requests", type=int, default=400, help="requests per level")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


# -- the patients --------------------------------------------------------------------------


def icu_prefetches(set_a: Path, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The patient-view prefetch of `count` real stays, each cut to its last 48 hours."""
    found = []
    for stay in read_physionet(set_a, limit=count * 5):
        if not stay.scorable or stay.hours < 24:
            continue
        resources = stay_to_fhir(stay)
        cutoff = (stay.start + timedelta(hours=stay.hours - 48)).isoformat()
        kept = [
            r
            for r in resources
            if r["resourceType"] != "Observation" or r["effectiveDateTime"] >= cutoff
        ]
        found.append((stay.stay_id, prefetch_for(PATIENT_VIEW_KEYS, kept)))
        if len(found) == count:
            break
    return found


def _medication(identifier: str, patient: str, code: str, name: str, status: str) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": identifier,
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code, "display": name}],
            "text": name,
        },
    }


def order_sign_request(patient: str) -> dict[str, Any]:
    active = [
        _medication(f"{patient}-med-{n}", patient, code, name, "active")
        for n, (code, name) in enumerate(TEN_MEDICATIONS)
    ]
    draft = _medication(f"{patient}-draft", patient, *DRAFT, "draft")
    patient_resource = {
        "resourceType": "Patient",
        "id": patient,
        "gender": "female",
        "birthDate": "1948-03-02",
    }
    return {
        "hook": "order-sign",
        "context": {
            "userId": "Practitioner/bench-1",
            "patientId": patient,
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": draft}],
            },
        },
        "prefetch": prefetch_for(ORDER_KEYS, [patient_resource, *active]),
    }


# -- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the load ------------------------------------------------------------------------------


class Signer:
    def __init__(self, base: str) -> None:
        self.base = base
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.kid = uuid.uuid4().hex

    def jwks(self) -> dict[str, Any]:
        public = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        public.update({"kid": self.kid, "alg": "ES384"})
        return {"keys": [public]}

    def header(self, path: str) -> str:
        now = datetime.now(UTC)
        claims = {
            "iss": ISSUER,
            "sub": "bench",
            "aud": self.base + path,
            "iat": now,
            "exp": now + timedelta(minutes=5),
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self.key, algorithm="ES384", headers={"kid": self.kid})
        return f"Bearer {token}"


Prepared = tuple[str, str, bytes | None, dict[str, str]]  # method, path, body, headers


async def run_level(base: str, prepared: list[Prepared], concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue[Prepared] = asyncio.Queue()
    for item in prepared:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal failures
            while not queue.empty():
                method, path, body, headers = queue.get_nowait()
                started = time.perf_counter()
                response = await client.request(method, path, content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    failures += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "p50": _quantile(ordered, 0.50) * 1000,
        "p95": _quantile(ordered, 0.95) * 1000,
        "p99": _quantile(ordered, 0.99) * 1000,
        "mean": statistics.fmean(ordered) * 1000,
        "throughput": len(ordered) / elapsed,
        "failures": failures,
        "requests": len(ordered),
    }


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def prepare(
    kind: str, count: int, signer: Signer, prefetches: list[tuple[str, dict[str, Any]]]
) -> list[Prepared]:
    prepared: list[Prepared] = []
    for n in range(count):
        if kind == "healthz":
            prepared.append(("GET", "/healthz", None, {}))
            continue
        if kind == "patient-view":
            patient, prefetch = prefetches[n % len(prefetches)]
            body = {
                "hook": "patient-view",
                "context": {"userId": "Practitioner/bench-1", "patientId": patient},
                "prefetch": prefetch,
            }
            path = "/cds-services/careloop-patient-view"
        else:
            body = order_sign_request(f"bench-meds-{n % PATIENTS}")
            path = "/cds-services/careloop-order-sign"
        body["hookInstance"] = str(uuid.uuid4())
        headers = {"authorization": signer.header(path), "content-type": "application/json"}
        prepared.append(("POST", path, orjson.dumps(body), headers))
    return prepared


def measure(args: argparse.Namespace) -> dict[str, dict[int, dict[str, float]]]:
    prefetches = icu_prefetches(args.data, PATIENTS)
    key_text = generate_key_text()
    key = MasterKey.from_text(key_text, origin="benchmark")
    with tempfile.TemporaryDirectory() as home:
        url = f"sqlite:///{home}/bench.db"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        signer = Signer(base)
        store = ResourceStore.open(url, key)
        CdsClientRegistry(store).register(ISSUER, "bench EHR", jwks=signer.jwks())
        store.close()
        server = start_server(url, key_text, port, ddi_dir=DDI_DIR)
        try:
            results: dict[str, dict[int, dict[str, float]]] = {}
            for kind in ("healthz", "patient-view", "order-sign"):
                results[kind] = {}
                warm = prepare(kind, 20, signer, prefetches)
                asyncio.run(run_level(base, warm, 4))
                for concurrency in CONCURRENCY:
                    prepared = prepare(kind, args.requests, signer, prefetches)
                    results[kind][concurrency] = asyncio.run(run_level(base, prepared, concurrency))
                    print(kind, concurrency, results[kind][concurrency], flush=True)
            return results
        finally:
            server.terminate()
            server.wait(timeout=30)


def render(args: argparse.Namespace, results: dict[str, dict[int, dict[str, float]]]) -> str:
    facts = machine_facts()
    labels = {
        "healthz": "GET /healthz (floor)",
        "patient-view": "patient-view, full prefetch",
        "order-sign": "order-sign, 10 active meds",
    }
    lines = [
        "## CDS Hooks service: latency and throughput on loopback",
        "",
        "Reproduce: `.venv/bin/python -m bench.cds` (needs `../shared/data`: PhysioNet 2019 "
        "set A for the patients, `ddi/` for the interaction lists).",
        "",
        f"One uvicorn process serving careloop (SQLite store, consent checks and audit on, the "
        f"shipped sepsis model and playbooks); the client is httpx on the same "
        f"{facts['logical_cpus']}-CPU machine, sending {args.requests} requests per level with "
        f"a fresh ES384-signed JWT each, spread over {PATIENTS} real patients. Each CDS call "
        "verifies the JWT, checks the request and prefetch, screens the data through consent, "
        "decides, writes the card's FHIR record and Provenance and the ledger rows in one "
        "transaction, and appends the audit events.",
        "",
        "| request | clients | p50 ms | p95 ms | p99 ms | throughput /s | p95 / floor | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, levels in results.items():
        for concurrency, figures in levels.items():
            floor = results["healthz"][concurrency]["p95"]
            lines.append(
                f"| {labels[kind]} | {concurrency} | {figures['p50']:.1f} | {figures['p95']:.1f}"
                f" | {figures['p99']:.1f} | {figures['throughput']:.0f} | "
                f"{figures['p95'] / floor:.1f}x | {int(figures['failures'])} |"
            )
    view, sign = results["patient-view"][50], results["order-sign"][50]
    met = view["p95"] < 50 and sign["p95"] < 50
    lines += [
        "",
        f"Aim: p95 under 50 ms at 50 concurrent clients: **{'met' if met else 'not met'}** "
        f"(patient-view {view['p95']:.0f} ms, order-sign {sign['p95']:.0f} ms). With 50 "
        "clients each waiting for its answer before sending again, the latency is set by "
        "throughput (Little's law: 50 clients at 50 ms each need 1,000 answers per second); "
        f"one server process completes {view['throughput']:.0f} patient-views/s "
        f"({1000 / results['patient-view'][1]['mean']:.0f}/s unloaded) and "
        f"{sign['throughput']:.0f} order-signs/s, so the queue, not the per-call work, makes "
        "the latency at 10 and 50 clients. The single-client rows are the per-call cost; the "
        "CDS Hooks specification expects answers on the order of 500 ms.",
        "",
        f"Machine: {facts['cpu']}, {facts['logical_cpus']} logical CPUs, {facts['ram_gib']} GiB, "
        f"Python {facts['python']}, SQLite {facts['sqlite']}; load average at start "
        f"{facts['load_average_at_start']}; {facts['date_utc']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.data.exists():
        print(f"{args.data} is not present; the benchmark needs ../shared/data", file=sys.stderr)
        return 2
    results = measure(args)
    return publish(render(args, results), args.out, SECTION, write=not args.no_write)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
