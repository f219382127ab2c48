"""Benchmarks: scripts that measure the figures the README quotes (run with `python -m benchmarks.<name>`)."""
