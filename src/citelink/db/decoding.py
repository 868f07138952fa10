"""How values of the database become Python, whatever a row holds.

A row inserted by plain SQL is served like any other, so every value
PostgreSQL accepts must come out as something the app can send: one odd value
must never fail a page, an audit listing or the relay for everyone. jsonb may
hold numbers beyond a double (`1e400`) and nesting deeper than orjson writes
(255 levels); timestamptz may be BC, past the year 9999 or infinite, which
datetime cannot be. Those come out as text (what PostgreSQL shows) or a
placeholder, and the rest of the row as usual.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import orjson

# orjson writes at most 255 levels. A notification's data nests 100 at most
# (the API and a CHECK in sql/schema.sql), an audit row's changes a few more;
# deeper parts of a value (stored before that check) are shown as TOO_DEEP.
MAX_JSON_DEPTH = 200
TOO_DEEP = "(nested too deep to show)"

# Integers past 64 bits are shown as text; int() refuses long digit strings.
_INT_DIGITS = 19
_INT_RANGE = range(-(2**63), 2**64)


def decode_json(text: str) -> Any:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = _decode_leniently(text)
    # Only text with that many brackets can nest that deep: most values skip
    # the walk.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        value = _cut(value, 1)
    return value


def encode_json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _decode_leniently(text: str) -> Any:
    """What orjson refused: numbers out of its range become their text."""
    try:
        return json.loads(text, parse_float=_float_or_text, parse_int=_int_or_text)
    except RecursionError:
        return TOO_DEEP


def _float_or_text(text: str) -> float | str:
    value = float(text)
    return value if abs(value) != float("inf") else text


def _int_or_text(text: str) -> int | str:
    if len(text.lstrip("-")) > _INT_DIGITS + 1:
        return text
    value = int(text)
    return value if value in _INT_RANGE else text


def _cut(value: Any, depth: int) -> Any:
    """`value` (at `depth`, 1 for the top) with what nests past MAX_JSON_DEPTH
    replaced by TOO_DEEP."""
    if isinstance(value, dict):
        if depth > MAX_JSON_DEPTH:
            return TOO_DEEP
        return {key: _cut(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        if depth > MAX_JSON_DEPTH:
            return TOO_DEEP
        return [_cut(item, depth + 1) for item in value]
    return value


def decode_timestamp(text: str) -> datetime | str:
    """A timestamptz, as written with DateStyle ISO and TimeZone UTC
    (citelink.db.connection sets both); one datetime cannot hold is kept as text."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return text  # '0044-03-15 00:00:00+00 BC', '10000-01-01 ...', 'infinity'


def encode_timestamp(value: datetime) -> str:
    return value.isoformat()
