"""Where input units come from: files, directories, `.gz`, `.tar(.gz)` and `.zip` archives.

A unit is one JSON document (a Bundle or a resource) or one NDJSON file, and it is ingested
atomically. Archives are checked end to end before anything from them is written, so a truncated
or corrupt archive is rejected as a whole instead of being half loaded.
"""

from __future__ import annotations

import gzip
import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from careloop.ingest.errors import IngestProblem

UnitKind = Literal["json", "ndjson"]
_READ_CHUNK = 1 << 20

# Files are loaded so that what others point at comes first and references resolve in one pass:
# a file is ranked by the resource type its name mentions (Bulk Data names files by type), and
# Synthea's hospital and practitioner bundles count as infrastructure.
_LOAD_RANKS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"organi[sz]ation|practitioner|location|hospital|medication\b|substance", re.I), 0),
    (re.compile(r"patient|relatedperson|group", re.I), 1),
    (re.compile(r"encounter|episodeofcare|device|coverage", re.I), 2),
    (re.compile(r"condition|allergy|procedure|servicerequest|careplan|goal", re.I), 3),
)


@dataclass(frozen=True)
class InputUnit:
    """One unit to ingest. `open` gives its decompressed bytes; `size` is for progress only."""

    name: str
    kind: UnitKind
    size: int | None
    open: Callable[[], AbstractContextManager[BinaryIO]]


def unit_kind(name: str) -> UnitKind | None:
    base = name.lower().removesuffix(".gz")
    if base.endswith((".ndjson", ".jsonl")):
        return "ndjson"
    if base.endswith(".json"):
        return "json"
    return None


def load_order(name: str) -> tuple[int, str]:
    leaf = name.rsplit("/", 1)[-1]
    for pattern, rank in _LOAD_RANKS:
        if pattern.search(leaf):
            return rank, name
    return len(_LOAD_RANKS), name


def _skippable(name: str) -> bool:
    """Hidden files and macOS resource forks; `./x.json`, as tar often names members, is not."""
    parts = [part for part in name.split("/") if part not in ("", ".", "..")]
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def plan_units(paths: list[Path]) -> tuple[list[InputUnit], list[str]]:
    """All units under the given paths, in load order, and the names of files skipped.

    Raises IngestProblem for a path that does not exist or an archive that is damaged, before any
    unit is handed out.
    """
    units: list[InputUnit] = []
    skipped: list[str] = []
    for path in paths:
        if not path.exists():
            raise IngestProblem(
                kind="unreadable", source=str(path), message="no such file or directory"
            )
        if path.is_dir():
            found = [p for p in sorted(path.rglob("*")) if p.is_file()]
            for file in sorted(found, key=lambda p: load_order(str(p.relative_to(path)))):
                if _skippable(str(file.relative_to(path))):
                    continue
                _plan_file(file, units, skipped)
        else:
            _plan_file(path, units, skipped)
    if not units:
        where = ", ".join(str(p) for p in paths)
        raise IngestProblem(
            where,
            f"no FHIR input found: no .json or .ndjson files ({len(skipped)} other files skipped)",
            kind="unreadable",
        )
    return units, skipped


def _plan_file(path: Path, units: list[InputUnit], skipped: list[str]) -> None:
    name = path.name.lower()
    if name.endswith(".zip"):
        units.extend(_zip_units(path, skipped))
    elif name.endswith((".tar", ".tar.gz", ".tgz")):
        units.extend(_tar_units(path, skipped))
    elif (kind := unit_kind(name)) is not None:
        units.append(_file_unit(path, kind))
    else:
        skipped.append(str(path))


def _file_unit(path: Path, kind: UnitKind) -> InputUnit:
    compressed = path.name.lower().endswith(".gz")

    def open_unit() -> AbstractContextManager[BinaryIO]:
        if compressed:
            return _GzipReader(str(path), path=path)
        return path.open("rb")

    return InputUnit(str(path), kind, path.stat().st_size * (6 if compressed else 1), open_unit)


class _GzipReader(gzip.GzipFile):
    """A gzip stream whose damage surfaces as an IngestProblem naming the unit."""

    def __init__(self, source: str, path: Path | None = None, fileobj: BinaryIO | None = None):
        super().__init__(filename=str(path) if path else None, mode="rb", fileobj=fileobj)
        self._source = source

    def read(self, size: int = -1) -> bytes:
        try:
            return super().read(size)
        except (EOFError, OSError, zlib.error) as exc:
            raise _damaged_gzip(self._source, exc) from None

    def readline(self, size: int | None = -1) -> bytes:
        try:
            return super().readline(size)
        except (EOFError, OSError, zlib.error) as exc:
            raise _damaged_gzip(self._source, exc) from None


def _damaged_gzip(source: str, exc: BaseException) -> IngestProblem:
    return IngestProblem(source, f"damaged gzip stream: {exc}", kind="unreadable")


def _zip_units(path: Path, skipped: list[str]) -> list[InputUnit]:
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            infos = [info for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise IngestProblem(
            kind="unreadable", source=str(path), message=f"damaged zip archive: {exc}"
        ) from None
    if damaged is not None:
        raise IngestProblem(
            kind="unreadable",
            source=str(path),
            message=f"damaged zip archive: member {damaged} fails its CRC",
        )
    units = []
    for info in sorted(infos, key=lambda i: load_order(i.filename)):
        kind = unit_kind(info.filename)
        display = f"{path}!{info.filename}"
        if kind is None or _skippable(info.filename):
            skipped.append(display)
            continue
        units.append(InputUnit(display, kind, info.file_size, _zip_opener(path, info.filename)))
    return units


def _zip_opener(path: Path, member: str) -> Callable[[], AbstractContextManager[BinaryIO]]:
    def open_member() -> AbstractContextManager[BinaryIO]:
        return _ZipMember(path, member)

    return open_member


class _ZipMember:
    def __init__(self, path: Path, member: str) -> None:
        self._archive = zipfile.ZipFile(path)
        self._member = member
        self._name = f"{path}!{member}"

    def __enter__(self) -> BinaryIO:
        stream = self._archive.open(self._member)
        if self._member.lower().endswith(".gz"):
            return _GzipReader(self._name, fileobj=stream)  # type: ignore[arg-type,return-value]
        return stream  # type: ignore[return-value]

    def __exit__(self, *_exc: object) -> None:
        self._archive.close()


def _tar_units(path: Path, skipped: list[str]) -> list[InputUnit]:
    """Check the whole archive, then plan one unit per member, read in archive order."""
    members = _scan_tar(path)
    units = []
    for index, (member_name, size) in enumerate(members):
        kind = unit_kind(member_name)
        display = f"{path}!{member_name}"
        if kind is None or _skippable(member_name):
            skipped.append(display)
            continue
        units.append(InputUnit(display, kind, size, _TarCursor.opener(path, index)))
    return units


def _scan_tar(path: Path) -> list[tuple[str, int]]:
    members: list[tuple[str, int]] = []
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                while handle.read(_READ_CHUNK):
                    pass
                members.append((member.name, member.size))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise IngestProblem(
            kind="unreadable", source=str(path), message=f"damaged tar archive: {exc}"
        ) from None
    return members


class _TarCursor:
    """Reads members of one tar stream in order, without decompressing the archive twice more.

    Units from a tar archive are opened in the order they were planned; the cursor keeps the
    stream open between them and only restarts it if asked to go backwards.
    """

    _open: dict[Path, _TarCursor] = {}

    def __init__(self, path: Path) -> None:
        self.path = path
        # kept open across units on purpose: each later unit continues the same stream
        self._archive = tarfile.open(path, mode="r|*")  # noqa: SIM115
        self._members = iter(self._archive)
        self._position = -1

    @classmethod
    def opener(cls, path: Path, index: int) -> Callable[[], AbstractContextManager[BinaryIO]]:
        def open_member() -> AbstractContextManager[BinaryIO]:
            cursor = cls._open.get(path)
            if cursor is None or cursor._position >= index:
                if cursor is not None:
                    cursor.close()
                cursor = cls._open[path] = cls(path)
            return cursor.advance_to(index)

        return open_member

    def advance_to(self, index: int) -> AbstractContextManager[BinaryIO]:
        for member in self._members:
            if not member.isfile():
                continue
            self._position += 1
            if self._position == index:
                handle = self._archive.extractfile(member)
                assert handle is not None
                if member.name.lower().endswith(".gz"):
                    name = f"{self.path}!{member.name}"
                    return _GzipReader(name, fileobj=handle)  # type: ignore[arg-type,return-value]
                return handle  # type: ignore[return-value]
        raise IngestProblem(
            str(self.path),
            f"member {index} vanished since the archive was checked",
            kind="unreadable",
        )

    def close(self) -> None:
        self._archive.close()
        _TarCursor._open.pop(self.path, None)

    @classmethod
    def close_all(cls) -> None:
        for cursor in list(cls._open.values()):
            cursor.close()


def close_open_archives() -> None:
    _TarCursor.close_all()
