-- Initial schema: tables, indexes, functions and triggers.
-- A frozen copy of sql/schema.sql + sql/triggers.sql at version 0.1.0;
-- later changes go in new migrations, and tests/test_migrations.py checks both agree.

-- Tables ---------------------------------------------------------------------

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text        NOT NULL CHECK (username ~ '^[A-Za-z0-9_.@+-]{1,150}$'),
    password_hash text        NOT NULL,
    is_staff      boolean     NOT NULL DEFAULT false,
    is_active     boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
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
CREATE TABLE user_notification (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    notification_id bigint      NOT NULL REFERENCES notification (id) ON DELETE CASCADE,
    is_read         boolean     NOT NULL DEFAULT false,
    read_at         timestamptz,
    is_deleted      boolean     NOT NULL DEFAULT false,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, notification_id)
);

-- Per-user counters kept by triggers, so the unread count stays O(1) at
-- millions of inbox rows. `total` counts non-deleted items.
CREATE TABLE inbox_count (
    user_id bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    unread  bigint NOT NULL DEFAULT 0,
    total   bigint NOT NULL DEFAULT 0
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

-- Indexes --------------------------------------------------------------------

CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));

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
CREATE INDEX user_notification_notification_idx ON user_notification (notification_id);

CREATE INDEX audit_log_object_idx ON audit_log (resource, object_id, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, id);

-- Functions ------------------------------------------------------------------

-- The API user behind the current transaction (set by the app with
-- set_config('citelink.actor_id', id, true)); NULL for plain SQL.
CREATE FUNCTION citelink_actor_id() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('citelink.actor_id', true), '')::bigint
$$;

-- field -> [old, new] for every field that differs, the id left out.
CREATE FUNCTION citelink_row_diff(old_row jsonb, new_row jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_object_agg(key, jsonb_build_array(old_row -> key, new_row -> key)), '{}')
    FROM (
        SELECT jsonb_object_keys(coalesce(old_row, '{}')) AS key
        UNION
        SELECT jsonb_object_keys(coalesce(new_row, '{}'))
    ) AS keys
    WHERE key <> 'id' AND (old_row -> key) IS DISTINCT FROM (new_row -> key)
$$;

-- One audit row per changed row of the table the trigger is on.
CREATE FUNCTION citelink_audit_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
        SELECT TG_TABLE_NAME, r.id, 'create', citelink_row_diff(NULL, to_jsonb(r)), citelink_actor_id()
        FROM new_rows AS r ORDER BY r.id;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
        SELECT TG_TABLE_NAME, d.id, 'update', d.changes, citelink_actor_id()
        FROM (
            SELECT n.id, citelink_row_diff(to_jsonb(o), to_jsonb(n)) AS changes
            FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
        ) AS d
        WHERE d.changes <> '{}'
        ORDER BY d.id;
    ELSE
        INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
        SELECT TG_TABLE_NAME, r.id, 'delete', citelink_row_diff(to_jsonb(r), NULL), citelink_actor_id()
        FROM old_rows AS r ORDER BY r.id;
    END IF;
    RETURN NULL;
END
$$;

-- One inbox row per subscriber of the tag, in one set-based statement, and
-- one audit row per notification that summarises the fan-out.
CREATE FUNCTION citelink_fan_out_notification() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    WITH items AS (
        INSERT INTO user_notification (user_id, notification_id)
        SELECT s.user_id, n.id
        FROM new_rows AS n JOIN subscription AS s ON s.tag_id = n.tag_id
        ORDER BY n.id, s.user_id
        RETURNING notification_id
    ), recipients AS (
        SELECT notification_id, count(*) AS total FROM items GROUP BY notification_id
    )
    INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
    SELECT 'notification', n.id, 'create',
           citelink_row_diff(NULL, to_jsonb(n))
               || jsonb_build_object('recipients', jsonb_build_array(NULL, coalesce(r.total, 0))),
           citelink_actor_id()
    FROM new_rows AS n LEFT JOIN recipients AS r ON r.notification_id = n.id
    ORDER BY n.id;
    RETURN NULL;
END
$$;

-- Inbox inserts are serialised until commit: a transaction can only take
-- inbox ids once every earlier inserter has committed (or aborted), so ids
-- are handed out in commit order and `id > last seen` never skips an item
-- that committed late. Cost: publishers commit one at a time.
CREATE FUNCTION citelink_serialize_inbox_inserts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7155521937341702721);  -- 'citelink inbox'
    RETURN NULL;
END
$$;

-- read_at / deleted_at follow the flags, whoever changes them.
CREATE FUNCTION citelink_stamp_item_state() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_read IS DISTINCT FROM OLD.is_read THEN
        NEW.read_at := CASE WHEN NEW.is_read THEN now() END;
    END IF;
    IF NEW.is_deleted IS DISTINCT FROM OLD.is_deleted THEN
        NEW.deleted_at := CASE WHEN NEW.is_deleted THEN now() END;
    END IF;
    RETURN NEW;
END
$$;

-- New inbox rows: bump the owners' counters, then one event per row.
CREATE FUNCTION citelink_publish_new_items() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    sent bigint;
BEGIN
    WITH counts AS (
        INSERT INTO inbox_count AS c (user_id, unread, total)
        SELECT user_id,
               count(*) FILTER (WHERE NOT is_read AND NOT is_deleted),
               count(*) FILTER (WHERE NOT is_deleted)
        FROM new_rows GROUP BY user_id
        ON CONFLICT (user_id) DO UPDATE
            SET unread = c.unread + excluded.unread, total = c.total + excluded.total
        RETURNING c.user_id, c.unread
    )
    SELECT count(*) INTO sent FROM (
        SELECT pg_notify('citelink_events', concat_ws(' ', 'new', e.user_id, e.id, e.notification_id, e.unread))
        FROM (
            SELECT r.user_id, r.id, r.notification_id, c.unread
            FROM new_rows AS r JOIN counts AS c ON c.user_id = r.user_id
            WHERE NOT r.is_deleted
            ORDER BY r.id OFFSET 0
        ) AS e
    ) AS events;
    RETURN NULL;
END
$$;

-- Changed read/deleted flags: adjust counters, then one event per row.
CREATE FUNCTION citelink_publish_item_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    sent bigint;
BEGIN
    WITH changed AS (
        SELECT n.id, n.user_id, n.notification_id,
               CASE WHEN n.is_deleted AND NOT o.is_deleted THEN 'delete'
                    WHEN o.is_deleted AND NOT n.is_deleted THEN 'restore'
                    WHEN n.is_read THEN 'read'
                    ELSE 'unread' END AS kind,
               (NOT n.is_read AND NOT n.is_deleted)::int - (NOT o.is_read AND NOT o.is_deleted)::int AS unread,
               (NOT n.is_deleted)::int - (NOT o.is_deleted)::int AS total
        FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
        WHERE (n.is_read, n.is_deleted) IS DISTINCT FROM (o.is_read, o.is_deleted)
          AND n.user_id = o.user_id
    ), counts AS (
        UPDATE inbox_count AS c
        SET unread = c.unread + d.unread, total = c.total + d.total
        FROM (SELECT user_id, sum(unread) AS unread, sum(total) AS total
              FROM changed GROUP BY user_id) AS d
        WHERE c.user_id = d.user_id
        RETURNING c.user_id, c.unread
    )
    SELECT count(*) INTO sent FROM (
        SELECT pg_notify('citelink_events', concat_ws(' ', e.kind, e.user_id, e.id, e.notification_id, e.unread))
        FROM (
            SELECT ch.kind, ch.user_id, ch.id, ch.notification_id, c.unread
            FROM changed AS ch JOIN counts AS c ON c.user_id = ch.user_id
            ORDER BY ch.id OFFSET 0
        ) AS e
    ) AS events;
    RETURN NULL;
END
$$;

-- Inbox rows removed outright (plain SQL or a cascade): fix the counters and
-- tell the owners their visible items went away.
CREATE FUNCTION citelink_publish_removed_items() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    sent bigint;
BEGIN
    WITH counts AS (
        UPDATE inbox_count AS c
        SET unread = c.unread - d.unread, total = c.total - d.total
        FROM (SELECT user_id,
                     count(*) FILTER (WHERE NOT is_read AND NOT is_deleted) AS unread,
                     count(*) FILTER (WHERE NOT is_deleted) AS total
              FROM old_rows GROUP BY user_id) AS d
        WHERE c.user_id = d.user_id
        RETURNING c.user_id, c.unread
    )
    SELECT count(*) INTO sent FROM (
        SELECT pg_notify('citelink_events', concat_ws(' ', 'delete', e.user_id, e.id, e.notification_id, e.unread))
        FROM (
            SELECT r.user_id, r.id, r.notification_id, c.unread
            FROM old_rows AS r JOIN counts AS c ON c.user_id = r.user_id
            WHERE NOT r.is_deleted
            ORDER BY r.id OFFSET 0
        ) AS e
    ) AS events;
    RETURN NULL;
END
$$;

-- Triggers -------------------------------------------------------------------

CREATE TRIGGER citelink_fan_out
    AFTER INSERT ON notification
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_fan_out_notification();

CREATE TRIGGER citelink_serialize_inserts
    BEFORE INSERT ON user_notification
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_serialize_inbox_inserts();

CREATE TRIGGER citelink_stamp_state
    BEFORE UPDATE ON user_notification
    FOR EACH ROW
    WHEN (NEW.is_read IS DISTINCT FROM OLD.is_read OR NEW.is_deleted IS DISTINCT FROM OLD.is_deleted)
    EXECUTE FUNCTION citelink_stamp_item_state();

CREATE TRIGGER citelink_publish_inserts
    AFTER INSERT ON user_notification
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_publish_new_items();

CREATE TRIGGER citelink_publish_updates
    AFTER UPDATE ON user_notification
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_publish_item_changes();

CREATE TRIGGER citelink_publish_deletes
    AFTER DELETE ON user_notification
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_publish_removed_items();

-- Audit. Inbox rows made by the fan-out (trigger depth 1) are summarised in
-- the notification's own audit row; inbox rows inserted directly are not.
CREATE TRIGGER citelink_audit_item_inserts
    AFTER INSERT ON user_notification
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0)
    EXECUTE FUNCTION citelink_audit_changes();

CREATE TRIGGER citelink_audit_item_updates
    AFTER UPDATE ON user_notification
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes();

CREATE TRIGGER citelink_audit_item_deletes
    AFTER DELETE ON user_notification
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes();

CREATE TRIGGER citelink_audit_notification_updates
    AFTER UPDATE ON notification
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes();

CREATE TRIGGER citelink_audit_notification_deletes
    AFTER DELETE ON notification
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes();

CREATE TRIGGER citelink_audit_tag_inserts
    AFTER INSERT ON tag
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes();

CREATE TRIGGER citelink_audit_tag_updates
    AFTER UPDATE ON tag
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes();

CREATE TRIGGER citelink_audit_tag_deletes
    AFTER DELETE ON tag
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes();

CREATE TRIGGER citelink_audit_subscription_inserts
    AFTER INSERT ON subscription
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes();

CREATE TRIGGER citelink_audit_subscription_updates
    AFTER UPDATE ON subscription
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes();

CREATE TRIGGER citelink_audit_subscription_deletes
    AFTER DELETE ON subscription
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes();
