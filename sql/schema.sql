-- citelink schema: tables, views and indexes.
-- This file and sql/triggers.sql are the readable source of truth;
-- migrations/ must build exactly the same database (tests/test_migrations.py).

-- Tables ---------------------------------------------------------------------

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text        NOT NULL CHECK (username ~ '^[A-Za-z0-9_.@+-]{1,150}$'),
    password_hash text        NOT NULL,
    is_staff      boolean     NOT NULL DEFAULT false,
    is_active     boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Carried by every token the user gets; a token of an older generation is
    -- refused. Bumped by a trigger when the password changes or the user is
    -- deactivated, and by the app when the user signs out everywhere.
    token_generation integer  NOT NULL DEFAULT 0
);

CREATE TABLE tag (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subscription (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tag_id     bigint      NOT NULL REFERENCES tag (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, tag_id)
);

-- A tag that has notifications cannot be deleted (RESTRICT): inboxes keep
-- their history.
CREATE TABLE notification (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tag_id     bigint      NOT NULL REFERENCES tag (id) ON DELETE RESTRICT,
    message    text        NOT NULL,
    data       jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by bigint      REFERENCES users (id) ON DELETE SET NULL
);

-- One row per recipient of a notification. The id is the inbox item id and,
-- because inserts are serialised until commit (see triggers.sql), id order
-- is commit order: "every item after id N" is a gapless resume cursor.
-- user_id and notification_id are checked, and their rows removed with the
-- user or notification, by triggers rather than foreign keys: a whole
-- statement at once instead of one row at a time ("Inbox keys" in triggers.sql).
CREATE TABLE user_notification (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      NOT NULL,
    notification_id bigint      NOT NULL,
    is_read         boolean     NOT NULL DEFAULT false,
    read_at         timestamptz,
    is_deleted      boolean     NOT NULL DEFAULT false,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- notification_id first: the fan-out inserts in this order (appending to
    -- the index), and it finds a notification's rows (recipient count, removal).
    UNIQUE (notification_id, user_id)
);

-- Per-user counters kept by triggers, so the unread count stays O(1) at
-- millions of inbox rows. `total` counts non-deleted items.
CREATE TABLE inbox_count (
    user_id bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    unread  bigint NOT NULL DEFAULT 0,
    total   bigint NOT NULL DEFAULT 0
);

-- One row per sign-in: the family of its refresh tokens. Refreshing replaces
-- `jti` with the new token's (rotation); presenting a token of the family
-- that is not the current one revokes it (reuse of a stolen token), as does
-- signing out. Rows are pruned once expired (citelink.pruning).
CREATE TABLE refresh_token_family (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    jti        text        NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    resource   text        NOT NULL,
    object_id  bigint      NOT NULL,
    action     text        NOT NULL CHECK (action IN ('create', 'update', 'delete')),
    changes    jsonb       NOT NULL,
    actor_id   bigint
);

-- Views -----------------------------------------------------------------------

-- An inbox item as REST and WebSocket show it (`id` is the inbox row id, `tag`
-- the tag id), with the owner and deleted flag to filter on. The planner
-- inlines it, so the partial inbox indexes still apply.
CREATE VIEW inbox_item AS
SELECT i.id, i.user_id, i.is_deleted, i.notification_id, n.tag_id AS tag,
       t.name AS tag_name, n.message, n.data, n.created_at AS timestamp,
       i.is_read, i.read_at
FROM user_notification AS i
JOIN notification AS n ON n.id = i.notification_id
JOIN tag AS t ON t.id = n.tag_id;

-- Indexes --------------------------------------------------------------------

CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));

-- Expired refresh token families, oldest first (pruning).
CREATE INDEX refresh_token_family_expiry_idx ON refresh_token_family (expires_at);

-- Fan-out reads every subscriber of one tag.
CREATE INDEX subscription_tag_user_idx ON subscription (tag_id, user_id);

CREATE INDEX notification_tag_idx ON notification (tag_id, id);

-- Inbox keyset pages (newest first) and resume (oldest first), by status.
CREATE INDEX user_notification_inbox_idx
    ON user_notification (user_id, id) WHERE NOT is_deleted;
CREATE INDEX user_notification_unread_idx
    ON user_notification (user_id, id) WHERE NOT is_deleted AND NOT is_read;
CREATE INDEX user_notification_read_idx
    ON user_notification (user_id, id) WHERE NOT is_deleted AND is_read;
-- With the inbox index, every row of a user (to remove a deleted user's rows);
-- new items are not deleted, so the fan-out never writes to it.
CREATE INDEX user_notification_deleted_idx
    ON user_notification (user_id, id) WHERE is_deleted;

CREATE INDEX audit_log_object_idx ON audit_log (resource, object_id, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, id);
