-- Users, tags and publishing: shared by the CLI, authentication and the API.

-- name: create_user
INSERT INTO users (username, password_hash, is_staff)
VALUES ($1, $2, $3)
RETURNING id, username, is_staff, is_active, created_at;

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
SELECT id, tag_id, message, data, created_at, recipients
FROM citelink_publish($1, $2, $3, $4);
