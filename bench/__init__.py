"""Benchmarks: `make bench` runs them all and appends a dated section to docs/benchmarks.md."""
