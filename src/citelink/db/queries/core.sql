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

-- name: set_staff
UPDATE users SET is_staff = $2 WHERE lower(username) = lower($1) RETURNING id;

-- name: tag_id_by_name
SELECT id FROM tag WHERE name = $1;

-- name: publish
-- One statement, run outside an explicit transaction (sql/triggers.sql).
SELECT id, tag_id, users, message, data, priority, group_key, group_window, send_at,
       delivered_at, expires_at, expired_at, created_at, recipients
FROM citelink_publish($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);

-- name: scheduler_deliver
-- Scheduled notifications whose send_at has come, up to $1 (sql/triggers.sql).
SELECT citelink_deliver_due($1);

-- name: scheduler_expire
SELECT citelink_expire_due($1);

-- name: scheduler_next_due
-- When the scheduler has work next: the earliest send_at or expires_at
-- still to settle (both through partial indexes).
SELECT least(
    (SELECT min(send_at) FROM notification WHERE delivered_at IS NULL),
    (SELECT min(expires_at) FROM notification
     WHERE expires_at IS NOT NULL AND expired_at IS NULL));

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
