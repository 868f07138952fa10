"""The WebSocket endpoint `/ws/notifications/?token=<access>` (SPEC §5).

Two protocols, chosen by the client as WebSocket protocols are: one that
offers the subprotocol `citelink.v1` gets the extended protocol (every frame
type); one that offers nothing gets the seed protocol, exactly the frames the
original server sent (pushes, `notifications_list` answers, the `read` and
`delete` echoes) plus error frames, so its demo client works unchanged.

This module opens sockets: origin, token, attaching to the hub. One `Session`
per socket (citelink.relay.session) then runs three tasks: the receiver (client
frames, one at a time), the sender (the socket's bounded queue, see
citelink.relay.peers.Peer) and the token clock. Whichever decides the socket is
done sets its close code; the session then stops the others and closes once.

Close codes: 4401 bad, expired or refresh token (or the user was deactivated),
or an API key (keys are for services publishing over REST, never a user's
socket); 4403 a browser page of an origin not allowed (citelink.identity.cors);
4408 too slow (send queue full); 4409 replaced: over
`ws_max_sockets_per_user` (per process) a newer socket of the user took this
one's place (the oldest used only for item actions goes first); 1001
server shutting down; 1013 database unreachable when opening; 1009 frame over
`ws_max_frame_bytes` (uvicorn's `ws_max_size`). The socket is
accepted before a refusal so that browsers see the code: a handshake refused
with HTTP 403 reaches JavaScript as a bare 1006.

Bad client frames get `{"type": "error", "code", "detail"}` and the socket
stays open. Over `ws_frames_per_second`, counted across all of the user's
sockets in this process, frames are dropped; the first dropped one of a run on
each socket is answered with a `rate_limited` error.
"""

from __future__ import annotations

import logging

from starlette.datastructures import QueryParams
from starlette.websockets import WebSocket, WebSocketDisconnect

from citelink import metrics
from citelink.db.connection import ERRORS
from citelink.errors import ApiError
from citelink.identity import api_keys, cors
from citelink.identity.callers import REVOKED, TOKENS_REVOKED, Identity, access_identity, identity
from citelink.identity.platform_tokens import TOO_LONG, is_platform_token
from citelink.relay.hub import Hub, Refused
from citelink.relay.peers import Peer
from citelink.relay.protocol import EXTENDED, TOKEN_REFUSED
from citelink.relay.session import KEY_REFUSED, Session
from citelink.settings import Settings

log = logging.getLogger("citelink.relay.websocket")


async def _refuse(websocket: WebSocket, subprotocol: str | None, code: int, reason: str) -> None:
    metrics.socket_closed(code)
    # Accepted first (with the protocol asked for, or a browser fails the
    # handshake): a handshake refused with HTTP 403 reaches a browser as 1006.
    await websocket.accept(subprotocol)
    await websocket.close(code, reason)


async def _token_owner(websocket: WebSocket, settings: Settings) -> Identity | tuple[int, str]:
    """Who the `?token=` (a citelink access token or a platform token) belongs
    to, or the close code and reason that refuse it. Neither the token nor the
    parsed query string outlive this call (the socket's coroutine would keep
    them for as long as it is open)."""
    token = QueryParams(websocket.scope["query_string"]).get("token", "")
    if api_keys.looks_like_key(token):
        return TOKEN_REFUSED, KEY_REFUSED
    try:
        if not is_platform_token(token):
            # No query: the hub checks the user and generation as it attaches.
            return access_identity(settings, token)
        _, found = await identity(websocket.state.pool, settings, websocket.state.platform, token)
        return found
    except ApiError as exc:
        known = exc.detail in (REVOKED, TOKENS_REVOKED, TOO_LONG)
        return TOKEN_REFUSED, exc.detail if known else "invalid or expired access token"
    except ERRORS:
        return 1013, "database unavailable, try again later"


async def notifications_socket(websocket: WebSocket) -> None:
    """Authenticate from `?token=`, attach to the hub and run the session.

    The socket is attached before the handshake completes: once a client's
    connection is open, every change committed from then on reaches it.
    """
    settings: Settings = websocket.state.settings
    hub: Hub = websocket.state.hub
    subprotocol = EXTENDED if EXTENDED in websocket.scope.get("subprotocols", ()) else None
    if not cors.socket_origin_allowed(websocket.scope, settings):
        await _refuse(websocket, subprotocol, cors.ORIGIN_REFUSED, cors.REFUSED)
        return
    owner = await _token_owner(websocket, settings)
    if isinstance(owner, tuple):
        await _refuse(websocket, subprotocol, *owner)
        return
    client = Peer(
        owner.user_id,
        settings.ws_send_queue,
        queue_bytes=settings.ws_send_queue_bytes,
        generation=owner.generation,
        extended=subprotocol is not None,
    )
    expires = owner.expires
    del owner
    try:
        await hub.attach(client)
    except Refused as refused:
        await _refuse(websocket, subprotocol, refused.code, refused.reason)
        return
    try:
        await websocket.accept(subprotocol)
        await Session(websocket, client, expires, hub, settings).run()
    except (OSError, WebSocketDisconnect):
        pass  # the client left during the handshake
    finally:
        hub.detach(client)
