-- Statement-level inbox triggers (the same as sql/schema.sql and
-- sql/triggers.sql):
--  * trigger plans that stay linear whatever the size of the statement that
--    made them ("Plans" in sql/triggers.sql), and no custom plan per fan-out;
--  * inbox keys checked per statement by triggers instead of per-row foreign
--    keys, with one inbox lock for inserts and for deleting users or
--    notifications ("Inbox keys");
--  * citelink_publish(): publishing in one round trip;
--  * the inbox unique index led by notification_id, replacing a separate
--    index, and an index of deleted items so a user's rows are all reachable.
-- depends: 0004_inbox_item_view

ALTER TABLE user_notification
    DROP CONSTRAINT user_notification_user_id_fkey,
    DROP CONSTRAINT user_notification_notification_id_fkey,
    DROP CONSTRAINT user_notification_user_id_notification_id_key,
    ADD UNIQUE (notification_id, user_id);
DROP INDEX user_notification_notification_idx;
-- With the inbox index, every row of a user (to remove a deleted user's rows);
-- new items are not deleted, so the fan-out never writes to it.
CREATE INDEX user_notification_deleted_idx
    ON user_notification (user_id, id) WHERE is_deleted;

DROP TRIGGER citelink_serialize_inserts ON user_notification;
DROP FUNCTION citelink_serialize_inbox_inserts();

-- One audit row per changed row of the table the trigger is on.
CREATE OR REPLACE FUNCTION citelink_audit_changes() RETURNS trigger
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
            SELECT id, citelink_row_diff(pair -> 'old', pair -> 'new') AS changes
            FROM (
                SELECT (r ->> 'id')::bigint AS id, jsonb_object_agg(side, r) AS pair
                FROM (SELECT 'old' AS side, to_jsonb(o) AS r FROM old_rows AS o
                      UNION ALL
                      SELECT 'new', to_jsonb(n) FROM new_rows AS n) AS sides
                GROUP BY 1
            ) AS pairs
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
-- one audit row per notification that summarises the fan-out. Subscribers are
-- read through the (tag_id, user_id) index for each new notification, the
-- right plan for a tag of ten and for a tag of 100,000 alike. The inbox lock
-- comes first, so subscribers are read after every user deletion before it
-- has committed.
CREATE OR REPLACE FUNCTION citelink_fan_out_notification() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
BEGIN
    PERFORM citelink_lock_inbox();
    INSERT INTO user_notification (user_id, notification_id)
    SELECT s.user_id, n.id
    FROM new_rows AS n
    CROSS JOIN LATERAL (
        SELECT user_id FROM subscription WHERE tag_id = n.tag_id OFFSET 0
    ) AS s
    ORDER BY n.id, s.user_id;

    INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
    SELECT 'notification', n.id, 'create',
           citelink_row_diff(NULL, to_jsonb(n)) || jsonb_build_object('recipients', jsonb_build_array(
               NULL, (SELECT count(*) FROM user_notification AS i WHERE i.notification_id = n.id))),
           citelink_actor_id()
    FROM new_rows AS n
    ORDER BY n.id;
    RETURN NULL;
END
$$;


-- Publishing as the API does it, in one round trip: the publisher is the
-- audit actor, the notification is inserted like any other (the triggers
-- fan it out), and it comes back with its number of recipients. Called
-- outside an explicit transaction, it commits as soon as it returns, so no
-- client round trip happens while inbox inserts are serialised.
CREATE FUNCTION citelink_publish(tag bigint, body text, extra jsonb, actor bigint)
RETURNS TABLE (id bigint, tag_id bigint, message text, data jsonb, created_at timestamptz,
               recipients bigint)
LANGUAGE plpgsql AS $$
DECLARE
    note notification;
BEGIN
    PERFORM set_config('citelink.actor_id', coalesce(actor::text, ''), true);
    INSERT INTO notification (tag_id, message, data, created_by)
    VALUES (tag, body, extra, actor)
    RETURNING * INTO note;
    -- The fan-out counted the recipients once, into the notification's audit row.
    RETURN QUERY
    SELECT note.id, note.tag_id, note.message, note.data, note.created_at,
           (a.changes -> 'recipients' ->> 1)::bigint
    FROM audit_log AS a
    WHERE a.resource = 'notification' AND a.object_id = note.id AND a.action = 'create';
END
$$;


-- The inbox lock, held until commit by whatever adds inbox rows and by
-- whatever deletes users or notifications:
--  * inbox ids are handed out in commit order: a transaction takes inbox ids
--    only once every earlier inserter has committed (or aborted), so
--    `id > last seen` never skips an item that committed late;
--  * inbox keys stay valid without foreign keys (see "Inbox keys" below): no
--    user or notification is deleted while rows for it are being added.
-- Cost: publishers commit one at a time.
CREATE FUNCTION citelink_lock_inbox() RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(7155521937341702721)  -- 'citelink inbox'
$$;

CREATE FUNCTION citelink_lock_inbox_for_statement() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM citelink_lock_inbox();
    RETURN NULL;
END
$$;

-- Inbox keys: user_notification.user_id and .notification_id name existing
-- rows. Foreign keys would check them one row at a time (two checks and a
-- row lock per row, a third of a 100,000-row fan-out); these triggers check a
-- whole statement at once, and the inbox lock stands in for the row locks.

-- Every inbox row a statement inserts names an existing user and notification.
CREATE FUNCTION citelink_check_inbox_keys() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    bad record;
BEGIN
    SELECT r.user_id, r.notification_id INTO bad
    FROM new_rows AS r
    WHERE (SELECT true FROM users AS u WHERE u.id = r.user_id) IS NULL
       OR (SELECT true FROM notification AS n WHERE n.id = r.notification_id) IS NULL
    LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'inbox row names no such user or notification',
            DETAIL = format('Key (user_id, notification_id)=(%s, %s).', bad.user_id, bad.notification_id);
    END IF;
    RETURN NULL;
END
$$;

-- An inbox row belongs to one user and one notification for life.
CREATE FUNCTION citelink_keep_inbox_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE restrict_violation USING
        MESSAGE = 'an inbox row cannot move to another user or notification';
END
$$;

-- Deleting users or notifications deletes their inbox rows (what ON DELETE
-- CASCADE did), through the indexes: a user's rows are in the inbox index and
-- the deleted-items index, a notification's in the unique index.
CREATE FUNCTION citelink_remove_inbox_rows() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    ids bigint[] := ARRAY(SELECT id FROM old_rows);
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        DELETE FROM user_notification WHERE user_id = ANY (ids) AND NOT is_deleted;
        DELETE FROM user_notification WHERE user_id = ANY (ids) AND is_deleted;
    ELSE
        DELETE FROM user_notification WHERE notification_id = ANY (ids);
    END IF;
    RETURN NULL;
END
$$;


-- New inbox rows: bump the owners' counters, then one event per row.
CREATE OR REPLACE FUNCTION citelink_publish_new_items() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
BEGIN
    INSERT INTO inbox_count AS c (user_id, unread, total)
    SELECT user_id,
           count(*) FILTER (WHERE NOT is_read AND NOT is_deleted),
           count(*) FILTER (WHERE NOT is_deleted)
    FROM new_rows GROUP BY user_id
    ON CONFLICT (user_id) DO UPDATE
        SET unread = c.unread + excluded.unread, total = c.total + excluded.total;

    PERFORM pg_notify('citelink_events', concat_ws(' ', 'new', e.user_id, e.id, e.notification_id,
                      (SELECT unread FROM inbox_count WHERE user_id = e.user_id)))
    FROM (SELECT user_id, id, notification_id FROM new_rows
          WHERE NOT is_deleted ORDER BY id OFFSET 0) AS e;
    RETURN NULL;
END
$$;


-- Changed read/deleted flags: adjust counters, then one event per row.
CREATE OR REPLACE FUNCTION citelink_publish_item_changes() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
BEGIN
    -- Counter deltas need no pairing: what the new rows count minus what the
    -- old rows counted, per owner.
    INSERT INTO inbox_count AS c (user_id, unread, total)
    SELECT user_id,
           coalesce(sum(sign) FILTER (WHERE NOT is_read AND NOT is_deleted), 0),
           coalesce(sum(sign) FILTER (WHERE NOT is_deleted), 0)
    FROM (SELECT user_id, is_read, is_deleted, 1 AS sign FROM new_rows
          UNION ALL
          SELECT user_id, is_read, is_deleted, -1 FROM old_rows) AS sides
    GROUP BY user_id
    HAVING sum(sign) FILTER (WHERE NOT is_read AND NOT is_deleted) <> 0
        OR sum(sign) FILTER (WHERE NOT is_deleted) <> 0
    ON CONFLICT (user_id) DO UPDATE
        SET unread = c.unread + excluded.unread, total = c.total + excluded.total;

    PERFORM pg_notify('citelink_events', concat_ws(' ', e.kind, e.user_id, e.id, e.notification_id,
                      (SELECT unread FROM inbox_count WHERE user_id = e.user_id)))
    FROM (
        SELECT id, user_id, notification_id,
               CASE WHEN is_deleted AND NOT was_deleted THEN 'delete'
                    WHEN was_deleted AND NOT is_deleted THEN 'restore'
                    WHEN is_read THEN 'read'
                    ELSE 'unread' END AS kind
        FROM (
            SELECT id, user_id, notification_id,
                   bool_or(is_read) FILTER (WHERE side = 'old') AS was_read,
                   bool_or(is_deleted) FILTER (WHERE side = 'old') AS was_deleted,
                   bool_or(is_read) FILTER (WHERE side = 'new') AS is_read,
                   bool_or(is_deleted) FILTER (WHERE side = 'new') AS is_deleted
            FROM (SELECT 'old' AS side, * FROM old_rows
                  UNION ALL
                  SELECT 'new', * FROM new_rows) AS sides
            GROUP BY id, user_id, notification_id
        ) AS pairs
        WHERE (is_read, is_deleted) IS DISTINCT FROM (was_read, was_deleted)
        ORDER BY id OFFSET 0
    ) AS e;
    RETURN NULL;
END
$$;


-- Inbox rows removed outright (plain SQL or a cascade): fix the counters and
-- tell the owners their visible items went away.
CREATE OR REPLACE FUNCTION citelink_publish_removed_items() RETURNS trigger
LANGUAGE plpgsql
-- An UPDATE, not an upsert: when a user is deleted, the cascade has removed
-- their counter row already. Nested loops only, so the join below is always
-- one index probe per owner (see "Plans" above).
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    UPDATE inbox_count AS c
    SET unread = c.unread - d.unread, total = c.total - d.total
    FROM (SELECT user_id,
                 count(*) FILTER (WHERE NOT is_read AND NOT is_deleted) AS unread,
                 count(*) FILTER (WHERE NOT is_deleted) AS total
          FROM old_rows GROUP BY user_id) AS d
    WHERE c.user_id = d.user_id;

    PERFORM pg_notify('citelink_events', concat_ws(' ', 'delete', e.user_id, e.id, e.notification_id,
                      (SELECT unread FROM inbox_count WHERE user_id = e.user_id)))
    FROM (SELECT user_id, id, notification_id FROM old_rows
          WHERE NOT is_deleted ORDER BY id OFFSET 0) AS e;
    RETURN NULL;
END
$$;

CREATE TRIGGER citelink_serialize_inserts
    BEFORE INSERT ON user_notification
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_lock_inbox_for_statement();

CREATE TRIGGER citelink_check_keys
    AFTER INSERT ON user_notification
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_check_inbox_keys();

CREATE TRIGGER citelink_keep_keys
    BEFORE UPDATE OF user_id, notification_id ON user_notification
    FOR EACH ROW
    WHEN (NEW.user_id <> OLD.user_id OR NEW.notification_id <> OLD.notification_id)
    EXECUTE FUNCTION citelink_keep_inbox_keys();

CREATE TRIGGER citelink_lock_inbox_before_user_deletes
    BEFORE DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_lock_inbox_for_statement();

CREATE TRIGGER citelink_remove_inbox_of_deleted_users
    AFTER DELETE ON users
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_remove_inbox_rows();

CREATE TRIGGER citelink_lock_inbox_before_notification_deletes
    BEFORE DELETE ON notification
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_lock_inbox_for_statement();

CREATE TRIGGER citelink_remove_inbox_of_deleted_notifications
    AFTER DELETE ON notification
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_remove_inbox_rows();
