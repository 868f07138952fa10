-- citelink behaviour in the database: fan-out, inbox counters, events, audit.
-- Everything here fires for any writer (the API, psql, another service), so a
-- row inserted by plain SQL is delivered and audited like one from the API.
--
-- Events: one channel, `citelink_events`, one message per inbox change:
--     "<kind> <user_id> <item_id> <notification_id> <unread>"
-- kind is new | read | unread | delete | restore; unread is the user's unread
-- count after the change. "revoke <user_id> 0 0 0": the user was deactivated
-- or deleted. Payloads carry ids only, so they stay far below the
-- 8000-byte pg_notify limit whatever the message length.

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
-- Planned at every call with the actual tag ids (force_custom_plan): one huge
-- tag skews the statistics of subscription.tag_id, and a generic plan would
-- then scan every subscription to fan out to a tag of ten.
CREATE FUNCTION citelink_fan_out_notification() RETURNS trigger
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    tags bigint[] := ARRAY(SELECT DISTINCT tag_id FROM new_rows);
BEGIN
    WITH items AS (
        INSERT INTO user_notification (user_id, notification_id)
        SELECT s.user_id, n.id
        FROM new_rows AS n JOIN subscription AS s ON s.tag_id = n.tag_id
        WHERE s.tag_id = ANY (tags)
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

-- A user deactivated or deleted: their open sockets are closed at once (the
-- relay closes them with 4401) instead of living on until their token expires.
CREATE FUNCTION citelink_publish_user_revoked() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('citelink_events', concat_ws(' ', 'revoke', OLD.id, 0, 0, 0));
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

CREATE TRIGGER citelink_revoke_deactivated_user
    AFTER UPDATE OF is_active ON users
    FOR EACH ROW WHEN (OLD.is_active AND NOT NEW.is_active)
    EXECUTE FUNCTION citelink_publish_user_revoked();

CREATE TRIGGER citelink_revoke_deleted_user
    AFTER DELETE ON users
    FOR EACH ROW WHEN (OLD.is_active)
    EXECUTE FUNCTION citelink_publish_user_revoked();

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
