"""End-to-end check of a running deployment, used by scripts/docker-smoke.

    python scripts/smoke_client.py --publish-via URL --listen-via URL --user admin --password pw

Signs in, creates a tag and a subscription, opens a WebSocket through
`--listen-via`, publishes through `--publish-via`, and waits for the frame.
Exits non-zero on any failure. Needs httpx and websockets (the dev extras).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time

import httpx
import orjson
import websockets


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--publish-via", required=True)
    parser.add_argument("--listen-via", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()

    async with httpx.AsyncClient(base_url=args.publish_via, timeout=10) as http:
        token = (
            (
                await http.post(
                    "/api/token/", json={"username": args.user, "password": args.password}
                )
            )
            .raise_for_status()
            .json()["access"]
        )
        auth = {"Authorization": f"Bearer {token}"}
        me = (await http.get("/api/users/me/", headers=auth)).raise_for_status().json()
        tag = (
            (
                await http.post(
                    "/api/tags/", json={"name": f"smoke-{secrets.token_hex(4)}"}, headers=auth
                )
            )
            .raise_for_status()
            .json()
        )
        (
            await http.post(
                "/api/subscriptions/", json={"user": me["id"], "tag": tag["id"]}, headers=auth
            )
        ).raise_for_status()

        ws_url = args.listen_via.replace("http", "ws", 1) + f"/ws/notifications/?token={token}"
        # ping/pong is the extended protocol's: the seed protocol answers it with an error.
        async with websockets.connect(ws_url, subprotocols=["citelink.v1"]) as ws:
            await ws.send(orjson.dumps({"type": "ping"}).decode())
            while (frame := orjson.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "pong":
                assert frame["type"] != "error", frame
            message = f"smoke {secrets.token_hex(4)}"
            sent = time.perf_counter()
            (
                await http.post(
                    "/api/notifications/", json={"message": message, "tag": tag["id"]}, headers=auth
                )
            ).raise_for_status()
            while True:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame["type"] == "notification":
                    break
            elapsed = (time.perf_counter() - sent) * 1000
    assert frame["message"] == message, frame
    print(
        f"ok: published via {args.publish_via}, received via {args.listen_via} in {elapsed:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
