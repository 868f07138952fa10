-- API keys (citelink/identity/api_keys.py, citelink/api/key_admin.py) and external ids.

-- name: api_key_by_prefix
SELECT id, name, prefix, hash, scopes, revoked_at IS NOT NULL AS revoked
FROM api_key WHERE prefix = $1;

-- name: create_api_key
INSERT INTO api_key (name, prefix, hash, scopes, created_by, created_by_key)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, name, prefix, scopes, created_at, revoked_at, created_by, created_by_key;

-- name: api_keys_page
SELECT id, name, prefix, scopes, created_at, revoked_at, created_by, created_by_key
FROM api_key WHERE id < $1 ORDER BY id DESC LIMIT $2;

-- name: list_api_keys
SELECT id, name, prefix, scopes, created_at, revoked_at FROM api_key ORDER BY id;

-- name: revoke_api_key
-- By id or by prefix; a key revoked before keeps its first revocation time.
UPDATE api_key SET revoked_at = coalesce(revoked_at, now())
WHERE id = $1 OR prefix = $2
RETURNING id, name, prefix, revoked_at;

-- name: user_by_external_id
-- tokens_valid_after in seconds since the epoch, as a token's `iat`.
SELECT id, username, is_staff, is_active, token_generation,
       extract(epoch FROM tokens_valid_after)::float8 AS tokens_valid_after
FROM users WHERE external_id = $1;

-- name: provision_users
-- The users of these external ids, made for those not seen before.
SELECT external_id, user_id FROM citelink_provision_users($1::text[]);

-- name: users_of_external_ids
SELECT u.external_id, u.id AS user_id FROM users AS u WHERE u.external_id = ANY ($1::text[]);

-- name: external_users
SELECT id, username, is_staff, is_active, created_at, external_id
FROM users WHERE external_id = ANY ($1::text[]) ORDER BY id;
