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
    token_generation integer  NOT NULL DEFAULT 0,
    -- The platform's own id of the user (the `sub` of its tokens), if any.
    external_id   text        UNIQUE CHECK (external_id ~ '^[^[:cntrl:]]{1,255}$'),
    -- When the generation last moved on. Platform tokens carry no generation:
    -- one issued (`iat`) at or before this time is refused instead.
    tokens_valid_after timestamptz
);

-- A `critical` tag's notifications reach every subscriber live, whatever
-- their preference.
CREATE TABLE tag (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    critical   boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- `mode`, the subscriber's preference for the tag: `live` (stored, counted
-- and pushed), `inbox` (stored and counted, not pushed), `muted` (stored, not
-- counted as unseen or unread, not pushed).
CREATE TABLE subscription (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tag_id     bigint      NOT NULL REFERENCES tag (id) ON DELETE CASCADE,
    mode       text        NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'inbox', 'muted')),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, tag_id)
);

-- A tag that has notifications cannot be deleted (RESTRICT): inboxes keep
-- their history. A message is 1 to 100,000 characters for every writer (the
-- API, the CLI, plain SQL). The API's CITELINK_MAX_MESSAGE_CHARS may be set
-- lower, never higher: a CHECK is assumed immutable, so it cannot follow a
-- setting (one reading a session setting would be one `SET` away from off).
-- How many inbox rows it made is in notification_recipients (below).
-- Who gets it: the subscribers of `tag_id` and the users listed in `users`
-- (once each; the users must exist when it is inserted). When: at insert, or
-- at `send_at` (the app's scheduler fans out what is due, sql/triggers.sql
-- "Schedules"); `delivered_at` is when it was fanned out, NULL while it waits
-- (set by a trigger when there is a `send_at`; otherwise now, the default).
-- A scheduled delivery that failed keeps its `delivery_error`, counts its
-- `delivery_attempts` and is tried again at `retry_at` (infinity: given up).
-- Until when: `expires_at`, after which its
-- items leave lists and counts (`expired_at`: when they were marked). With a
-- `group_key`, a user's unread item of the same key from the last
-- `group_window` is updated instead of a new one made ("Grouping").
CREATE TABLE notification (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tag_id       bigint      REFERENCES tag (id) ON DELETE RESTRICT,
    users        bigint[]    CHECK (cardinality(users) BETWEEN 1 AND 10000),
    message      text        NOT NULL CHECK (char_length(message) BETWEEN 1 AND 100000),
    data         jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    priority     text        NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high')),
    group_key    text        CHECK (char_length(group_key) BETWEEN 1 AND 200),
    group_window interval    NOT NULL DEFAULT '10 minutes' CHECK (group_window > '0'),
    send_at      timestamptz,
    delivered_at timestamptz DEFAULT now(),
    delivery_attempts integer NOT NULL DEFAULT 0,
    delivery_error text,
    retry_at     timestamptz,
    expires_at   timestamptz,
    expired_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   bigint      REFERENCES users (id) ON DELETE SET NULL,
    CHECK (tag_id IS NOT NULL OR users IS NOT NULL),
    -- data nests 100 levels at most, as the API takes it: no object or array
    -- 100 levels below the top one.
    CONSTRAINT notification_data_depth CHECK (
        NOT jsonb_path_exists(data, 'strict $.**{100} ? (@.type() == "object" || @.type() == "array")')
    )
);

-- How many inbox rows each notification made (or updated, grouped), kept by
-- triggers; the API answers it from here, never from the audit log. A table
-- of its own, inserted once by the fan-out: updating the notification row the
-- same statement had just inserted cost a quarter of a publish. No row: none.
CREATE TABLE notification_recipients (
    notification_id bigint PRIMARY KEY,
    recipients      bigint NOT NULL
);

-- One row per recipient of a notification; `id` is the inbox item id.
-- `position` numbers each user's items 1, 2, 3, ... in commit order, without
-- holes: it is taken from the user's inbox_count row while that row is locked
-- until commit (sql/triggers.sql, "Per-user order"), so a transaction that
-- commits later gets a later number, and one that aborts gives its numbers
-- back. Lists, `resume` and back-fill follow it; ids are names.
-- user_id and notification_id are kept valid by triggers rather than foreign
-- keys, whose per-row checks were most of a 100,000-row fan-out
-- ("Inbox keys" in sql/triggers.sql, tested under every isolation level).
-- States: seen (the badge), read (implies seen), archived (out of the default
-- list, not deleted), interacted (a click on the item's link or one of its
-- actions: implies read), deleted (the seed's soft delete: hidden for good).
-- Each flag's time is stamped by a trigger, whoever sets it.
CREATE TABLE user_notification (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      NOT NULL,
    notification_id bigint      NOT NULL,
    position        bigint      NOT NULL,
    is_seen         boolean     NOT NULL DEFAULT false,
    seen_at         timestamptz,
    is_read         boolean     NOT NULL DEFAULT false,
    read_at         timestamptz,
    is_archived     boolean     NOT NULL DEFAULT false,
    archived_at     timestamptz,
    interacted_at   timestamptz,
    -- The action clicked (its id in the notification's data.actions); NULL for
    -- the item's own link.
    action          text        CHECK (char_length(action) BETWEEN 1 AND 100),
    -- Past its notification's expires_at (marked by the scheduler; lists
    -- also leave out what is past it and not marked yet).
    is_expired      boolean     NOT NULL DEFAULT false,
    -- How it was delivered: the subscription's mode (`live` for a critical
    -- tag or a listed user), and the notification's priority.
    mode            text        NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'inbox', 'muted')),
    priority        text        NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high')),
    -- A grouped item: its key, how many notifications it collects, and the
    -- newest of them (`notification_id` is the latest, whose message it
    -- shows; `notification_ids` the last ten; group_member has them all).
    group_key       text,
    count           integer     NOT NULL DEFAULT 1,
    notification_ids bigint[],
    is_deleted      boolean     NOT NULL DEFAULT false,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- notification_id first: the fan-out inserts in this order (appending to
    -- the index), and it finds a notification's rows (its recipients, removal).
    UNIQUE (notification_id, user_id)
);

-- Every notification a grouped inbox item has collected, once it has more
-- than one (sql/triggers.sql, "Grouping"); removed with the item.
CREATE TABLE group_member (
    item_id         bigint NOT NULL,
    notification_id bigint NOT NULL,
    PRIMARY KEY (item_id, notification_id)
);

-- One row per user, kept by triggers: the counts of the default list (items
-- neither deleted, archived nor expired: `total`, and of those the `unread`
-- and `unseen` ones not muted) and of the `archived` ones, so the badge stays O(1) at millions
-- of inbox rows; and the position of the user's newest item. Whoever adds items for a user locks this row
-- until commit: that lock is what orders the user's items. Every fan-out
-- updates its recipients' rows: half of each page is left free so that the
-- new versions stay on their page (HOT) and need no index entry.
CREATE TABLE inbox_count (
    user_id       bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    unseen        bigint NOT NULL DEFAULT 0,
    unread        bigint NOT NULL DEFAULT 0,
    total         bigint NOT NULL DEFAULT 0,
    archived      bigint NOT NULL DEFAULT 0,
    last_position bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 50);

-- One row per sign-in: the family of its refresh tokens. Refreshing replaces
-- `jti` with the new token's (rotation); presenting a token of the family
-- that is not the current one revokes it (reuse of a stolen token), as does
-- signing out. Rows are pruned once expired (citelink.db.pruning).
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
    actor_id   bigint,
    -- The API key a change was made with, read like the actor from a setting
    -- of the transaction; as a default, every audit row the triggers write
    -- gets it without naming it.
    api_key_id bigint      DEFAULT nullif(current_setting('citelink.api_key_id', true), '')::bigint
);

-- Keys for services (citelink/identity/api_keys.py). Only a SHA-256 of the secret is
-- kept, shown once when made; `prefix` names the key in lists and logs.
CREATE TABLE api_key (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix     text        NOT NULL UNIQUE,
    hash       text        NOT NULL,
    scopes     text[]      NOT NULL
        CHECK (cardinality(scopes) >= 1 AND scopes <@ ARRAY['publish', 'admin']),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    -- Who made it: a staff user, or a key with the admin scope (the CLI: neither).
    created_by bigint      REFERENCES users (id) ON DELETE SET NULL,
    created_by_key bigint  REFERENCES api_key (id) ON DELETE SET NULL
);

-- Which sql/triggers.sql made the database's functions and triggers (its
-- SHA-256; one row): migrating applies the file again when it has changed
-- (citelink.db.migrations), so migrations carry table changes only.
CREATE TABLE sql_functions (
    sha256     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Views -----------------------------------------------------------------------

-- An inbox item as REST and WebSocket show it (`id` is the inbox row id, `tag`
-- the tag id), with the owner and deleted flag to filter on. The planner
-- inlines it, so the partial inbox indexes still apply.
-- `expired` is evaluated here, on read: an item past its notification's
-- expires_at is expired even before the scheduler marks it (is_expired).
CREATE VIEW inbox_item AS
SELECT i.id, i.user_id, i.is_deleted, i.notification_id, n.tag_id AS tag,
       t.name AS tag_name, n.message, n.data, n.created_at AS timestamp,
       i.is_read, i.read_at, i.position, i.is_seen, i.seen_at, i.is_archived,
       i.archived_at, i.interacted_at, i.action, i.priority, i.group_key, i.count,
       i.notification_ids, n.expires_at,
       i.is_expired OR coalesce(n.expires_at <= now(), false) AS expired
FROM user_notification AS i
JOIN notification AS n ON n.id = i.notification_id
LEFT JOIN tag AS t ON t.id = n.tag_id;

-- Indexes --------------------------------------------------------------------

CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));

-- Expired refresh token families, oldest first (pruning).
CREATE INDEX refresh_token_family_expiry_idx ON refresh_token_family (expires_at);

-- Fan-out reads every subscriber of one tag, and their mode, from the index
-- alone.
CREATE INDEX subscription_tag_user_idx ON subscription (tag_id, user_id) INCLUDE (mode);

CREATE INDEX notification_tag_idx ON notification (tag_id, id);
-- What the scheduler has to fan out (citelink_due_at: send_at, or the next
-- try after a failure), and to expire.
CREATE INDEX notification_due_idx
    ON notification (greatest(send_at, retry_at)) WHERE delivered_at IS NULL;
CREATE INDEX notification_expiring_idx
    ON notification (expires_at) WHERE expires_at IS NOT NULL AND expired_at IS NULL;

-- Inbox keyset pages (newest first) and resume (oldest first), in each user's
-- order: the default list (neither deleted nor archived), its unread and read
-- items, and the archived ones. Unseen items are unread ones too (reading
-- implies seen), so they are found through the unread index.
CREATE INDEX user_notification_inbox_idx
    ON user_notification (user_id, position) WHERE NOT is_deleted AND NOT is_archived;
CREATE INDEX user_notification_unread_idx
    ON user_notification (user_id, position)
    WHERE NOT is_deleted AND NOT is_archived AND NOT is_read;
CREATE INDEX user_notification_read_idx
    ON user_notification (user_id, position)
    WHERE NOT is_deleted AND NOT is_archived AND is_read;
CREATE INDEX user_notification_archived_idx
    ON user_notification (user_id, position) WHERE NOT is_deleted AND is_archived;
-- With the others, every row of a user (to remove a deleted user's rows);
-- new items are not deleted, so the fan-out never writes to it.
CREATE INDEX user_notification_deleted_idx
    ON user_notification (user_id, position) WHERE is_deleted;
-- High-priority unread items, pinned to the top of the default list.
CREATE INDEX user_notification_pinned_idx
    ON user_notification (user_id, position)
    WHERE priority = 'high' AND NOT is_read AND NOT is_deleted AND NOT is_archived;
-- A user's unread items of a group, for the next notification of its key.
CREATE INDEX user_notification_group_idx
    ON user_notification (user_id, group_key, position)
    WHERE group_key IS NOT NULL AND NOT is_read AND NOT is_deleted AND NOT is_archived;

CREATE INDEX audit_log_object_idx ON audit_log (resource, object_id, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, id);
CREATE INDEX audit_log_api_key_idx ON audit_log (api_key_id, id) WHERE api_key_id IS NOT NULL;
