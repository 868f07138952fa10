"""The `citelink` command line: serve, the embedded database, users, publishing, events.

Errors a person can act on are one line on stderr and a non-zero exit
(citelink/problems.py decides which and says them); `--debug` or
CITELINK_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

from citelink import problems
from citelink.cli.parser import build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.debug:
        os.environ["CITELINK_DEBUG"] = "1"  # for serve's log and its workers too
    debug = problems.debugging()
    try:
        status: int = args.func(args)
        sys.stdout.flush()  # a reader gone away is noticed here, not at exit
        return status
    except (Exception, KeyboardInterrupt) as exc:
        return problems.report(exc, debug=debug)
