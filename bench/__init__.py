"""Benchmarks of the Real NVP flow (issue 5). Run ``python -m bench --help``; see bench/README.md."""
