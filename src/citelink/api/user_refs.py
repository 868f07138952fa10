"""Naming a user in a request body: by citelink id (`42`) or by the platform's
external id (`"ext:42"`), for the `users` of a notification and the `user` of
a subscription.

External ids are resolved to users before anything is written. One
citelink has not seen is provisioned, as a platform token for it would be
(CITELINK_PLATFORM_PROVISIONING, on by default), so a platform can notify its
users before their first visit; with provisioning off it is a 422 that
names every unknown one, and no route makes a user of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from citelink.api.validation import Field, Integer, Invalid, Schema
from citelink.db.connection import Queryable
from citelink.db.queries import Q
from citelink.errors import ApiError
from citelink.identity.platform_tokens import EXTERNAL_ID
from citelink.settings import Settings

EXTERNAL = "ext:"
PROVISIONING_OFF = "CITELINK_PLATFORM_PROVISIONING is off: no user is made for them"
Ref = int | str  # a user id, or an external id (without its `ext:`)
_MEANING = "must be a user id or 'ext:<external id>'"


def _ref(value: Any, settings: Settings) -> Ref:
    if isinstance(value, str):
        external = value[len(EXTERNAL) :]
        if not value.startswith(EXTERNAL) or not EXTERNAL_ID.fullmatch(external):
            raise Invalid(_MEANING)
        return external
    try:
        return Integer().check(value, settings)
    except Invalid:
        raise Invalid(_MEANING) from None


_SCHEMA = {
    "anyOf": [
        {"type": "integer", "format": "int64", "minimum": 1},
        {"type": "string", "pattern": "^ext:.{1,255}$"},
    ]
}


@dataclass(frozen=True)
class UserRef(Field):
    def check(self, value: Any, settings: Settings) -> Ref:
        return _ref(value, settings)

    def schema(self, settings: Settings) -> Schema:
        return self._described(_SCHEMA)


@dataclass(frozen=True)
class UserRefs(Field):
    """One user reference or a list of them (in a body)."""

    max_items: int = 100
    repeatable: ClassVar[bool] = True

    def check(self, value: Any, settings: Settings) -> list[Ref]:
        values = value if isinstance(value, list) else [value]
        if not 1 <= len(values) <= self.max_items:
            raise Invalid(f"1 to {self.max_items} users")
        return [_ref(v, settings) for v in values]

    def schema(self, settings: Settings) -> Schema:
        return self._described(
            {"anyOf": [_SCHEMA, {"type": "array", "items": _SCHEMA, "maxItems": self.max_items}]}
        )


async def user_ids(pool: Queryable, settings: Settings, refs: list[Ref], field: str) -> list[int]:
    """The user ids of `refs`, in order, each once; external ids resolved (and
    provisioned, when the setting says so). 422 on `field` naming the
    external ids that name no user."""
    externals = list(dict.fromkeys(r for r in refs if isinstance(r, str)))
    found: dict[str, int] = {}
    if externals:
        if settings.platform_provisioning:
            rows = await pool.fetch(Q.provision_users, externals)
        else:
            rows = await pool.fetch(Q.users_of_external_ids, externals)
        found = {r["external_id"]: r["user_id"] for r in rows}
        if unknown := [e for e in externals if e not in found]:
            listed = ", ".join(EXTERNAL + e for e in unknown[:20])
            more = " ..." if len(unknown) > 20 else ""
            why = "" if settings.platform_provisioning else f" ({PROVISIONING_OFF})"
            problem = f"no such external ids: {listed}{more}{why}"
            raise ApiError(422, "invalid request body", {field: problem})
    return list(dict.fromkeys(found[r] if isinstance(r, str) else r for r in refs))
