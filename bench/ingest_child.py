"""Run one ingest configuration and write its figures as JSON; started by bench/ingest.py.

It runs in its own process so that peak memory belongs to one configuration only, and it is run
by file path so that it needs nothing from `bench` (only careloop and the standard library).
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import sys
import time
from pathlib import Path

from careloop.ingest import IngestOptions, Ingestor
from careloop.store.crypto import MasterKey
from careloop.store.repository import ResourceStore


def _max_rss_mib(who: int) -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(who).ru_maxrss / 1024


def run(spec: dict) -> dict:
    started = time.perf_counter()
    master = MasterKey.from_bytes(os.urandom(32)) if spec["encrypt"] else None
    store = ResourceStore.open(spec["url"], master, encrypt=spec["encrypt"])
    options = IngestOptions(
        validate=spec["validation"] != "off",
        fast_path=spec["validation"] == "fast",
        workers=spec["workers"],
    )
    try:
        report = Ingestor(store, options).ingest_paths([Path(p) for p in spec["data"]])
    finally:
        store.close()
    return {
        "report": report.as_dict(),
        "resources": report.resources,
        "seconds": report.seconds,
        "resources_per_second": report.resources_per_second,
        "rejected": len(report.rejected),
        "process_seconds": time.perf_counter() - started,
        "main_maxrss_mib": _max_rss_mib(resource.RUSAGE_SELF),
        # the largest single worker process, once the pool has been joined
        "worker_maxrss_mib": _max_rss_mib(resource.RUSAGE_CHILDREN),
        "sqlite_version": sqlite3.sqlite_version,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = run(spec)
    Path(spec["out"]).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
