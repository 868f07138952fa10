"""Logging setup: text or JSON lines, a request id on each, tokens and API keys never logged.

uvicorn's access log prints the request target, query string included, and a
WebSocket's `?token=` would land there; a filter rewrites it first, and the
JSON formatter redacts whatever it writes once more (exception text too).
An API key (citelink.identity.api_keys) anywhere in a line keeps only its prefix,
which names it without granting anything.

Every HTTP request and WebSocket gets a request id: the `X-Request-ID` header
a proxy sent (nginx's `$request_id`), or a new one. It is answered back in
`X-Request-ID` and appears on every JSON line logged while it is handled.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import os
import re
import secrets
from contextvars import ContextVar
from typing import Any

import orjson
from starlette.types import Message, Scope, Send

from citelink.problems import debugging

_TOKEN = re.compile(r"(token=)[^&\s\"']+")
_API_KEY = re.compile(r"(cl_[0-9a-f]{12}_)[A-Za-z0-9_-]+")
# What a request id from a proxy may look like; anything else is replaced.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

request_id: ContextVar[str | None] = ContextVar("citelink_request_id", default=None)


def redact(text: str) -> str:
    return _API_KEY.sub(r"\1[redacted]", _TOKEN.sub(r"\1[redacted]", text))


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


def begin_request(scope: Scope) -> str:
    """Give the request or socket of `scope` its id, for every line logged while
    it is handled (the id lives in the task that handles it)."""
    given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"")
    text = given.decode("latin-1")
    rid = text if _REQUEST_ID.fullmatch(text) else secrets.token_hex(8)
    request_id.set(rid)
    return rid


def answer_request_id(send: Send, rid: str) -> Send:
    """`send`, adding `X-Request-ID: rid` to the response."""

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
        await send(message)

    return send_with_id


# Fields of uvicorn's access records: (client, method, path, HTTP version, status).
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, request_id
    (when there is one), the fields of an access line, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            "pid": os.getpid(),
        }
        if rid := request_id.get():
            line["request_id"] = rid
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            line.update(zip(_ACCESS_FIELDS, record.args, strict=False))
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


def log_config(log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging setup, plus citelink's own loggers on stderr (at INFO,
    or DEBUG with `--debug`); with "json", every line is a JsonFormatter line."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    level = "DEBUG" if debugging() else "INFO"
    config["loggers"]["citelink"] = {"handlers": ["default"], "level": level, "propagate": False}
    # On the handlers too: a logger's filter misses what its children log.
    config.setdefault("filters", {})["redact"] = {"()": RedactTokens}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    if log_format == "json":
        json_formatter = {"()": JsonFormatter}
        config["formatters"] = {"default": json_formatter, "access": json_formatter}
    return config
