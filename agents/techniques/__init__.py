"""techniques (see the module docstrings)."""
