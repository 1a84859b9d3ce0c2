"""providers (see the module docstrings)."""
