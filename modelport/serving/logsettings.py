"""Triton's logging extension (``GET/POST /v2/logging``, gRPC ``LogSettings``) over Python's logging.

The server logs to stderr through one handler (``server.configure_logging``); its severities are switched on and
off as Triton's are: ``log_info``, ``log_warning``, ``log_error`` each on its own (a filter on the handler drops the
records of a severity that is off), ``log_verbose_level`` > 0 lets DEBUG records through. The root logger's level
follows the lowest severity on, so records nobody wants are not even built. ``log_file`` is always ``""`` (stderr:
modelport writes no log file) and ``log_format`` ``"default"`` (the format ``--log-json`` chose); other values
are refused, not ignored. Settings are the process's: with ``--workers`` each worker has its own, which is why
changing them is model control (refused with ``--workers``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from modelport.errors import InvalidArgumentError

__all__ = ["FILTER", "SEVERITIES", "SeverityFilter", "current", "update"]

SEVERITIES = {"log_info": logging.INFO, "log_warning": logging.WARNING, "log_error": logging.ERROR}
_FIXED = {"log_file": "", "log_format": "default"}  # what modelport has, and can only be asked to keep


class SeverityFilter(logging.Filter):
    """Passes the records of the severities that are on (ERROR covers CRITICAL; DEBUG is the verbose level)."""

    def __init__(self) -> None:
        super().__init__()
        self.on = dict.fromkeys(SEVERITIES, True)
        self.verbose = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return self.on["log_error"]
        if record.levelno >= logging.WARNING:
            return self.on["log_warning"]
        if record.levelno >= logging.INFO:
            return self.on["log_info"]
        return self.verbose > 0

    def start(self, level: int) -> None:
        """Begin as ``--log-level`` says: the severities from ``level`` up are on."""
        self.on = {key: severity >= level for key, severity in SEVERITIES.items()}
        self.verbose = 1 if level <= logging.DEBUG else 0


FILTER = SeverityFilter()  # the one the server's handler carries (logging itself is the process's)


def current() -> dict[str, Any]:
    """The settings as Triton's ``GET /v2/logging`` answers them."""
    return {**_FIXED, **FILTER.on, "log_verbose_level": FILTER.verbose}


def update(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Apply Triton's log settings (all checked before any is applied) and answer the settings now in force."""
    unknown = sorted(set(settings) - set(SEVERITIES) - set(_FIXED) - {"log_verbose_level"})
    if unknown:
        raise InvalidArgumentError(f"unknown log settings {unknown}; Triton's are {sorted(current())}")
    for key, kept in _FIXED.items():
        if key in settings and settings[key] != kept:
            raise InvalidArgumentError(
                f"{key} {settings[key]!r} is not supported: modelport logs to stderr in the format its flags chose "
                f"({key} stays {kept!r})"
            )
    for key in SEVERITIES:
        if key in settings and not isinstance(settings[key], bool):
            raise InvalidArgumentError(f"{key} must be a boolean")
    verbose = settings.get("log_verbose_level", FILTER.verbose)
    if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose < 0:
        raise InvalidArgumentError("log_verbose_level must be a non-negative integer")
    FILTER.on.update({key: settings[key] for key in SEVERITIES if key in settings})
    FILTER.verbose = verbose
    wanted = [logging.DEBUG] if verbose else []
    wanted += [level for key, level in SEVERITIES.items() if FILTER.on[key]]
    logging.getLogger().setLevel(min(wanted, default=logging.CRITICAL))
    return current()
