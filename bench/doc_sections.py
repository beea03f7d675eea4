"""docs/benchmarks.md is shared: each benchmark owns one marked section and rewrites only that."""

from __future__ import annotations

from pathlib import Path

HEADER = """# Benchmarks

Figures written by the benchmarks in `bench/`; each section says how to reproduce it. These
machines are noisy, so comparisons are made side by side within one run and given as ratios.
"""


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def replace_section(path: Path, name: str, body: str) -> None:
    """Put `body` between this benchmark's markers, appending the section if it is new."""
    start, end = markers(name)
    section = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    before, found, rest = text.partition(start)
    if found:
        _, closed, after = rest.partition(end)
        if not closed:
            raise ValueError(f"{path}: {start} has no matching {end}")
        text = f"{before}{section}{after}"
    else:
        text = f"{text.rstrip()}\n\n{section}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def publish(text: str, path: Path, name: str, *, write: bool) -> int:
    """Print a benchmark's section, and put it into docs/benchmarks.md unless told not to."""
    print(text)
    if write:
        replace_section(path, name, text)
    return 0
