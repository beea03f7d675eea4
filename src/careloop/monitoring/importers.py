"""Readers of real wearable exports into Samples.

Every reader is a generator that reads its files row by row (Stanford zips are decompressed as a
stream), so memory stays small whatever the export's size. Rows that cannot become a sample are
counted by reason in an `ImportReport`, never dropped silently; the same quality checks as live
data (`check_sample`) apply, so an import cannot bring in an impossible value.

The exports hold local wall-clock times without a zone; `tz` says which zone to read them in
(UTC unless told), since the publishers do not record it.
"""

from __future__ import annotations

import csv
import io
import math
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path

from careloop.monitoring.quality import check_sample
from careloop.monitoring.signals import Sample, Signal

FITBIT_TIME = "%m/%d/%Y %I:%M:%S %p"


class ExportError(ValueError):
    """An export that cannot be read at all (missing file, wrong columns)."""


# a file only that vendor's export holds, by which a folder is recognised
EXPORT_MARKERS = {"fitbit": "hourlySteps_merged.csv", "welltory": "wearables.csv"}


def find_exports(data_dir: Path) -> dict[str, Path]:
    """The exports DATA_DIR holds ("fitbit", "welltory", "smartwatch"): itself one export, or
    the wearables folder holding several. ExportError when it is missing or unreadable."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ExportError(f"{data_dir}: no such folder")
    found: dict[str, Path] = {}
    try:
        for folder in (data_dir, *sorted(p for p in data_dir.iterdir() if p.is_dir())):
            for name, marker in EXPORT_MARKERS.items():
                if (folder / marker).is_file():
                    found.setdefault(name, folder)
            if any(folder.glob("*_hr.csv.zip")) or any(folder.glob("*_steps.csv.zip")):
                found.setdefault("smartwatch", folder)
    except OSError as error:
        raise ExportError(f"{data_dir}: cannot be read ({error.strerror})") from None
    return found


@dataclass
class ImportReport:
    """What one import produced and what it left out, by reason."""

    samples: Counter[str] = field(default_factory=Counter)  # by signal
    persons: set[str] = field(default_factory=set)
    skipped: Counter[str] = field(default_factory=Counter)  # by reason

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def kept(self, sample: Sample) -> None:
        self.samples[sample.signal.value] += 1
        self.persons.add(sample.person_id)

    @property
    def total(self) -> int:
        return sum(self.samples.values())


class _Filter:
    """Applies quality checks and de-duplication by sample id, counting what it drops."""

    def __init__(self, report: ImportReport, now: datetime | None = None) -> None:
        self.report = report
        self.now = now or datetime.now(UTC)
        self.seen: set[str] = set()

    def accept(self, sample: Sample, dedupe: bool = False) -> bool:
        reason = check_sample(sample, self.now)
        if reason is not None:
            self.report.skip(f"implausible {sample.signal.value}")
            return False
        if dedupe:
            if sample.sample_id in self.seen:
                self.report.skip(f"duplicate {sample.signal.value}")
                return False
            self.seen.add(sample.sample_id)
        self.report.kept(sample)
        return True


def _number(text: str | None) -> float | None:
    """A finite number, or None for an empty or unreadable cell."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[dict[str, str]]:
    if not path.is_file():
        raise ExportError(f"{path.name}: file not found in {path.parent}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in required if name not in (reader.fieldnames or [])]
        if missing:
            raise ExportError(f"{path.name}: missing column(s) {', '.join(missing)}")
        yield from reader


# --- Fitbit (Fitabase 2016) --------------------------------------------------------------------


def _fitbit_time(text: str, tz: tzinfo) -> datetime | None:
    try:
        return datetime.strptime(text.strip(), FITBIT_TIME).replace(tzinfo=tz)
    except ValueError:
        return None


def read_fitbit(
    directory: Path, report: ImportReport | None = None, *, tz: tzinfo = UTC
) -> Iterator[Sample]:
    """Hourly steps, daily sleep minutes and logged weight from a Fitabase export."""
    report = report if report is not None else ImportReport()
    keep = _Filter(report)
    specs = (
        ("hourlySteps_merged.csv", "ActivityHour", "StepTotal", Signal.STEPS, 60),
        ("sleepDay_merged.csv", "SleepDay", "TotalMinutesAsleep", Signal.SLEEP_MINUTES, 1440),
        ("weightLogInfo_merged.csv", "Date", "WeightKg", Signal.WEIGHT, None),
    )
    for name, time_column, value_column, signal, period in specs:
        rows = _csv_rows(Path(directory) / name, ("Id", time_column, value_column))
        for row in rows:
            sample = _fitbit_sample(row, time_column, value_column, signal, period, tz, report)
            if sample is not None and keep.accept(sample, dedupe=True):
                yield sample


def _fitbit_sample(
    row: dict[str, str],
    time_column: str,
    value_column: str,
    signal: Signal,
    period: int | None,
    tz: tzinfo,
    report: ImportReport,
) -> Sample | None:
    person = (row.get("Id") or "").strip()
    time = _fitbit_time(row.get(time_column) or "", tz)
    value = _number(row.get(value_column))
    if not person.isdigit():
        report.skip("no person id")
        return None
    if time is None:
        report.skip(f"unreadable time ({signal.value})")
        return None
    if value is None:
        report.skip(f"no value ({signal.value})")
        return None
    person_id = f"fitbit-{person}"
    return Sample(
        person_id=person_id,
        signal=signal,
        time=time,
        value=value,
        sample_id=f"{person_id}-{signal.value}-{time.isoformat()}",
        source="fitbit-export",
        period_minutes=period,
    )


# --- Welltory COVID-19 HRV ---------------------------------------------------------------------

_WELLTORY_DAILY = (
    ("resting_pulse", Signal.RESTING_HEART_RATE, None),
    ("steps_count", Signal.STEPS, 1440),
    ("average_spo2_value", Signal.SPO2, None),
)
_USER_CODE = re.compile(r"^[0-9a-f]{6,32}$")


def _welltory_person(row: dict[str, str], report: ImportReport) -> str | None:
    code = (row.get("user_code") or "").strip()
    if not _USER_CODE.match(code):
        report.skip("no person id")
        return None
    return f"welltory-{code}"


def _parse(text: str | None, tz: tzinfo) -> datetime | None:
    """Welltory writes 'YYYY-MM-DD', 'YYYY-MM-DD HH:MM:SS', sometimes with two spaces."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(" ".join(text.split()))
    except ValueError:
        return None
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment


def read_welltory(
    directory: Path, report: ImportReport | None = None, *, tz: tzinfo = UTC
) -> Iterator[Sample]:
    """Daily resting pulse, steps and SpO2, sleep episodes and HRV rmssd from Welltory."""
    report = report if report is not None else ImportReport()
    keep = _Filter(report)
    directory = Path(directory)
    for sample in _welltory_daily(directory / "wearables.csv", tz, report):
        if keep.accept(sample, dedupe=True):
            yield sample
    for sample in _welltory_sleep(directory / "sleep.csv", tz, report):
        if keep.accept(sample, dedupe=True):
            yield sample
    for sample in _welltory_hrv(directory / "hrv_measurements.csv", tz, report):
        if keep.accept(sample, dedupe=True):
            yield sample


def _welltory_daily(path: Path, tz: tzinfo, report: ImportReport) -> Iterator[Sample]:
    """One row per person and day; an empty cell just means the device did not measure it."""
    for row in _csv_rows(path, ("user_code", "day")):
        person_id = _welltory_person(row, report)
        day = _parse(row.get("day"), tz)
        if person_id is None:
            continue
        if day is None:
            report.skip("unreadable time (daily summary)")
            continue
        for column, signal, period in _WELLTORY_DAILY:
            cell = row.get(column)
            value = _number(cell)
            if value is None:
                if cell and cell.strip():
                    report.skip(f"unreadable value ({signal.value})")
                continue
            if signal is Signal.SPO2 and 0 < value <= 1:
                value = round(value * 100, 1)  # this export writes SpO2 as a fraction (0.96)
            yield Sample(
                person_id=person_id,
                signal=signal,
                time=day,
                value=value,
                sample_id=f"{person_id}-{signal.value}-{day.date().isoformat()}",
                source="welltory-export",
                period_minutes=period,
            )


def _welltory_sleep(path: Path, tz: tzinfo, report: ImportReport) -> Iterator[Sample]:
    """Sleep episodes (a day may hold a night and a nap): minutes asleep over the episode."""
    for row in _csv_rows(path, ("user_code", "sleep_begin", "sleep_duration")):
        person_id = _welltory_person(row, report)
        begin = _parse(row.get("sleep_begin"), tz)
        seconds = _number(row.get("sleep_duration"))
        if person_id is None:
            continue
        if begin is None:
            report.skip("unreadable time (sleep-minutes)")
            continue
        if seconds is None or seconds <= 0:
            report.skip("no value (sleep-minutes)")
            continue
        minutes = seconds / 60
        yield Sample(
            person_id=person_id,
            signal=Signal.SLEEP_MINUTES,
            time=begin,
            value=round(minutes, 1),
            sample_id=f"{person_id}-sleep-{begin.isoformat()}",
            source="welltory-export",
            period_minutes=max(1, round(minutes)),
        )


def _welltory_hrv(path: Path, tz: tzinfo, report: ImportReport) -> Iterator[Sample]:
    for row in _csv_rows(path, ("user_code", "measurement_datetime", "rmssd")):
        person_id = _welltory_person(row, report)
        time = _parse(row.get("measurement_datetime"), tz)
        value = _number(row.get("rmssd"))
        if person_id is None:
            continue
        if time is None:
            report.skip("unreadable time (hrv-rmssd)")
            continue
        if value is None:
            report.skip("no value (hrv-rmssd)")
            continue
        measurement = (row.get("rr_code") or "").strip() or time.isoformat()
        yield Sample(
            person_id=person_id,
            signal=Signal.HRV_RMSSD,
            time=time,
            value=value,
            sample_id=f"{person_id}-hrv-{measurement}",
            source="welltory-export",
        )


def welltory_onsets(directory: Path) -> dict[str, date]:
    """Symptom onset per participant (`welltory-<code>`), from participants.csv (M/D/YYYY)."""
    onsets: dict[str, date] = {}
    rows = _csv_rows(Path(directory) / "participants.csv", ("user_code", "symptoms_onset"))
    for row in rows:
        text = (row.get("symptoms_onset") or "").strip()
        code = (row.get("user_code") or "").strip()
        if not text or not _USER_CODE.match(code):
            continue
        try:
            onsets[f"welltory-{code}"] = datetime.strptime(text, "%m/%d/%Y").date()
        except ValueError:
            raise ExportError(
                f"participants.csv: symptoms_onset {text!r} is not M/D/YYYY"
            ) from None
    return onsets


# --- Stanford smartwatch (COVID-19 wearables study) --------------------------------------------


def smartwatch_persons(directory: Path) -> list[str]:
    """Person codes with a heart-rate or steps file, sorted."""
    names = {p.name.split("_", 1)[0] for p in Path(directory).glob("*_*.csv.zip")}
    return sorted(names)


def _zip_rows(path: Path, value_column: str) -> Iterator[tuple[str, str]]:
    """(datetime text, value text) per row, decompressed as a stream."""
    if not path.is_file():
        raise ExportError(f"{path.name}: file not found in {path.parent}")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ExportError(f"{path.name}: not a readable zip archive") from None
    with archive:
        members = [m for m in archive.namelist() if m.endswith(".csv")]
        if len(members) != 1:
            raise ExportError(f"{path.name}: expected one CSV inside, found {len(members)}")
        with archive.open(members[0]) as raw:
            reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
            header = next(reader, [])
            if "datetime" not in header or value_column not in header:
                raise ExportError(f"{path.name}: missing column datetime or {value_column}")
            at, value_at = header.index("datetime"), header.index(value_column)
            for row in reader:
                if len(row) <= max(at, value_at):
                    yield "", ""
                    continue
                yield row[at], row[value_at]


def _timestamp(text: str, tz: tzinfo) -> datetime | None:
    try:
        return datetime.fromisoformat(text).replace(tzinfo=tz)
    except ValueError:
        return None


def read_smartwatch_heart_rate(
    directory: Path, person: str, report: ImportReport | None = None, *, tz: tzinfo = UTC
) -> Iterator[Sample]:
    """Heart rate as recorded (about every 5-15 s) from `<person>_hr.csv.zip`."""
    report = report if report is not None else ImportReport()
    keep = _Filter(report)
    person_id = f"stanford-{person}"
    for text, value_text in _zip_rows(Path(directory) / f"{person}_hr.csv.zip", "heartrate"):
        time = _timestamp(text, tz)
        value = _number(value_text)
        if time is None:
            report.skip("unreadable time (heart-rate)")
            continue
        if value is None:
            report.skip("no value (heart-rate)")
            continue
        sample = Sample(
            person_id=person_id,
            signal=Signal.HEART_RATE,
            time=time,
            value=value,
            sample_id=f"{person_id}-hr-{text}",
            source="stanford-smartwatch",
        )
        if keep.accept(sample):
            yield sample


def read_smartwatch_steps(
    directory: Path,
    person: str,
    report: ImportReport | None = None,
    *,
    period_minutes: int = 60,
    tz: tzinfo = UTC,
) -> Iterator[Sample]:
    """Steps from `<person>_steps.csv.zip` summed per `period_minutes` (1 keeps minutes).

    The file is in time order, so each period is emitted when the next one starts; a row out
    of order is counted and left out rather than re-opening a period already emitted."""
    report = report if report is not None else ImportReport()
    keep = _Filter(report)
    person_id = f"stanford-{person}"
    current: datetime | None = None
    total = 0.0
    path = Path(directory) / f"{person}_steps.csv.zip"
    for text, value_text in _zip_rows(path, "steps"):
        time = _timestamp(text, tz)
        value = _number(value_text)
        if time is None:
            report.skip("unreadable time (steps)")
            continue
        if value is None or value < 0:
            report.skip("no value (steps)")
            continue
        start = _period_start(time, period_minutes)
        if current is not None and start < current:
            report.skip("out of time order (steps)")
            continue
        if current is not None and start != current:
            sample = _steps_sample(person_id, current, total, period_minutes)
            if keep.accept(sample):
                yield sample
            total = 0.0
        current = start
        total += value
    if current is not None:
        sample = _steps_sample(person_id, current, total, period_minutes)
        if keep.accept(sample):
            yield sample


def _period_start(time: datetime, period_minutes: int) -> datetime:
    minute_of_day = time.hour * 60 + time.minute
    start = minute_of_day - minute_of_day % period_minutes
    return time.replace(hour=start // 60, minute=start % 60, second=0, microsecond=0)


def _steps_sample(person_id: str, start: datetime, total: float, period: int) -> Sample:
    return Sample(
        person_id=person_id,
        signal=Signal.STEPS,
        time=start,
        value=total,
        sample_id=f"{person_id}-steps-{period}m-{start.isoformat()}",
        source="stanford-smartwatch",
        period_minutes=period,
    )


def read_smartwatch(
    directory: Path,
    report: ImportReport | None = None,
    *,
    persons: Iterable[str] | None = None,
    tz: tzinfo = UTC,
) -> Iterator[Sample]:
    """Heart rate as recorded and hourly steps for each person (all unless `persons`)."""
    report = report if report is not None else ImportReport()
    directory = Path(directory)
    for person in persons if persons is not None else smartwatch_persons(directory):
        if (directory / f"{person}_hr.csv.zip").is_file():
            yield from read_smartwatch_heart_rate(directory, person, report, tz=tz)
        if (directory / f"{person}_steps.csv.zip").is_file():
            yield from read_smartwatch_steps(directory, person, report, tz=tz)
