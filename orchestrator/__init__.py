"""orchestrator (see the module docstrings)."""
