"""Ingest benchmark: Synthea R4 into SQLite and PostgreSQL, with validation and encryption on/off.

    .venv/bin/python -m bench.ingest                    # the full set; writes docs/benchmarks.md
    .venv/bin/python -m bench.ingest --limit-files 20   # a quick partial run, marked as such

Every configuration runs in a fresh subprocess on a fresh database, so peak memory belongs to one
configuration, and the configurations are interleaved (each repeat in the opposite order) so that
a noisy neighbour slows all of them rather than one. Costs are given as ratios of rates measured
side by side in the same run; the published figures of other servers are not side by side.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import sqlalchemy

if not __package__:  # run as `python bench/ingest.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.doc_sections import replace_section  # noqa: E402
from bench.machine import load_average, machine_facts  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "synthea_r4" / "synthea_r4.tar.gz"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_OUT = REPO_ROOT / "docs" / "benchmarks.md"
RAW_OUT = REPO_ROOT / "bench" / "out" / "ingest.json"
CHILD = Path(__file__).resolve().with_name("ingest_child.py")
SECTION = "ingest"

RSS_SAMPLE_SECONDS = 0.1
# Reading PSS (smaps_rollup) costs ~5 ms per process; every 0.1 s it would steal CPU from the
# run it measures, so it is read once a second.
PSS_EVERY_N_SAMPLES = 10

TARGET_RATE = 10_000  # resources/s into SQLite with everything on, on a 2-core machine
PUBLISHED_RATES = {"Aidbox": 2678, "HAPI FHIR": 2214, "Medplum": 764}
SHARED_BUNDLES = ("hospitalInformation", "practitionerInformation")
# Above this 1-minute load per CPU before the first run, other work competes with the benchmark.
BUSY_LOAD_PER_CPU = 0.25

# name -> (validation mode, encrypt). "fast": the compiled structure check, fhir.resources for
# whatever it does not prove valid (the default); "library": fhir.resources for every resource.
CONFIGS: dict[str, tuple[str, bool]] = {
    "all-on": ("fast", True),
    "library-validation": ("library", True),
    "no-validation": ("off", True),
    "no-encryption": ("fast", False),
    "both-off": ("off", False),
}
BACKENDS = ("sqlite", "postgresql")


class BenchError(Exception):
    """The benchmark cannot produce honest figures; the message says why."""


@dataclass(frozen=True)
class Config:
    backend: str
    name: str

    @property
    def validation(self) -> str:
        return CONFIGS[self.name][0]

    @property
    def encrypt(self) -> bool:
        return CONFIGS[self.name][1]

    def __str__(self) -> str:
        return f"{self.backend} {self.name}"


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    summary = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=summary)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Synthea R4 .tar.gz or dir")
    parser.add_argument("--limit-files", type=int, metavar="N", help="only the first N bundles")
    parser.add_argument(
        "--backends", type=_names(BACKENDS), default=list(BACKENDS), help=", ".join(BACKENDS)
    )
    parser.add_argument(
        "--configs", type=_names(tuple(CONFIGS)), default=list(CONFIGS), help=", ".join(CONFIGS)
    )
    parser.add_argument(
        "--workers", type=int, default=_default_workers(), help="validation processes"
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians are reported")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--tmpdir", type=Path, help="where SQLite files and extracts go")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only; write no file")
    args = parser.parse_args(argv)
    if args.limit_files is not None and args.limit_files <= len(SHARED_BUNDLES):
        parser.error(f"--limit-files must be more than {len(SHARED_BUNDLES)} (the shared bundles)")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _names(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = sorted(set(names) - set(allowed))
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return [n for n in allowed if n in names]  # a fixed order keeps tables comparable

    return parse


def _default_workers() -> int:
    from careloop.ingest import IngestOptions  # the pipeline's own default, whatever it becomes

    return IngestOptions().workers


def command_line(argv: list[str]) -> str:
    """The command as typed from the repository root, for the reader to reproduce."""
    python = Path(sys.executable)
    if python.is_relative_to(REPO_ROOT):
        python = python.relative_to(REPO_ROOT)
    entry = ["-m", "bench.ingest"] if __spec__ is not None else ["bench/ingest.py"]
    return shlex.join([str(python), *entry, *argv])


# -- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    paths: list[Path]  # what the ingest is given
    bundles_used: int
    bundles_total: int


def select_bundles(data: Path, limit: int | None, scratch: Path) -> Selection:
    if data.is_dir():
        return _select_from_dir(data, limit)
    if not tarfile.is_tarfile(data):
        raise BenchError(f"{data} is neither a tar archive nor a directory")
    if limit is None:
        total = len(_tar_bundle_names(data))
        return Selection([data], total, total)
    target = scratch / "bundles"
    target.mkdir()
    total = _extract_first(data, limit, target)
    return Selection([target], len(list(target.iterdir())), total)


def _is_bundle(name: str) -> bool:
    return name.lower().endswith(".json") and not Path(name).name.startswith(".")


def _is_shared(name: str) -> bool:
    return Path(name).name.startswith(SHARED_BUNDLES)


def _select_from_dir(data: Path, limit: int | None) -> Selection:
    bundles = sorted(p for p in data.rglob("*.json") if _is_bundle(p.name))
    if limit is None:
        return Selection([data], len(bundles), len(bundles))
    shared = [p for p in bundles if _is_shared(p.name)]
    others = [p for p in bundles if not _is_shared(p.name)]
    chosen = shared + others[: limit - len(shared)]
    return Selection(chosen, len(chosen), len(bundles))


def _tar_bundle_names(archive: Path) -> list[str]:
    with tarfile.open(archive, mode="r:*") as tar:
        return [m.name for m in tar.getmembers() if m.isfile() and _is_bundle(m.name)]


def _extract_first(archive: Path, limit: int, target: Path) -> int:
    """Extract the shared bundles and the first patient bundles in archive order; count all.

    One streaming pass: the shared bundles may sit anywhere in the archive. Members are written
    under their base name only, so no member can write outside `target`.
    """
    patients_wanted = limit - len(SHARED_BUNDLES)
    total = patients = 0
    with tarfile.open(archive, mode="r|*") as tar:
        for member in tar:
            if not (member.isfile() and _is_bundle(member.name)):
                continue
            total += 1
            shared = _is_shared(member.name)
            if shared or patients < patients_wanted:
                patients += 0 if shared else 1
                _write_member(tar, member, target)
    return total


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = tar.extractfile(member)
    assert source is not None
    with source, (target / Path(member.name).name).open("wb") as sink:
        shutil.copyfileobj(source, sink)


def describe_data(data: Path) -> dict[str, object]:
    facts: dict[str, object] = {"path": str(data), "name": data.name}
    if data.is_file():
        facts["sha256"] = _sha256(data)
        facts["sha256_listed"] = _listed_sha256(data)
        facts["bytes"] = data.stat().st_size
    return facts


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _listed_sha256(data: Path) -> str | None:
    """The checksum SHA256SUMS.txt (in an ancestor directory of the data) gives for this file."""
    for folder in data.resolve().parents:
        sums = folder / "SHA256SUMS.txt"
        if sums.is_file():
            relative = data.resolve().relative_to(folder).as_posix()
            for line in sums.read_text(encoding="utf-8").splitlines():
                digest, _, name = line.partition("  ")
                if name.strip().removeprefix("./") == relative:
                    return digest.strip()
    return None


# -- databases ---------------------------------------------------------------------------------


@contextmanager
def fresh_database(backend: str, postgres_url: str, scratch: Path) -> Iterator[str]:
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="sqlite-", dir=scratch))
        try:
            yield f"sqlite:///{folder / 'store.db'}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        with _fresh_schema(postgres_url) as url:
            yield url


@contextmanager
def _fresh_schema(postgres_url: str) -> Iterator[str]:
    schema = f"careloop_bench_{secrets.token_hex(6)}"
    admin = sqlalchemy.create_engine(postgres_url)
    try:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
        separator = "&" if "?" in postgres_url else "?"
        yield f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def postgres_version(postgres_url: str) -> str:
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(sqlalchemy.text("SHOW server_version")).scalar_one())
    except sqlalchemy.exc.OperationalError as exc:
        raise BenchError(
            f"PostgreSQL is not reachable at {postgres_url} ({exc.orig}); "
            "pass --postgres-url, or --backends sqlite"
        ) from None
    finally:
        engine.dispose()


def filesystem_of(path: Path) -> str:
    """SQLite speed depends on what it writes to (tmpfs never waits for a disk)."""
    resolved = path.resolve()
    mounts = [p for p in psutil.disk_partitions(all=True) if resolved.is_relative_to(p.mountpoint)]
    best = max(mounts, key=lambda p: len(p.mountpoint), default=None)
    return f"{best.fstype} ({best.mountpoint})" if best else "unknown"


# -- one configuration -------------------------------------------------------------------------


@dataclass
class MemoryPeak:
    rss: int = 0
    pss: int = 0
    samples: int = 0

    def sample(self, root: psutil.Process) -> None:
        with_pss = self.samples % PSS_EVERY_N_SAMPLES == 0
        rss, pss = _tree_memory(root, with_pss)
        self.rss = max(self.rss, rss)
        self.pss = max(self.pss, pss)
        self.samples += 1


def _tree_memory(root: psutil.Process, with_pss: bool) -> tuple[int, int]:
    """Summed RSS, and summed PSS when asked (it is what the tree really holds).

    Forked workers share their parent's pages: summed RSS counts those once in every process,
    PSS splits them between the processes that share them.
    """
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    rss = pss = 0
    for process in processes:
        try:
            if with_pss:
                info = process.memory_full_info()
                rss, pss = rss + info.rss, pss + info.pss
            else:
                rss += process.memory_info().rss
        except psutil.Error:
            continue  # a worker that exits between listing and reading
    return rss, pss


def run_config(config: Config, url: str, paths: list[Path], workers: int, scratch: Path) -> dict:
    result_file = scratch / f"result-{secrets.token_hex(4)}.json"
    spec = {
        "url": url,
        "data": [str(p) for p in paths],
        "validation": config.validation,
        "encrypt": config.encrypt,
        "workers": workers,
        "out": str(result_file),
    }
    child = subprocess.Popen([sys.executable, str(CHILD), json.dumps(spec)])
    peak = _watch(child)
    if child.returncode != 0:
        raise BenchError(
            f"{config}: the ingest process exited with code {child.returncode} (traceback above)"
        )
    result = json.loads(result_file.read_text(encoding="utf-8"))
    result_file.unlink()
    result["peak_tree_rss_mib"] = peak.rss / 2**20
    result["peak_tree_pss_mib"] = peak.pss / 2**20
    _check_accepted(config, result)
    return result


def _watch(child: subprocess.Popen[bytes]) -> MemoryPeak:
    peak = MemoryPeak()
    root = psutil.Process(child.pid)
    while child.poll() is None:
        peak.sample(root)
        time.sleep(RSS_SAMPLE_SECONDS)
    return peak


def _check_accepted(config: Config, result: dict) -> None:
    """A rate over rejected input measures the rejecting, not the ingest: refuse to report it."""
    if result["rejected"] or result["resources"] == 0:
        problems = result["report"]["rejected"][:5]
        raise BenchError(
            f"{config}: {result['rejected']} unit(s) rejected, {result['resources']} resources "
            f"accepted; first problems: {json.dumps(problems, indent=2)}"
        )


# -- the whole run -----------------------------------------------------------------------------


def schedule(backends: list[str], configs: list[str], repeat: int) -> list[tuple[int, Config]]:
    """Interleave backends and configurations; reverse every other round to cancel drift."""
    order = [Config(backend, name) for name in configs for backend in backends]
    return [
        (round_, config)
        for round_ in range(repeat)
        for config in (order if round_ % 2 == 0 else order[::-1])
    ]


def run_all(args: argparse.Namespace, paths: list[Path], scratch: Path) -> list[dict]:
    runs = []
    plan = schedule(args.backends, args.configs, args.repeat)
    for number, (round_, config) in enumerate(plan, start=1):
        with fresh_database(config.backend, args.postgres_url, scratch) as url:
            result = run_config(config, url, paths, args.workers, scratch)
        runs.append({"round": round_, "backend": config.backend, "config": config.name, **result})
        _print_progress(number, len(plan), config, result)
    _check_same_count(runs)
    return runs


def _print_progress(number: int, total: int, config: Config, result: dict) -> None:
    print(
        f"[{number}/{total}] {config}: {result['resources']:,} resources in "
        f"{result['seconds']:.1f} s = {result['resources_per_second']:,.0f}/s, "
        f"peak RSS {result['peak_tree_rss_mib']:,.0f} MiB",
        file=sys.stderr,
        flush=True,
    )


def _check_same_count(runs: list[dict]) -> None:
    counts = {run["resources"] for run in runs}
    if len(counts) != 1:
        raise BenchError(f"configurations accepted different resource counts: {sorted(counts)}")


# -- figures -----------------------------------------------------------------------------------


def medians(runs: list[dict], backend: str, config: str) -> dict[str, float] | None:
    chosen = [r for r in runs if r["backend"] == backend and r["config"] == config]
    if not chosen:
        return None
    keys = (
        "resources",
        "seconds",
        "resources_per_second",
        "peak_tree_rss_mib",
        "peak_tree_pss_mib",
        "main_maxrss_mib",
        "worker_maxrss_mib",
    )
    return {key: statistics.median(r[key] for r in chosen) for key in keys}


def paired_ratio(runs: list[dict], top: tuple[str, str], bottom: tuple[str, str]) -> float | None:
    """Median over rounds of rate(top) / rate(bottom), each pair measured in the same round."""
    rates: dict[tuple[int, str, str], float] = {
        (r["round"], r["backend"], r["config"]): r["resources_per_second"] for r in runs
    }
    ratios = [
        rates[(round_, *top)] / rates[(round_, *bottom)]
        for round_ in sorted({r["round"] for r in runs})
        if (round_, *top) in rates and (round_, *bottom) in rates and rates[(round_, *bottom)]
    ]
    return statistics.median(ratios) if ratios else None


def summarize(runs: list[dict], backends: list[str], configs: list[str]) -> dict:
    return {
        "medians": {f"{b} {c}": medians(runs, b, c) for b in backends for c in configs},
        "cost": {
            backend: {
                name: paired_ratio(runs, (backend, name), (backend, "all-on"))
                for name in configs
                if name != "all-on"
            }
            for backend in backends
        },
        "sqlite_over_postgresql": {
            name: paired_ratio(runs, ("sqlite", name), ("postgresql", name)) for name in configs
        },
    }


# -- the report --------------------------------------------------------------------------------


def _x(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def render(context: dict) -> str:
    parts = [
        "## Ingest",
        _scope_note(context),
        _busy_note(context),
        _how_section(context),
        _results_table(context),
        _cost_section(context),
        _comparison_section(context),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _scope_note(context: dict) -> str:
    limit = context["args"]["limit_files"]
    resources = context["resources"]
    if limit is None:
        return f"Whole data set: {context['bundles_used']:,} bundles, {resources:,} resources."
    return (
        f"> **Partial run, not the full-set figures:** `--limit-files {limit}`, "
        f"{context['bundles_used']} of {context['bundles_total']} bundles, {resources:,} "
        f"resources, repeat {context['args']['repeat']}, read from an extracted folder rather than "
        "the archive. Small inputs overstate fixed costs such as worker start-up; rerun without "
        "`--limit-files` on an idle machine for the figures that count."
    )


def _busy_note(context: dict) -> str:
    if not context["busy_at_start"]:
        return ""
    machine = context["machine"]
    return (
        f"> **Busy machine:** load average {machine['load_average_at_start']} on "
        f"{machine['logical_cpus']} CPUs before the first run. Other work competed with this "
        "run, so even the side-by-side ratios are unreliable; do not quote these figures."
    )


def _how_section(context: dict) -> str:
    data, machine, args = context["data"], context["machine"], context["args"]
    libraries = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items())
    lines = [
        f"- **Command** (from the repository root): `{context['command']}`",
        f"- **Data**: {_data_line(data)}",
        f"- **Machine**: {machine['cpu']}, {machine['logical_cpus']} logical CPUs "
        f"({machine['physical_cores']} physical), {machine['ram_gib']} GiB RAM, {machine['os']}; "
        f"load average {machine['load_average_at_start']} before the first run, "
        f"{machine['load_average_at_end']} after the last (its own load included)",
        f"- **Software**: Python {machine['python']}, SQLite {machine['sqlite']}, PostgreSQL "
        f"server {context['postgres_version']}; {libraries}",
        f"- **Settings**: `workers={args['workers']}` validation processes, repeat "
        f"{args['repeat']} (medians; rounds interleaved, alternate rounds reversed), SQLite on "
        f"{context['scratch_filesystem']}, PostgreSQL in a fresh schema per run",
        f"- **Date**: {machine['date_utc']}",
    ]
    return "\n".join(lines)


def _data_line(data: dict) -> str:
    checksum = data.get("sha256")
    if checksum is None:
        return f"`{data['path']}` (a directory), Synthea R4 transaction bundles"
    listed = data.get("sha256_listed")
    if listed is None:
        match = "not listed in a SHA256SUMS.txt"
    elif listed == checksum:
        match = "matches SHA256SUMS.txt"
    else:
        match = f"**differs from SHA256SUMS.txt, which lists {listed}**"
    return f"`{data['name']}`, Synthea R4 transaction bundles, sha256 `{checksum}` ({match})"


def _results_table(context: dict) -> str:
    rows = [
        "| backend | configuration | validation | encryption | resources | seconds "
        "| resources/s | peak RSS, tree (MiB) | peak PSS, tree (MiB) | max RSS main (MiB) "
        "| max RSS worker (MiB) |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key, m in context["summary"]["medians"].items():
        if m is None:
            continue
        backend, name = key.split(" ")
        validate, encrypt = CONFIGS[name]
        rows.append(
            f"| {backend} | {name} | {validate} | {_onoff(encrypt)} | "
            f"{m['resources']:,.0f} | {m['seconds']:.2f} | {m['resources_per_second']:,.0f} | "
            f"{m['peak_tree_rss_mib']:,.0f} | {m['peak_tree_pss_mib']:,.0f} | "
            f"{m['main_maxrss_mib']:,.0f} | {m['worker_maxrss_mib']:,.0f} |"
        )
    notes = (
        "Seconds run from planning the input (an archive is first checked end to end) to the "
        "last commit, worker start-up included; opening the store is excluded. Peak RSS, tree: "
        f"the ingest process plus its workers, summed, sampled every {RSS_SAMPLE_SECONDS} s; it "
        "counts the pages forked workers share with their parent once in every process, so it "
        "overstates. Peak PSS splits shared pages between the processes that share them "
        f"(sampled every {RSS_SAMPLE_SECONDS * PSS_EVERY_N_SAMPLES:g} s). Max RSS main and "
        "worker: `ru_maxrss` of the ingest process and of its largest worker."
    )
    return "### Throughput and memory\n\n" + "\n".join(rows) + "\n\n" + notes


def _onoff(flag: bool) -> str:
    return "on" if flag else "off"


def _cost_section(context: dict) -> str:
    summary = context["summary"]
    rows = [
        "| backend | validation costs | encryption costs | both cost "
        "| fhir.resources for every resource costs |",
        "|---|--:|--:|--:|--:|",
    ]
    for backend, cost in summary["cost"].items():
        library = cost.get("library-validation")
        rows.append(
            f"| {backend} | {_x(cost.get('no-validation'))} | {_x(cost.get('no-encryption'))} "
            f"| {_x(cost.get('both-off'))} | {_x(1 / library if library else None)} |"
        )
    vs = summary["sqlite_over_postgresql"]
    across = ", ".join(f"{name} {_x(ratio)}" for name, ratio in vs.items())
    return (
        "### What each step costs (side by side, this run)\n\n"
        "Each ratio is rate without the step / rate with everything on, same backend, same round "
        "(median over rounds): 1.50x means the step makes ingest 1.5 times slower.\n\n"
        + "\n".join(rows)
        + f"\n\nSQLite / PostgreSQL resources/s, same configuration and round: {across}."
    )


def _comparison_section(context: dict) -> str:
    medians_ = context["summary"]["medians"]
    sqlite = (medians_.get("sqlite all-on") or {}).get("resources_per_second")
    postgres = (medians_.get("postgresql all-on") or {}).get("resources_per_second")
    lines = ["### Against the target and published figures", "", _target_line(sqlite, context)]
    lines += [
        "",
        "Published bundle-import rates, **measured elsewhere, not side by side** (other hardware, "
        "other data, other settings), so these ratios are indicative only:",
        "",
        "| server (published) | resources/s | careloop SQLite all-on / it | "
        "careloop PostgreSQL all-on / it |",
        "|---|--:|--:|--:|",
    ]
    for server, rate in PUBLISHED_RATES.items():
        lines.append(
            f"| {server} | {rate:,} | {_x(sqlite and sqlite / rate)} "
            f"| {_x(postgres and postgres / rate)} |"
        )
    return "\n".join(lines)


def _target_line(sqlite: float | None, context: dict) -> str:
    if sqlite is None:
        return f"Target {TARGET_RATE:,} resources/s into SQLite, everything on: not measured."
    verdict = "**met**" if sqlite >= TARGET_RATE else "**not met**"
    partial = "" if context["args"]["limit_files"] is None else " (on a partial run only)"
    return (
        f"Target {TARGET_RATE:,} resources/s into SQLite with everything on: {verdict}{partial}, "
        f"{sqlite:,.0f} resources/s = {sqlite / TARGET_RATE:.2f}x the target."
    )


# -- main --------------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, argv: list[str]) -> dict:
    if not args.data.exists():
        raise BenchError(f"no data at {args.data}; pass --data PATH")
    postgres = postgres_version(args.postgres_url) if "postgresql" in args.backends else "not run"
    machine = machine_facts()  # before the run, so its load average is other people's work
    start_load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="careloop-bench-", dir=args.tmpdir) as tmp:
        scratch = Path(tmp)
        selection = select_bundles(args.data.resolve(), args.limit_files, scratch)
        runs = run_all(args, selection.paths, scratch)
        filesystem = filesystem_of(scratch)
    machine["load_average_at_end"] = load_average()  # includes this benchmark's own load
    return {
        "command": command_line(argv),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine,
        "postgres_version": postgres,
        "data": describe_data(args.data.resolve()),
        "bundles_total": selection.bundles_total,
        "bundles_used": selection.bundles_used,
        "resources": runs[0]["resources"],
        "busy_at_start": start_load > BUSY_LOAD_PER_CPU * (os.cpu_count() or 1),
        "scratch_filesystem": filesystem,
        "runs": runs,
        "summary": summarize(runs, args.backends, args.configs),
    }


def write_outputs(context: dict, markdown: str, out: Path) -> None:
    RAW_OUT.parent.mkdir(parents=True, exist_ok=True)
    RAW_OUT.write_text(json.dumps(context, indent=2, default=str) + "\n", encoding="utf-8")
    replace_section(out, SECTION, markdown)
    print(f"wrote {out} and {RAW_OUT}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        context = benchmark(args, argv)
    except BenchError as exc:
        print(f"bench.ingest: {exc}", file=sys.stderr)
        return 1
    markdown = render(context)
    print(markdown)
    if not args.no_write:
        write_outputs(context, markdown, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
