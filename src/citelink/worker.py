"""`python -m citelink.worker`: one worker process of `citelink serve --workers N`.

Started by `serve` (citelink/serving.py), never by hand: it inherits the
listening socket, a pipe to report on and one that tells it the parent is
alive, and reads its settings (the database URL and secret key resolved by
the parent) from the environment.
"""

from __future__ import annotations

import argparse

from .serving import run_worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m citelink.worker", description=__doc__)
    parser.add_argument("--socket-fd", type=int, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--lifeline-fd", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--forwarded-allow-ips", required=True)
    args = parser.parse_args(argv)
    run_worker(
        args.socket_fd, args.report_fd, args.lifeline_fd, args.host, args.forwarded_allow_ips
    )


if __name__ == "__main__":
    main()
