"""Request bodies and query parameters: read, checked and described in one place.

A `Fields` spec (a Body or a Query) validates input at request time and
renders the JSON Schema of the OpenAPI document, so the two cannot drift.
Every check that would otherwise reach PostgreSQL as a 500 happens here:
NUL characters (text and jsonb cannot store them), integers outside bigint,
over-long strings. Limits may name a Settings field, resolved per request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypedDict, TypeVar

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request

from citelink.db.connection import BIGINT_MAX
from citelink.errors import ApiError
from citelink.settings import Settings
from citelink.shapes import Page

_DECIMAL = re.compile(r"-?[0-9]{1,20}")

# A limit is a number or the name of the Settings field that holds it.
Limit = int | str
# A JSON Schema (of a field, a body), as /openapi.json shows it.
Schema = dict[str, Any]

# Bounds of a `data` filter (DataFilter): its JSON text, its nesting, and the
# keys of each object and values of each array.
DATA_FILTER_BYTES = 1024
DATA_FILTER_DEPTH = 4
DATA_FILTER_ITEMS = 16


def resolve(limit: Limit, settings: Settings) -> int:
    """The number a limit stands for under `settings`."""
    if isinstance(limit, int):
        return limit
    number: int = getattr(settings, limit)
    return number


class Invalid(Exception):
    """A field's value is not acceptable; the message is shown to the client."""


@dataclass(frozen=True)
class Field:
    """Base of the field types; `required` only matters in bodies."""

    description: str = ""
    required: bool = True

    def check(self, value: Any, settings: Settings) -> Any:
        raise NotImplementedError

    def parse_text(self, text: str, settings: Settings) -> Any:
        """A query-string value: text, converted as the type needs."""
        return self.check(text, settings)

    def schema(self, settings: Settings) -> Schema:
        raise NotImplementedError

    def _described(self, schema: Schema) -> Schema:
        return {**schema, "description": self.description} if self.description else schema


@dataclass(frozen=True)
class String(Field):
    min_length: int = 1
    max_length: Limit = 1000
    blank: bool = False
    # A regular expression the whole value must match, and what it means.
    pattern: str | None = None
    pattern_help: str = ""

    def check(self, value: Any, settings: Settings) -> str:
        if not isinstance(value, str):
            raise Invalid("must be a string")
        maximum = resolve(self.max_length, settings)
        if len(value) > maximum:
            raise Invalid(f"at most {maximum} characters")
        if len(value) < self.min_length:
            raise Invalid(f"at least {self.min_length} character(s)")
        if not self.blank and not value.strip():
            raise Invalid("must not be blank")
        if "\x00" in value:
            raise Invalid("must not contain NUL characters")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise Invalid(self.pattern_help or f"must match {self.pattern}")
        return value

    def schema(self, settings: Settings) -> Schema:
        schema = {
            "type": "string",
            "minLength": self.min_length,
            "maxLength": resolve(self.max_length, settings),
        }
        if self.pattern:
            schema["pattern"] = f"^{self.pattern}$"
        return self._described(schema)


@dataclass(frozen=True)
class Integer(Field):
    """An integer PostgreSQL's bigint holds; ids by default (1 and up)."""

    minimum: int = 1
    maximum: Limit = BIGINT_MAX

    def check(self, value: Any, settings: Settings) -> int:
        # bool is an int subclass; JSON true is not a number.
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid("must be an integer")
        maximum = resolve(self.maximum, settings)
        if not self.minimum <= value <= maximum:
            raise Invalid(f"must be between {self.minimum} and {maximum}")
        return value

    def parse_text(self, text: str, settings: Settings) -> int:
        # int() would also take " 1", "1_000" and non-ASCII digits; only plain ones are meant.
        if not _DECIMAL.fullmatch(text):
            raise Invalid("must be an integer")
        return self.check(int(text), settings)

    def schema(self, settings: Settings) -> Schema:
        return self._described(
            {
                "type": "integer",
                "format": "int64",
                "minimum": self.minimum,
                "maximum": resolve(self.maximum, settings),
            }
        )


@dataclass(frozen=True)
class Boolean(Field):
    def check(self, value: Any, settings: Settings) -> bool:
        if not isinstance(value, bool):
            raise Invalid("must be true or false")
        return value

    def schema(self, settings: Settings) -> Schema:
        return self._described({"type": "boolean"})


@dataclass(frozen=True)
class Choice(Field):
    choices: tuple[str, ...] = ()

    def check(self, value: Any, settings: Settings) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise Invalid(f"must be one of: {', '.join(self.choices)}")
        return value

    def schema(self, settings: Settings) -> Schema:
        return self._described({"type": "string", "enum": list(self.choices)})


@dataclass(frozen=True)
class JsonObject(Field):
    """Any JSON object jsonb can store and orjson can write back: no NUL in
    keys or strings, nested at most `max_depth` levels (orjson stops at 255)."""

    max_depth: int = 100

    def check(self, value: Any, settings: Settings) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise Invalid("must be a JSON object")
        problem = _json_problem(value, self.max_depth)
        if problem:
            raise Invalid(problem)
        return value

    def schema(self, settings: Settings) -> Schema:
        return self._described({"type": "object"})


def _json_problem(value: Any, max_depth: int) -> str | None:
    """What PostgreSQL or orjson could not take in `value`, if anything."""
    # Iterative, so a deeply nested document cannot exhaust the stack.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "must not contain NUL characters (\\u0000)"
        elif isinstance(item, dict | list):
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels"
            if isinstance(item, dict):
                if any("\x00" in key for key in item):
                    return "must not contain NUL characters (\\u0000)"
                item = item.values()
            stack.extend((child, depth + 1) for child in item)
    return None


@dataclass(frozen=True)
class Integers(Field):
    """Ids, one or several: a JSON integer or list of them in a body, the
    parameter given once or repeated (`?tag=1&tag=2`) in a query."""

    max_items: int = 100
    repeatable: ClassVar[bool] = True

    def check(self, value: Any, settings: Settings) -> list[int]:
        values = value if isinstance(value, list) else [value]
        if not 1 <= len(values) <= self.max_items:
            raise Invalid(f"1 to {self.max_items} ids")
        return [Integer().check(v, settings) for v in values]

    def parse_text(self, text: str, settings: Settings) -> list[int]:
        return [Integer().parse_text(text, settings)]

    def schema(self, settings: Settings) -> Schema:
        one = Integer().schema(settings)
        return self._described(
            {"anyOf": [one, {"type": "array", "items": one, "maxItems": self.max_items}]}
        )


@dataclass(frozen=True)
class Timestamp(Field):
    """An ISO 8601 date and time with its offset (`2026-11-27T14:30:00Z`)."""

    MEANING: ClassVar[str] = "must be an ISO 8601 date and time, such as 2026-11-27T14:30:00Z"

    def check(self, value: Any, settings: Settings) -> datetime:
        if not isinstance(value, str):
            raise Invalid(self.MEANING)
        return self.parse_text(value, settings)

    def parse_text(self, text: str, settings: Settings) -> datetime:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise Invalid(self.MEANING) from None
        if moment.tzinfo is None:
            raise Invalid("needs its offset from UTC (Z or +hh:mm)")
        return moment

    def schema(self, settings: Settings) -> Schema:
        return self._described({"type": "string", "format": "date-time"})


@dataclass(frozen=True)
class DataFilter(JsonObject):
    """A `data` filter: a JSON object the items' data must contain (`@>`),
    bounded in size and shape. Containment costs the stored value times the
    filter per row: a filter of 300,000 array elements made one page take a
    minute. What a filter is for -- a few keys and values -- fits well within
    these bounds."""

    max_depth: int = DATA_FILTER_DEPTH

    def check(self, value: Any, settings: Settings) -> dict[str, Any]:
        data = super().check(value, settings)
        if len(orjson.dumps(data)) > DATA_FILTER_BYTES:
            raise Invalid(f"a data filter is at most {DATA_FILTER_BYTES} bytes of JSON")
        stack: list[Any] = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, dict | list) and len(item) > DATA_FILTER_ITEMS:
                what = "keys in an object" if isinstance(item, dict) else "values in an array"
                raise Invalid(f"a data filter has at most {DATA_FILTER_ITEMS} {what}")
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        return data


@dataclass(frozen=True)
class JsonText(DataFilter):
    """A data filter given as JSON text, in a query parameter (`?data={"k":1}`)."""

    def parse_text(self, text: str, settings: Settings) -> dict[str, Any]:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise Invalid('must be a JSON object, such as {"key": "value"}') from None
        return self.check(value, settings)

    def schema(self, settings: Settings) -> Schema:
        return self._described({"type": "string", "contentMediaType": "application/json"})


@dataclass(frozen=True)
class Object(Field):
    """A JSON object in a body, checked by `fields` (a Body spec)."""

    fields: Fields | None = None

    def check(self, value: Any, settings: Settings) -> dict[str, Any]:
        assert isinstance(self.fields, Body)
        if not isinstance(value, dict):
            raise Invalid("must be a JSON object")
        try:
            return self.fields.check(value, settings)
        except ApiError as exc:
            raise Invalid(
                "; ".join(f"{name}: {problem}" for name, problem in (exc.errors or {}).items())
            ) from None

    def schema(self, settings: Settings) -> Schema:
        assert isinstance(self.fields, Body)
        return self._described(self.fields.schema(settings))


@dataclass(frozen=True)
class Fields:
    """Named fields; unknown names are refused."""

    fields: Mapping[str, Field]

    def _convert(
        self, items: Iterable[tuple[str, Any]], convert: Callable[[Field, Any], Any]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """(values, errors) of the given name/value pairs."""
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name, raw in items:
            field = self.fields.get(name)
            if field is None:
                errors[name] = "unknown field"
                continue
            try:
                values[name] = convert(field, raw)
            except Invalid as exc:
                errors[name] = str(exc)
        return values, errors


class Body(Fields):
    """A JSON object request body."""

    def parse(self, raw: bytes, settings: Settings) -> dict[str, Any]:
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"malformed JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return self.check(document, settings)

    def check(self, document: dict[str, Any], settings: Settings) -> dict[str, Any]:
        """The values of a decoded JSON object; ApiError 422 naming each bad field."""
        values, errors = self._convert(
            document.items(), lambda field, value: field.check(value, settings)
        )
        for name, field in self.fields.items():
            if field.required and name not in document:
                errors[name] = "this field is required"
        if errors:
            raise ApiError(422, "invalid request body", errors)
        return values

    def schema(self, settings: Settings) -> Schema:
        return {
            "type": "object",
            "properties": {name: f.schema(settings) for name, f in self.fields.items()},
            "required": [name for name, f in self.fields.items() if f.required],
            "additionalProperties": False,
        }


class Query(Fields):
    """Query-string parameters: each optional, given once at most."""

    def parse(self, params: QueryParams, settings: Settings) -> dict[str, Any]:
        repeated = {
            k
            for k in params
            if len(params.getlist(k)) > 1 and not getattr(self.fields.get(k), "repeatable", False)
        }
        values, errors = self._convert(
            ((k, params.getlist(k)) for k in dict.fromkeys(params)),
            lambda field, texts: self._parse_texts(field, texts, settings),
        )
        errors.update(dict.fromkeys(repeated, "given more than once"))
        if errors:
            raise ApiError(422, "invalid query parameters", errors)
        return values

    @staticmethod
    def _parse_texts(field: Field, texts: list[str], settings: Settings) -> Any:
        if not getattr(field, "repeatable", False):
            return field.parse_text(texts[-1], settings)
        values = [v for text in texts for v in field.parse_text(text, settings)]
        return field.check(values, settings)


NO_QUERY = Query({})

# Keyset pagination, newest first: `?before=<id>&limit=<n>`.
PAGE = {
    "before": Integer(description="only items with a smaller id (the `next` of a page)"),
    "limit": Integer(description="items per page (default 20)", maximum="max_page_size"),
}
DEFAULT_LIMIT = 20


def page_bounds(query: dict[str, Any]) -> tuple[int, int]:
    """(before, limit) of a validated PAGE query, with their defaults."""
    return query.get("before", BIGINT_MAX), query.get("limit", DEFAULT_LIMIT)


class _Identified(TypedDict):
    id: int


Item = TypeVar("Item", bound=_Identified)


def page(rows: list[Item], limit: int) -> Page[Item]:
    """`{results, next}` from up to limit + 1 rows: `next` is the `before` of the
    following page, null on the last one."""
    results = rows[:limit]
    return {"results": results, "next": results[-1]["id"] if len(rows) > limit else None}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 beyond `limit` bytes: early when
    Content-Length says so, and while reading whatever it says (or when it is
    absent, as with chunked uploads)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"request body larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "the client went away before sending the whole body") from None
    return b"".join(chunks)
