"""broker (see the module docstrings)."""
