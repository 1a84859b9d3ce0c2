"""benchmarks (see the module docstrings)."""
