-- Revocable tokens (citelink/api/sign_in.py): refresh token families and the
-- user's token generation.

-- name: start_refresh_family
INSERT INTO refresh_token_family (user_id, jti, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
RETURNING id;

-- name: lock_refresh_family
-- The family of a refresh token, locked until commit: of two uses of one
-- token at once, the second sees the first one's rotation.
SELECT f.jti, f.revoked_at IS NOT NULL AS revoked, u.is_active, u.is_staff, u.token_generation
FROM refresh_token_family AS f
JOIN users AS u ON u.id = f.user_id
WHERE f.id = $1 AND f.user_id = $2
FOR UPDATE OF f;

-- name: refresh_family_state
SELECT f.jti, f.revoked_at IS NOT NULL AS revoked
FROM refresh_token_family AS f
WHERE f.id = $1 AND f.user_id = $2;

-- name: rotate_refresh_family
UPDATE refresh_token_family
SET jti = $2, expires_at = now() + make_interval(secs => $3)
WHERE id = $1;

-- name: revoke_refresh_family
UPDATE refresh_token_family SET revoked_at = now()
WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL
RETURNING id;

-- name: revoke_user_tokens
-- Sign out everywhere: every token issued so far is of an older generation.
UPDATE users SET token_generation = token_generation + 1 WHERE id = $1;
