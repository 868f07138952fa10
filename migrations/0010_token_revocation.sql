-- Revocable tokens (the same as sql/schema.sql and sql/triggers.sql):
--  * users.token_generation, carried by every token and checked on every
--    use, bumped when the password changes or the user is deactivated (by a
--    trigger) and when they sign out everywhere (by the app);
--  * refresh_token_family: one row per sign-in, so that refresh tokens
--    rotate, one can be revoked, and reuse of a rotated one revokes them all;
--  * the `revoke` event on every new generation, not only on deactivation.
-- depends: 0009_delivery_controls

ALTER TABLE users ADD COLUMN token_generation integer NOT NULL DEFAULT 0;

CREATE TABLE refresh_token_family (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    jti        text        NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX refresh_token_family_expiry_idx ON refresh_token_family (expires_at);

-- A new password or a deactivation revokes every token the user holds: a
-- token carries the generation it was issued in.
CREATE FUNCTION citelink_bump_token_generation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.token_generation := OLD.token_generation + 1;
    RETURN NEW;
END
$$;

DROP TRIGGER citelink_revoke_deactivated_user ON users;
DROP TRIGGER citelink_revoke_deleted_user ON users;

-- A user's tokens revoked (a new generation) or the user deleted: their open
-- sockets are closed at once (the relay closes them with 4401) instead of
-- living on until their token expires.
CREATE OR REPLACE FUNCTION citelink_publish_user_revoked() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('citelink_events',
                          concat_ws(' ', 'revoke', OLD.id, OLD.token_generation + 1, 0));
    ELSE
        PERFORM pg_notify('citelink_events',
                          concat_ws(' ', 'revoke', NEW.id, NEW.token_generation,
                                    NEW.is_active::int));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER citelink_bump_token_generation
    BEFORE UPDATE OF password_hash, is_active ON users
    FOR EACH ROW
    WHEN (NEW.password_hash IS DISTINCT FROM OLD.password_hash OR (OLD.is_active AND NOT NEW.is_active))
    EXECUTE FUNCTION citelink_bump_token_generation();

CREATE TRIGGER citelink_revoke_user_tokens
    AFTER UPDATE ON users
    FOR EACH ROW WHEN (NEW.token_generation <> OLD.token_generation)
    EXECUTE FUNCTION citelink_publish_user_revoked();

CREATE TRIGGER citelink_revoke_deleted_user
    AFTER DELETE ON users
    FOR EACH ROW WHEN (OLD.is_active)
    EXECUTE FUNCTION citelink_publish_user_revoked();
