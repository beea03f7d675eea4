"""The ingest pipeline: read units, validate them in worker processes, write each atomically.

Validation is the expensive step (pure Python inside fhir.resources), so it runs in a process
pool while the main process resolves references, encrypts and writes, in input order. Each unit
(a bundle, or an NDJSON file streamed in chunks) is one database transaction: a bad entry, a bad
line, a dangling reference or a killed process leaves the store as it was before that unit.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from careloop.fhir.timeutil import FhirDateError
from careloop.fhir.walk import FoundElements, scan
from careloop.ingest.documents import (
    Entry,
    entries_of_document,
    iter_ndjson_lines,
    parse_json,
    problem_at,
    read_limited,
    resource_of_line,
)
from careloop.ingest.errors import IngestProblem
from careloop.ingest.references import (
    Site,
    Unresolved,
    dangling,
    localize,
    missing_targets,
    resolve_conditionals,
)
from careloop.ingest.report import IngestReport
from careloop.ingest.sources import InputUnit, close_open_archives, plan_units
from careloop.ingest.validation import Validation, structural_errors, terminology_warnings
from careloop.store.records import ResourceRecord, record_of
from careloop.store.repository import ResourceStore, StoreTransaction, WriteResult

MAX_PROBLEMS_PER_UNIT = 20
PENDING_TARGETS_LIMIT = 50_000


@dataclass(frozen=True)
class IngestOptions:
    validate: bool = True
    # accept what the compiled structure check proves valid without running fhir.resources
    fast_path: bool = True
    workers: int = field(default_factory=lambda: min(os.cpu_count() or 1, 4))
    max_document_bytes: int = 512 * 1024 * 1024
    max_line_bytes: int = 16 * 1024 * 1024
    ndjson_chunk_lines: int = 2000

    @property
    def validation(self) -> Validation:
        if not self.validate:
            return "off"
        return "fast" if self.fast_path else "library"


@dataclass(frozen=True)
class Prepared:
    """A unit, or a chunk of one, made ready to write; or the problems that reject it.

    Records are computed in the worker; an entry with a conditional reference (resolvable only
    against the store) travels as its resource instead and becomes a record in the main process.
    """

    keys: list[tuple[str, str]] = field(default_factory=list)  # (type, id) per entry
    records: list[ResourceRecord | None] = field(default_factory=list)
    conditional: dict[int, Entry] = field(default_factory=dict)
    unresolved: Unresolved = field(default_factory=Unresolved)
    problems: list[IngestProblem] = field(default_factory=list)
    warnings: list[IngestProblem] = field(default_factory=list)


@dataclass(frozen=True)
class _Chunk:
    unit: InputUnit
    last: bool
    nbytes: int
    work: Callable[..., Prepared] | None  # None when reading the unit already failed
    payload: tuple
    problem: IngestProblem | None = None


class IngestProgress(Protocol):
    """Told the planned size once, then each increment of bytes read and resources written."""

    def planned(self, total_bytes: int) -> None: ...

    def advanced(self, nbytes: int, resources: int) -> None: ...


class _Silent:
    def planned(self, total_bytes: int) -> None:
        return None

    def advanced(self, nbytes: int, resources: int) -> None:
        return None


def prepare_document(data: bytes, source: str, validation: Validation) -> Prepared:
    """Parse, validate and localize one JSON document. Runs in a worker process."""
    try:
        entries = entries_of_document(parse_json(data, source), source)
    except IngestProblem as problem:
        return Prepared(problems=[problem])
    return _prepare_guarded(entries, source, "entry", validation)


def prepare_lines(lines: list[tuple[int, bytes]], source: str, validation: Validation) -> Prepared:
    """Parse, validate and localize a chunk of NDJSON lines. Runs in a worker process."""
    entries: list[Entry] = []
    for line_number, line in lines:
        try:
            entries.append(resource_of_line(line, line_number, source))
        except IngestProblem as problem:
            return Prepared(problems=[problem])
    return _prepare_guarded(entries, source, "line", validation)


def _prepare_guarded(
    entries: list[Entry], source: str, label: str, validation: Validation
) -> Prepared:
    """Validation walks resources recursively (as fhir.resources does); a hostile document
    nested hundreds of levels deep is a rejected unit, not a crashed run. Checking depth up
    front would cost every well-formed resource a second walk."""
    try:
        return _prepare_entries(entries, source, label, validation)
    except RecursionError:
        message = "the JSON is nested too deeply to be a FHIR resource careloop can read"
        return Prepared(problems=[IngestProblem(source, message, kind="structure")])


def _prepare_entries(
    entries: list[Entry], source: str, label: str, validation: Validation
) -> Prepared:
    problems = _validate_entries(entries, source, label, validation)
    if problems:
        return Prepared(problems=problems)
    found = [scan(entry.resource) for entry in entries]
    warnings = []
    if validation != "off":
        warnings = _terminology_warnings(entries, found, source, label)
    try:
        unresolved = localize(entries, source, label, found)
    except IngestProblem as problem:
        return Prepared(problems=[problem])
    pending = set(unresolved.conditional_entries)
    try:
        records = [
            None if i in pending else _record_of(e, source, label) for i, e in enumerate(entries)
        ]
    except IngestProblem as problem:
        return Prepared(problems=[problem])
    return Prepared(
        keys=[(e.resource["resourceType"], e.resource["id"]) for e in entries],
        records=records,
        conditional={i: entries[i] for i in pending},
        unresolved=unresolved,
        warnings=warnings,
    )


def _terminology_warnings(
    entries: list[Entry], found: list[FoundElements], source: str, label: str
) -> list[IngestProblem]:
    return [
        problem_at(entry, source, label, message, path)
        for entry, elements in zip(entries, found, strict=True)
        for path, message in terminology_warnings(entry.resource, elements)
    ]


def _record_of(entry: Entry, source: str, label: str) -> ResourceRecord:
    try:
        return record_of(entry.resource)
    except (FhirDateError, KeyError, TypeError, ValueError) as exc:
        raise problem_at(entry, source, label, f"cannot index this resource: {exc}") from None


def _validate_entries(
    entries: list[Entry], source: str, label: str, validation: Validation
) -> list[IngestProblem]:
    problems: list[IngestProblem] = []
    for entry in entries:
        for path, message in structural_errors(entry.resource, validation):
            problems.append(problem_at(entry, source, label, message, path))
        if len(problems) >= MAX_PROBLEMS_PER_UNIT:
            break
    return problems[:MAX_PROBLEMS_PER_UNIT]


class Ingestor:
    """Loads units into one store. Not thread-safe; one ingest at a time per instance."""

    def __init__(self, store: ResourceStore, options: IngestOptions | None = None) -> None:
        self.store = store
        self.options = options or IngestOptions()

    # -- whole runs from paths -------------------------------------------------------------

    def ingest_paths(
        self, paths: list[Path], progress: IngestProgress | None = None
    ) -> IngestReport:
        report = IngestReport()
        progress = progress or _Silent()
        started = time.perf_counter()
        try:
            units, report.skipped = plan_units(paths)
        except IngestProblem as problem:
            report.rejected.append(problem)
            return report
        progress.planned(sum(unit.size or 0 for unit in units))
        try:
            self._run(units, report, progress)
        finally:
            close_open_archives()
            report.seconds = time.perf_counter() - started
        return report

    def _run(self, units: list[InputUnit], report: IngestReport, progress: IngestProgress) -> None:
        chunks = self._chunks(units)
        if self.options.workers <= 0:
            self._apply_all(((c, _completed(c)) for c in chunks), report, progress)
            return
        with ProcessPoolExecutor(max_workers=self.options.workers) as pool:
            self._apply_all(self._submitted(pool, chunks), report, progress)

    def _submitted(
        self, pool: ProcessPoolExecutor, chunks: Iterator[_Chunk]
    ) -> Iterator[tuple[_Chunk, Future[Prepared] | _Done]]:
        """Keep the pool busy a few chunks ahead while results are consumed in input order."""
        in_flight: deque[tuple[_Chunk, Future[Prepared] | _Done]] = deque()
        limit = self.options.workers * 3
        for chunk in chunks:
            if chunk.work is None:
                in_flight.append((chunk, _Done(Prepared())))
            else:
                in_flight.append((chunk, pool.submit(chunk.work, *chunk.payload)))
            while len(in_flight) > limit:
                yield in_flight.popleft()
        yield from in_flight

    def _apply_all(
        self,
        results: Iterator[tuple[_Chunk, Future[Prepared] | _Done]],
        report: IngestReport,
        progress: IngestProgress,
    ) -> None:
        writer: _UnitWriter | None = None
        try:
            for chunk, pending in results:
                if writer is None or writer.unit is not chunk.unit:
                    writer = _UnitWriter(self.store, chunk.unit)
                prepared = pending.result()
                if chunk.problem:
                    prepared = Prepared(problems=[chunk.problem])
                written = writer.apply(prepared)
                progress.advanced(chunk.nbytes, written)
                if chunk.last:
                    writer.finish(report)
                    writer = None
        finally:
            if writer is not None:
                writer.abandon()

    def _chunks(self, units: list[InputUnit]) -> Iterator[_Chunk]:
        for unit in units:
            try:
                if unit.kind == "json":
                    yield self._document_chunk(unit)
                else:
                    yield from self._ndjson_chunks(unit)
            except IngestProblem as problem:
                yield _Chunk(unit, last=True, nbytes=0, work=None, payload=(), problem=problem)
            except OSError as exc:  # permissions, a vanished file, a device error
                problem = IngestProblem(
                    unit.name, f"cannot read: {exc.strerror or exc}", kind="unreadable"
                )
                yield _Chunk(unit, last=True, nbytes=0, work=None, payload=(), problem=problem)

    def _document_chunk(self, unit: InputUnit) -> _Chunk:
        with unit.open() as stream:
            data = read_limited(stream, self.options.max_document_bytes, unit.name)
        return _Chunk(
            unit, True, len(data), prepare_document, (data, unit.name, self.options.validation)
        )

    def _ndjson_chunks(self, unit: InputUnit) -> Iterator[_Chunk]:
        with unit.open() as stream:
            batch: list[tuple[int, bytes]] = []
            nbytes = 0
            for line_number, line in iter_ndjson_lines(
                stream, unit.name, self.options.max_line_bytes
            ):
                batch.append((line_number, line))
                nbytes += len(line)
                if len(batch) >= self.options.ndjson_chunk_lines:
                    work = (batch, unit.name, self.options.validation)
                    yield _Chunk(unit, False, nbytes, prepare_lines, work)
                    batch, nbytes = [], 0
            work = (batch, unit.name, self.options.validation)
            yield _Chunk(unit, True, nbytes, prepare_lines, work)

    # -- single units, as the HTTP API receives them ---------------------------------------

    def ingest_document(
        self, data: bytes, source: str
    ) -> list[tuple[tuple[str, str], WriteResult]]:
        """Load one JSON document atomically, in this process; raise IngestProblem to reject.

        Returns ((type, id), result) per entry, in entry order.
        """
        prepared = prepare_document(data, source, self.options.validation)
        if prepared.problems:
            raise prepared.problems[0]
        with self.store.transaction() as tx:
            written = _write_prepared(tx, prepared, source, "entry")
            _require_targets(tx, prepared.unresolved.targets, source, "entry")
            return written

    def ingest_ndjson(self, stream: BinaryIO, source: str) -> IngestReport:
        """Load one NDJSON stream atomically, in this process."""
        unit = InputUnit(source, "ndjson", None, lambda: _Unclosed(stream))
        report = IngestReport()
        started = time.perf_counter()
        chunks = self._chunks([unit])
        self._apply_all(((c, _completed(c)) for c in chunks), report, _Silent())
        report.seconds = time.perf_counter() - started
        return report


class _UnitWriter:
    """Applies the prepared chunks of one unit inside one transaction."""

    def __init__(self, store: ResourceStore, unit: InputUnit) -> None:
        self.unit = unit
        self.label = "line" if unit.kind == "ndjson" else "entry"
        self.tx: StoreTransaction | None = store.begin()
        self.results: list[tuple[str, WriteResult]] = []
        self.problems: list[IngestProblem] = []
        # references to resources outside the chunk that named them, checked at the unit's end
        self.targets: dict[tuple[str, str], Site] = {}
        self.warnings: list[IngestProblem] = []

    def apply(self, prepared: Prepared) -> int:
        if self.problems:
            return 0  # the unit is already rejected; later chunks are read but not written
        if prepared.problems:
            self._reject(prepared.problems)
            return 0
        assert self.tx is not None
        try:
            written = _write_prepared(self.tx, prepared, self.unit.name, self.label)
            for target, site in prepared.unresolved.targets.items():
                self.targets.setdefault(target, site)
            if len(self.targets) > PENDING_TARGETS_LIMIT:
                # keep memory bounded on huge files: settle what already exists now
                self.targets = missing_targets(self.targets, self.tx)
        except IngestProblem as problem:
            self._reject([problem])
            return 0
        self.results.extend((key[0], result) for key, result in written)
        self.warnings.extend(prepared.warnings)
        return len(written)

    def finish(self, report: IngestReport) -> None:
        if self.problems:
            report.rejected.extend(self.problems)
            return
        assert self.tx is not None
        try:
            _require_targets(self.tx, self.targets, self.unit.name, self.label)
        except IngestProblem as problem:
            self._reject([problem])
            report.rejected.append(problem)
            return
        self.tx.commit()
        self.tx = None
        report.units_loaded += 1
        report.add_warnings(self.warnings)
        for resource_type, result in self.results:
            report.count(resource_type, result.outcome)

    def abandon(self) -> None:
        if self.tx is not None:
            self.tx.rollback()
            self.tx = None

    def _reject(self, problems: list[IngestProblem]) -> None:
        self.problems = problems
        self.abandon()


def _write_prepared(
    tx: StoreTransaction, prepared: Prepared, source: str, label: str
) -> list[tuple[tuple[str, str], WriteResult]]:
    """Write one prepared chunk; references to other units are checked later by the caller."""
    if not prepared.keys:
        return []
    resolve_conditionals(prepared.conditional, prepared.unresolved, source, label, tx)
    records = [
        record if record is not None else _record_of(prepared.conditional[position], source, label)
        for position, record in enumerate(prepared.records)
    ]
    return list(zip(prepared.keys, tx.put_many(records), strict=True))


def _require_targets(
    tx: StoreTransaction, targets: dict[tuple[str, str], Site], source: str, label: str
) -> None:
    for target, site in missing_targets(targets, tx).items():
        raise dangling(target, site, source, label)


class _Done:
    """A result computed in this process, shaped like a Future."""

    def __init__(self, value: Prepared) -> None:
        self._value = value

    def result(self) -> Prepared:
        return self._value


def _completed(chunk: _Chunk) -> _Done:
    if chunk.work is None:
        return _Done(Prepared())
    return _Done(chunk.work(*chunk.payload))


class _Unclosed:
    """Lends a caller's stream to a unit without closing it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def __enter__(self) -> BinaryIO:
        return self._stream

    def __exit__(self, *_exc: object) -> None:
        return None
