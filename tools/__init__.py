"""Tooling for tests, benchmarks and demos; outside every stage's dependencies."""
