"""Benchmarks of the gateway against a minimal baseline; see README.md."""
