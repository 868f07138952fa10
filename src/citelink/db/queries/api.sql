-- The REST API: users, tags, subscriptions, notifications and the audit trail.
-- (Inbox statements are in inbox.sql, shared with the WebSocket relay.)
-- Lists are keyset pages, newest first: rows with id < $before, limit + 1
-- rows so the caller knows whether another page follows.

-- name: users_page
SELECT id, username, is_staff, is_active, created_at, external_id
FROM users
WHERE id < $1
ORDER BY id DESC
LIMIT $2;

-- name: tags_page
SELECT id, name, critical FROM tag WHERE id < $1 ORDER BY id DESC LIMIT $2;

-- name: tag_by_id
SELECT id, name, critical FROM tag WHERE id = $1;

-- name: create_tag
INSERT INTO tag (name, critical) VALUES ($1, $2) RETURNING id, name, critical;

-- name: update_tag
-- NULL leaves a field as it is.
UPDATE tag SET name = coalesce($2, name), critical = coalesce($3, critical)
WHERE id = $1
RETURNING id, name, critical;

-- name: delete_tag
DELETE FROM tag WHERE id = $1 RETURNING id;

-- name: subscriptions_page
-- $1: only this user's (NULL: everyone's), $2: only this tag's (NULL: any).
SELECT id, user_id AS "user", tag_id AS tag, mode
FROM subscription
WHERE ($1::bigint IS NULL OR user_id = $1)
  AND ($2::bigint IS NULL OR tag_id = $2)
  AND id < $3
ORDER BY id DESC
LIMIT $4;

-- name: lock_subscriber
-- Locks the user row, so concurrent subscribes of one user are counted one
-- after the other (the limit holds); NULL when there is no such user. The
-- lock does not block the foreign-key checks of other inserts.
SELECT (SELECT count(*) FROM subscription WHERE user_id = u.id) AS subscriptions
FROM users AS u
WHERE u.id = $1
FOR NO KEY UPDATE;

-- name: create_subscription
-- No row when the user is already subscribed to the tag.
INSERT INTO subscription (user_id, tag_id, mode) VALUES ($1, $2, $3)
ON CONFLICT (user_id, tag_id) DO NOTHING
RETURNING id, user_id AS "user", tag_id AS tag, mode;

-- name: set_subscription_mode
-- $3: the owner it must belong to (NULL for staff, who may change any).
UPDATE subscription SET mode = $2
WHERE id = $1 AND ($3::bigint IS NULL OR user_id = $3)
RETURNING id, user_id AS "user", tag_id AS tag, mode;

-- name: delete_subscription
-- $2: the owner it must belong to (NULL for staff, who may remove any).
DELETE FROM subscription
WHERE id = $1 AND ($2::bigint IS NULL OR user_id = $2)
RETURNING id;

-- name: notifications_page
-- /*status*/ stands for a status's condition (citelink.api.notifications).
SELECT id, tag_id, users, message, data, priority, group_key, group_window, send_at,
       delivered_at, delivery_attempts, delivery_error, retry_at, expires_at, expired_at,
       created_at, recipients
FROM notification
WHERE ($1::bigint IS NULL OR tag_id = $1) AND /*status*/ AND id < $2
ORDER BY id DESC
LIMIT $3;

-- name: notification_by_id
SELECT id, tag_id, users, message, data, priority, group_key, group_window, send_at,
       delivered_at, delivery_attempts, delivery_error, retry_at, expires_at, expired_at,
       created_at, recipients
FROM notification
WHERE id = $1;

-- name: cancel_notification
-- Only while it waits: once the scheduler has delivered it (it holds the row
-- while it does), its items are in inboxes.
DELETE FROM notification WHERE id = $1 AND delivered_at IS NULL RETURNING id;

-- name: unknown_users
-- Those of the given user ids that name no user.
SELECT array_agg(u ORDER BY u) FROM unnest($1::bigint[]) AS u
WHERE NOT EXISTS (SELECT FROM users WHERE id = u);

-- name: audit_page
SELECT id, created_at AS timestamp, resource, object_id, action, changes, actor_id AS actor,
       api_key_id AS actor_key
FROM audit_log
WHERE ($1::text IS NULL OR resource = $1)
  AND ($2::bigint IS NULL OR object_id = $2)
  AND ($3::bigint IS NULL OR actor_id = $3)
  AND ($6::bigint IS NULL OR api_key_id = $6)
  AND id < $4
ORDER BY id DESC
LIMIT $5;
