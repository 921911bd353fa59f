"""Benchmarks: each prints its figures; see README.md beside it."""
