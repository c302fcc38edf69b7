"""Benchmark scripts (not tests): one per question; results land in benchmarks/results/."""
