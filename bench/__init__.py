"""Benchmarks. Each runs with one command and writes its figures to docs/benchmarks.md."""
