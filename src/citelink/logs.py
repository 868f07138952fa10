"""Logging setup: tokens never reach the logs.

uvicorn's access log prints the request target, query string included, and a
WebSocket's `?token=` would land there; the filter rewrites it first.
"""

from __future__ import annotations

import copy
import logging
import re

_TOKEN = re.compile(r"(token=)[^&\s\"']+")


def redact(text: str) -> str:
    return _TOKEN.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        record.msg = redact(str(record.msg))
        return True


def install_token_filter() -> None:
    """Attach the filter to uvicorn's loggers (call after uvicorn configured them)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


def log_config() -> dict:
    """uvicorn's logging setup, plus citelink's own loggers at INFO on stderr."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["citelink"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
