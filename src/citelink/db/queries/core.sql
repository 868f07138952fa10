-- Users, tags and publishing: shared by the CLI, authentication and the API.

-- name: create_user
INSERT INTO users (username, password_hash, is_staff)
VALUES ($1, $2, $3)
RETURNING id, username, is_staff, is_active, created_at, external_id;

-- name: user_by_username
SELECT id, username, password_hash, is_staff, is_active, token_generation
FROM users WHERE lower(username) = lower($1);

-- name: user_by_id
SELECT id, username, is_staff, is_active, token_generation FROM users WHERE id = $1;

-- name: count_users
SELECT count(*) FROM users;

-- name: list_users
SELECT id, username, is_staff, is_active, created_at FROM users ORDER BY id;

-- name: set_password
UPDATE users SET password_hash = $2 WHERE lower(username) = lower($1) RETURNING id;

-- name: set_active
UPDATE users SET is_active = $2 WHERE lower(username) = lower($1) RETURNING id;

-- name: tag_id_by_name
SELECT id FROM tag WHERE name = $1;

-- name: publish
-- One statement, run outside an explicit transaction (sql/triggers.sql).
SELECT (p.note).*, p.recipients
FROM citelink_publish($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) AS p;

-- name: publish_confirming
-- publish by user $10 (the actor) if they are still active staff with tokens
-- of generation $11: authentication and publishing in one round trip. No row
-- and nothing published otherwise (the function is called only for the row
-- of users that qualifies).
SELECT (p.note).*, p.recipients
FROM users AS u
CROSS JOIN LATERAL citelink_publish($1, $2, $3, $4, $5, $6, $7, $8, $9, u.id) AS p
WHERE u.id = $10 AND u.is_active AND u.is_staff AND u.token_generation = $11;

-- name: publish_many
-- Notifications of one publisher ($7, the actor) in one statement
-- (citelink.db.group_commit), in the order of the arrays.
SELECT (p.note).*, p.recipients
FROM citelink_publish_many($1, $2, $3, $4, $5, $6, $7) AS p;

-- name: publish_many_confirming
-- The same by user $7 if they are still active staff with tokens of
-- generation $8 (as publish_confirming); no rows and nothing published otherwise.
SELECT (p.note).*, p.recipients
FROM users AS u
CROSS JOIN LATERAL citelink_publish_many($1, $2, $3, $4, $5, $6, u.id) AS p
WHERE u.id = $7 AND u.is_active AND u.is_staff AND u.token_generation = $8;

-- name: scheduler_due_deliveries
-- Scheduled notifications due now (send_at, or the next try after a
-- failure), oldest first, up to $1, with how many recipients each would have
-- now (each tag's subscribers counted once); settled by scheduler_deliver.
WITH due AS MATERIALIZED (
    SELECT id, tag_id, cardinality(users) AS listed FROM notification
    WHERE delivered_at IS NULL AND greatest(send_at, retry_at) <= now()
    ORDER BY greatest(send_at, retry_at), id
    LIMIT $1
), tags AS (
    SELECT tag_id, (SELECT count(*) FROM subscription AS s WHERE s.tag_id = t.tag_id) AS subscribers
    FROM (SELECT DISTINCT tag_id FROM due WHERE tag_id IS NOT NULL) AS t
)
SELECT d.id, coalesce(t.subscribers, 0) + coalesce(d.listed, 0) AS recipients
FROM due AS d LEFT JOIN tags AS t ON t.tag_id = d.tag_id
ORDER BY d.id;

-- name: scheduler_deliver
-- Fans out those of $1 still due, skipping any another process holds
-- (sql/triggers.sql, "Schedules"); how many.
SELECT citelink_deliver($1::bigint[]);

-- name: scheduler_delivery_failed
SELECT citelink_delivery_failed($1, $2);

-- name: scheduler_due_expiries
-- Up to $1 notifications due to expire, but for $2 (those this process waits
-- to try again).
SELECT id FROM notification
WHERE expires_at IS NOT NULL AND expired_at IS NULL AND expires_at <= now()
  AND id <> ALL ($2::bigint[])
ORDER BY expires_at, id
LIMIT $1;

-- name: scheduler_expire
SELECT citelink_expire($1::bigint[]);

-- name: scheduler_next_delivery
-- When delivery has work next (through the partial index).
SELECT min(greatest(send_at, retry_at)) FROM notification WHERE delivered_at IS NULL;

-- name: scheduler_next_expiry
SELECT min(expires_at) FROM notification WHERE expires_at IS NOT NULL AND expired_at IS NULL;

-- name: list_tags
SELECT t.id, t.name, (SELECT count(*) FROM subscription s WHERE s.tag_id = t.id) AS subscribers
FROM tag AS t
ORDER BY t.name;

-- name: ensure_tag
-- The tag named $1, made if missing; `created` says which.
WITH made AS (INSERT INTO tag (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id)
SELECT id, true AS created FROM made
UNION ALL
SELECT id, false FROM tag WHERE name = $1
LIMIT 1;

-- name: has_item_on_tag
SELECT EXISTS (
    SELECT 1 FROM user_notification AS i JOIN notification AS n ON n.id = i.notification_id
    WHERE i.user_id = $1 AND n.tag_id = $2
);
