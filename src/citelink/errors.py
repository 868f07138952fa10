"""One error shape for the whole API: {"detail": ..., "errors"?: {field: message}}.

Routes raise ApiError; the handlers here turn it, Starlette's HTTPException
(unknown route, wrong method) and anything unexpected into that shape.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from citelink.responses import json_response
from citelink.shapes import Error

log = logging.getLogger("citelink")


class ApiError(Exception):
    """An error answered to the client with `status` and a JSON `detail`
    (and `headers`, such as a 429's Retry-After)."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers


def error_body(detail: str, errors: dict[str, str] | None = None) -> Error:
    """The JSON body of every error answer."""
    body: Error = {"detail": detail}
    if errors:
        body["errors"] = errors
    return body


def error_response(status: int, detail: str, errors: dict[str, str] | None = None) -> Response:
    body = error_body(detail, errors)
    headers = None
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif status == 503:
        headers = {"Retry-After": "1"}
    return json_response(body, status=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = error_response(exc.status, exc.detail, exc.errors)
    response.headers.update(exc.headers or {})
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = error_response(exc.status_code, exc.detail)
    # A 405 must say which methods are allowed (Allow).
    response.headers.update(exc.headers or {})
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error")


exception_handlers = {
    ApiError: _api_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
