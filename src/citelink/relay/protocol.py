"""Names the socket protocol shares between the server (citelink.relay.websocket) and
its clients (citelink.cli.listen, the web page): where sockets open, the
subprotocol of the extended protocol, and the close codes."""

from __future__ import annotations

# Where clients open their socket.
SOCKET_PATH = "/ws/notifications/"
# Offered as a WebSocket subprotocol, it selects the extended protocol; a
# client that offers nothing gets the seed's.
EXTENDED = "citelink.v1"

# Close codes of citelink's own (the others are RFC 6455's: 1001 going away,
# 1009 frame too big, 1011 internal error, 1013 try again later).
TOKEN_REFUSED = 4401  # bad, expired, revoked or refresh token; user deactivated or deleted
TOO_SLOW = 4408  # the socket's send queue was full: reconnect and resume
REPLACED = 4409  # a newer socket of the user took this one's place
# The reason given with TOKEN_REFUSED is REST's 401 detail (citelink.identity.callers).
