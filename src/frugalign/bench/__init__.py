"""Benchmarks on gold-oracle tasks: runners, the result schema of BENCH.md, plots."""
