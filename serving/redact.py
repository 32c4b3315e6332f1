"""Credentials out of what serving says: ``scheme://user:password@host`` → ``scheme://***@host``.

MLflow, Redis and Postgres URIs carry their credentials in the URI, and the errors of the
libraries that use them repeat the URI. :func:`redact` is applied to every message serving
returns (``/health``) or keeps (``last_error``); :class:`RedactingFilter` to every log handler
of ``flywheel serve`` (:func:`uvicorn_log_config` for uvicorn's own handlers).
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@?#]+@")


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` part of every URI in it replaced by ``***@``."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts URIs in the formatted message and the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_on_root() -> None:
    """Add :class:`RedactingFilter` to every handler of the root logger (once each)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's default logging config with :class:`RedactingFilter` on each of its handlers."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": f"{__name__}.RedactingFilter"}
    for handler in config.get("handlers", {}).values():
        handler["filters"] = [*handler.get("filters", []), "redact"]
    return config
