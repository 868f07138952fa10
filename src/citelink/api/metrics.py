"""GET /metrics: the Prometheus metrics (citelink/metrics.py), never public.

A scraper sends CITELINK_METRICS_TOKEN as its bearer token (Prometheus:
`authorization: {credentials_file: ...}`); a person, a staff user's access
token. Without either the answer is 401, for a user who is not staff 403.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from .. import metrics
from ..errors import ApiError
from .auth import authenticate

# The classic text format, which every Prometheus version reads (and the one
# generate_latest writes for citelink's plain metric names).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _scraper(request: Request) -> bool:
    expected = request.state.settings.metrics_token
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (
        expected is not None
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip().encode(), expected.encode())
    )


async def metrics_endpoint(request: Request) -> Response:
    """Every metric in the text format, sampled now for this process."""
    if not _scraper(request):
        user = await authenticate(request)
        if not user.is_staff:
            raise ApiError(403, "staff only (or the CITELINK_METRICS_TOKEN)")
    state = request.state
    metrics.sample(state.hub, state.listener, state.pool)
    await metrics.sample_notify_queue(state.pool)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)
