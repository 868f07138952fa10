-- Users, tags and publishing: shared by the CLI, authentication and the API.

-- name: create_user
INSERT INTO users (username, password_hash, is_staff)
VALUES ($1, $2, $3)
RETURNING id, username, is_staff, is_active, created_at;

-- name: user_by_username
SELECT id, username, password_hash, is_staff, is_active
FROM users WHERE lower(username) = lower($1);

-- name: user_by_id
SELECT id, username, is_staff, is_active FROM users WHERE id = $1;

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
-- One statement, run outside an explicit transaction: it sets the audit actor
-- ($4, the publisher) for its own transaction, and commits as soon as it ends.
-- Inbox inserts are serialised until commit, so no client round trip may
-- happen while they are held.
WITH actor AS (SELECT set_config('citelink.actor_id', coalesce($4::bigint::text, ''), true))
INSERT INTO notification (tag_id, message, data, created_by)
SELECT $1, $2, $3, $4 FROM actor
RETURNING id, tag_id, message, data, created_at;

-- name: recipient_count
SELECT coalesce((changes -> 'recipients' ->> 1)::bigint, 0) AS recipients
FROM audit_log
WHERE resource = 'notification' AND object_id = $1 AND action = 'create';
