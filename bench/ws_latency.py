"""WebSocket delivery figures on a server and database of their own:

    python -m bench.ws_latency [--rounds 200] [--sockets 1000] [--fan-rounds 10]

1. POST → socket latency: one subscriber socket; `--rounds` notifications are
   published 20 ms apart with POST /api/notifications/; for each, the time
   from sending the POST until the push arrives on the socket.
2. Fan-out: `--sockets` users, one socket each, all subscribed to one tag;
   `--fan-rounds` notifications; for each, the time from sending the POST
   until the first and the last socket has the push.

It starts `citelink serve` on a fresh embedded PostgreSQL in a temporary
directory, seeds users by SQL, and removes all of it at the end, so nothing
it made is left behind. The sockets live in `--processes` client processes,
apart from the server and from the process that POSTs. Needs the bench
extras: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import asyncio

from .clients import ClientProcess
from .scenarios import Fleet, Publisher, fan_out, latency
from .server import Seed, Server


async def main(args: argparse.Namespace) -> None:
    server = Server()
    seed = await Seed.connect(server.database_url)
    fleet = publisher = None
    try:
        staff, *users = await seed.users("bench", args.sockets + 1)
        solo = await seed.tag("solo", users[:1])
        everyone = await seed.tag("everyone", users)
        server.start()
        fleet = Fleet(
            [
                ClientProcess(server.ws, [server.token(u) for u in users[k :: args.processes]])
                for k in range(args.processes)
            ]
        )
        for client in fleet.clients:
            client.wait_ready()
        publisher = Publisher(server, staff)
        one = await latency(fleet, publisher, solo, 1, args.rounds, 0.02)
        print(
            f"POST → socket push ({args.rounds} rounds)  p50 {one['p50_ms']} ms  "
            f"p99 {one['p99_ms']} ms  max {one['max_ms']} ms  lost {one['lost']}"
        )
        print(f"POST → 201 response              p50 {one['post_p50_ms']} ms")
        fan = await fan_out(fleet, publisher, everyone, args.sockets, repeats=args.fan_rounds)
        print(f"one notification → {args.sockets} sockets (median of {args.fan_rounds} rounds):")
        print(f"  201 response {fan['commit_ms']} ms  (fan-out committed)")
        print(f"  first socket {fan['first_socket_ms']} ms")
        print(f"  all of them  {fan['last_socket_ms']} ms  ({fan['received']} received)")
    finally:
        if publisher:
            await publisher.close()
        for client in fleet.clients if fleet else []:
            client.close()
        await seed.close()
        server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.ws_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=200, help="latency rounds (default 200)")
    parser.add_argument("--sockets", type=int, default=1000, help="fan-out sockets (default 1000)")
    parser.add_argument("--fan-rounds", type=int, default=10, help="fan-out rounds (default 10)")
    parser.add_argument("--processes", type=int, default=2, help="client processes (default 2)")
    asyncio.run(main(parser.parse_args()))
