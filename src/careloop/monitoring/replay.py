"""Replay a whole wearable export through the live monitoring path, as if it were arriving now.

Each person's samples go, in time order, through `Monitor.accept`: the quality checks, the
person's baselines and detectors, the day's totals and derived resting heart rate, and one
`AlertManager.consider` per closed person-day. The output is one row per person-day with data,
which is what an evaluation against labelled onsets (Welltory) or an alert-burden count (Fitbit)
needs. The smartwatch export is streamed person by person (its heart rate comes every few
seconds), the small exports are read whole.

A day's `score` is the largest of (a) the absolute robust deviation `|z|` of any daily signal
observed that day, counting only deviations that are plausible and no longer dominated by the
population prior (before that, a large z says nothing about this person), and (b) the evidence
level of any finding that passed the day's quality gate (1.0 = the detector's threshold). Both
are on a "how unusual" scale where larger means more so, so the maximum ranks days sensibly.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, tzinfo
from pathlib import Path
from typing import NamedTuple

from careloop.monitoring.alerts import AlertPolicy
from careloop.monitoring.importers import (
    ExportError,
    ImportReport,
    find_exports,
    read_fitbit,
    read_smartwatch_heart_rate,
    read_smartwatch_steps,
    read_welltory,
    smartwatch_persons,
)
from careloop.monitoring.monitor import DayOutcome, Monitor, bucket_time
from careloop.monitoring.signals import Sample


class ReplayRow(NamedTuple):
    """One person-day: how unusual it was, and whether a notification went out (1) or not."""

    person: str
    date: date
    score: float
    alert: int


@dataclass
class ReplayCounters:
    """What a run did: persons and person-days replayed, notifications sent, samples refused
    by the quality checks (by reason), and findings held back by the alert manager (by reason)."""

    persons: int = 0
    person_days: int = 0
    alerts: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)
    imports: dict[str, ImportReport] = field(default_factory=dict)


def replayable_exports(data_dir: Path) -> dict[str, Path]:
    """The Fitbit, Welltory and smartwatch exports DATA_DIR holds.

    Raises ExportError when the folder is missing, unreadable, or holds none of them."""
    found = find_exports(data_dir)
    if not found:
        raise ExportError(f"{data_dir}: no Fitbit, Welltory or smartwatch export found")
    return found


PersonSamples = Callable[[], Iterable[Sample]]


def replay(
    data_dir: Path,
    *,
    tz: tzinfo = UTC,
    limit_persons: int | None = None,
    counters: ReplayCounters | None = None,
    policy: AlertPolicy | None = None,
) -> Iterator[ReplayRow]:
    """Rows for every person-day in the exports under DATA_DIR, persons in sorted order.

    `counters` (optional) is filled in as the run goes (complete once the iterator is done).
    Export errors (a missing file, wrong columns) raise ExportError before any row is yielded."""
    counters = counters if counters is not None else ReplayCounters()
    sources = person_sources(data_dir, tz=tz, imports=counters.imports)
    persons = sorted(sources)[:limit_persons]
    yield from _replay_sources({p: sources[p] for p in persons}, tz, counters, policy)


def person_sources(
    data_dir: Path, *, tz: tzinfo = UTC, imports: dict[str, ImportReport] | None = None
) -> dict[str, PersonSamples]:
    """Per person, a way to read their samples in time order: the small exports read now, the
    smartwatch's files opened when the person's turn comes. `imports` gets each export's report."""
    exports = replayable_exports(data_dir)
    imports = imports if imports is not None else {}
    read_now: dict[str, list[Sample]] = defaultdict(list)
    sources: dict[str, PersonSamples] = {}
    for name, folder in exports.items():
        report = imports.setdefault(name, ImportReport())
        if name == "smartwatch":
            for code in smartwatch_persons(folder):
                sources[f"stanford-{code}"] = _smartwatch_reader(folder, code, report, tz)
            continue
        reader = read_fitbit if name == "fitbit" else read_welltory
        for sample in reader(folder, report, tz=tz):
            read_now[sample.person_id].append(sample)
    for person, samples in read_now.items():
        ordered = in_time_order(samples)
        sources[person] = lambda ordered=ordered: iter(ordered)
    return sources


def _smartwatch_reader(folder: Path, code: str, report: ImportReport, tz: tzinfo) -> PersonSamples:
    def read() -> Iterable[Sample]:
        streams: list[Iterable[Sample]] = []
        if (folder / f"{code}_hr.csv.zip").is_file():
            streams.append(read_smartwatch_heart_rate(folder, code, report, tz=tz))
        if (folder / f"{code}_steps.csv.zip").is_file():
            # minute steps: resting heart rate needs to know which minutes were step-free
            streams.append(read_smartwatch_steps(folder, code, report, period_minutes=1, tz=tz))
        return heapq.merge(*streams, key=bucket_time)

    return read


def replay_samples(
    by_person: dict[str, Sequence[Sample]],
    *,
    tz: tzinfo = UTC,
    counters: ReplayCounters | None = None,
    policy: AlertPolicy | None = None,
) -> Iterator[ReplayRow]:
    """Rows for the given samples (each person's in any order), persons in sorted order."""
    counters = counters if counters is not None else ReplayCounters()
    sources = {person: (lambda s=samples: s) for person, samples in by_person.items()}
    yield from _replay_sources(sources, tz, counters, policy)


def _replay_sources(
    sources: dict[str, PersonSamples],
    tz: tzinfo,
    counters: ReplayCounters,
    policy: AlertPolicy | None,
) -> Iterator[ReplayRow]:
    monitor = Monitor(policy, tz=tz)
    for person in sorted(sources):
        counters.persons += 1
        for outcome in _replay_person(monitor, sources[person]()):
            counters.person_days += 1
            counters.alerts += int(outcome.alert)
            yield ReplayRow(
                outcome.person, outcome.day, round(outcome.score, 4), int(outcome.alert)
            )
        monitor.persons.clear()  # one person at a time: only the alert manager carries over
    counters.refused = dict(monitor.counters.refused)
    counters.suppressed = {reason.value: n for reason, n in monitor.manager.suppressed.items()}


def in_time_order(samples: Iterable[Sample]) -> list[Sample]:
    """As the monitor must see them: by the moment that decides their day, ties stable."""
    return sorted(samples, key=lambda s: (bucket_time(s), s.signal.value, s.sample_id))


def _replay_person(monitor: Monitor, samples: Iterable[Sample]) -> Iterator[DayOutcome]:
    """The person's samples in time order, each once, then the last open day closed."""
    if not isinstance(samples, Iterator):  # a whole list in any order: sort it
        samples = in_time_order(samples)
    # A repeated reading has the same id and so the same time: in time order repeats are
    # neighbours, and only the ids at the current moment need remembering.
    moment = None
    ids_now: set[str] = set()
    for sample in samples:
        at = bucket_time(sample)
        if at != moment:
            moment, ids_now = at, set()
        if sample.sample_id in ids_now:
            continue
        ids_now.add(sample.sample_id)
        yield from monitor.accept(sample)
    yield from monitor.finish()
