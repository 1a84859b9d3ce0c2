"""agents (see the module docstrings)."""
