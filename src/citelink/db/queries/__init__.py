"""Every SQL statement the application runs, by name.

Statements live in the `.sql` files of this folder, each introduced by a
`-- name: <name>` line, and are read once at import:

    from citelink.db.queries import Q
    await conn.fetchrow(Q.user_by_username, username)

Parameters are always bound ($1, $2, ...), never formatted in.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def _load(folder: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(folder.glob("*.sql")):
        parts = _NAME.split(path.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise RuntimeError(f"query {name!r} is defined twice ({path.name})")
            found[name] = body.strip()
    return found


Q = SimpleNamespace(**_load(Path(__file__).parent))
