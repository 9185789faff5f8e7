"""Benchmarks (``python -m fedcompress.bench.<name>``)."""
