"""The REST API of SPEC §4: one module per resource, `routes` for the app.

Paths end with a slash, as in the seed (Django REST framework); a request
without it is redirected (307, method and body kept) by Starlette's router.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from citelink.api import (
    audit,
    inbox,
    key_admin,
    notifications,
    openapi,
    sign_in,
    subscriptions,
    tags,
    users,
)
from citelink.api.endpoint import ApiRoute

routes: list[BaseRoute] = [
    ApiRoute("/api/token/", post=sign_in.obtain),
    ApiRoute("/api/token/refresh/", post=sign_in.refresh),
    ApiRoute("/api/token/verify/", post=sign_in.verify),
    ApiRoute("/api/token/blacklist/", post=sign_in.blacklist),
    ApiRoute("/api/token/revoke-all/", post=sign_in.revoke_all),
    ApiRoute("/api/users/", get=users.list_users, post=users.create_user),
    ApiRoute("/api/users/me/", get=users.me),
    ApiRoute("/api/users/external/", post=users.external_users),
    ApiRoute("/api/keys/", get=key_admin.list_keys, post=key_admin.create_key),
    ApiRoute("/api/keys/{id:int}/", delete=key_admin.revoke_key),
    ApiRoute("/api/tags/", get=tags.list_tags, post=tags.create_tag),
    ApiRoute(
        "/api/tags/{id:int}/", get=tags.get_tag, patch=tags.update_tag, delete=tags.delete_tag
    ),
    ApiRoute(
        "/api/subscriptions/",
        get=subscriptions.list_subscriptions,
        post=subscriptions.create_subscription,
    ),
    ApiRoute(
        "/api/subscriptions/{id:int}/",
        patch=subscriptions.update_subscription,
        delete=subscriptions.delete_subscription,
    ),
    ApiRoute(
        "/api/notifications/", get=notifications.list_notifications, post=notifications.publish
    ),
    ApiRoute(
        "/api/notifications/{id:int}/",
        get=notifications.get_notification,
        delete=notifications.cancel_notification,
    ),
    ApiRoute("/api/inbox/", get=inbox.list_items),
    ApiRoute("/api/inbox/counts/", get=inbox.counts),
    ApiRoute("/api/inbox/read-all/", post=inbox.read_all),
    ApiRoute("/api/inbox/seen-all/", post=inbox.seen_all),
    ApiRoute("/api/inbox/bulk/", post=inbox.bulk),
    ApiRoute(
        "/api/inbox/{id:int}/",
        get=inbox.get_item,
        patch=inbox.update_item,
        delete=inbox.delete_item,
    ),
    ApiRoute("/api/inbox/{id:int}/interact/", post=inbox.interact),
    ApiRoute("/api/audit/", get=audit.list_entries),
    ApiRoute("/openapi.json", get=openapi.document),
]
