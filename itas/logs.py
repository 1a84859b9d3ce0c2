"""One logging setup for every ``itas`` process: the level, where lines go, and children.

The level comes from ``--log-level`` (any verb) or ``ITAS_LOG_LEVEL``; the CLI puts the
chosen level into the environment, so every child it starts (broker, agents, model server)
logs at the same level without being told on its command line.

Lines go to whatever ``sys.stderr`` is *when they are written*, not the stream that existed
when logging was set up. A live progress display (rich's ``Progress`` in ``itas search``, the
waiting line of ``itas ask``) swaps ``sys.stderr`` for a proxy that prints above the display;
a handler bound to the original stream would write into the middle of the bars. Children's
stderr is copied line by line through ``sys.stderr`` as well (``itas.agents.pool``), so their
lines land above the display too.
"""

from __future__ import annotations

import logging
import os
import sys

LOG_LEVEL_ENV = "ITAS_LOG_LEVEL"
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LOG_LEVEL = "warning"
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class CurrentStderrHandler(logging.StreamHandler):
    """A StreamHandler that writes to the current ``sys.stderr`` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def parse_level(value: str, where: str = "--log-level") -> str:
    """``value`` as one of LOG_LEVELS (any case); ValueError names ``where`` and the choices."""
    level = value.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"{where}: {value!r} is not a log level; use one of "
                         f"{', '.join(LOG_LEVELS)}")
    return level


def setup_logging(level: str) -> None:
    """Log at ``level`` to the current stderr, here and in every child started from now on."""
    level = parse_level(level)
    os.environ[LOG_LEVEL_ENV] = level
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, CurrentStderrHandler):
            root.removeHandler(handler)
    handler = CurrentStderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
