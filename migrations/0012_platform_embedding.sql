-- Embedding in a platform (the same as sql/schema.sql and sql/triggers.sql):
--  * users.external_id, the platform's own user id (the `sub` of its tokens),
--    and citelink_provision_users() that makes users of unseen ones;
--  * api_key, keys for services, stored as a SHA-256 of their secret;
--  * audit_log.api_key_id, the key a change was made with.
-- depends: 0011_data_depth

ALTER TABLE users
    ADD COLUMN external_id text UNIQUE CHECK (external_id ~ '^[^[:cntrl:]]{1,255}$');

ALTER TABLE audit_log
    ADD COLUMN api_key_id bigint
        DEFAULT nullif(current_setting('citelink.api_key_id', true), '')::bigint;

CREATE TABLE api_key (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix     text        NOT NULL UNIQUE,
    hash       text        NOT NULL,
    scopes     text[]      NOT NULL
        CHECK (cardinality(scopes) >= 1 AND scopes <@ ARRAY['publish', 'admin']),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    created_by bigint      REFERENCES users (id) ON DELETE SET NULL
);

CREATE INDEX audit_log_api_key_idx ON audit_log (api_key_id, id) WHERE api_key_id IS NOT NULL;

CREATE FUNCTION citelink_provision_users(external_ids text[])
RETURNS TABLE (external_id text, user_id bigint)
LANGUAGE sql AS $$
    INSERT INTO users (username, password_hash, external_id)
    SELECT 'ext.' || e, '!', e FROM unnest(external_ids) AS e
    WHERE e ~ '^[A-Za-z0-9_.@+-]{1,146}$'
    ON CONFLICT DO NOTHING;
    INSERT INTO users (username, password_hash, external_id)
    SELECT 'ext.' || md5(e), '!', e FROM unnest(external_ids) AS e
    ON CONFLICT DO NOTHING;
    SELECT u.external_id, u.id FROM users AS u WHERE u.external_id = ANY (external_ids);
$$;
