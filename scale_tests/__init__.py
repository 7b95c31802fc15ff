"""Benchmarks and the load harness (outside pytest's default run)."""
