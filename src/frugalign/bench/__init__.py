"""Benchmarks on gold-oracle tasks: runners, the result schema of docs/benchmarks.md, plots."""
