-- citelink behaviour in the database: fan-out, inbox counters, events, audit.
-- Everything here fires for any writer (the API, psql, another service), so a
-- row inserted by plain SQL is delivered and audited like one from the API.
--
-- Plans: PL/pgSQL plans each query once per session, at its first call, with
-- the transition tables' sizes of that call as estimates. A join planned for
-- one row is a nested loop, quadratic when a later statement brings 100,000
-- rows; one planned for 100,000 scans whole tables when later calls bring one.
-- So no query here leaves the planner a join to choose: rows reach other
-- tables through index probes (upserts, scalar subqueries, LATERAL), old and
-- new rows of an UPDATE are paired by grouping on the id, and a session that
-- fans out to one user after one to 100,000 (or the other way) stays linear.
-- `SET enable_seqscan = off` keeps those probes on their indexes when a plan
-- is made while a table is empty (a fresh database): a sequential scan per
-- probe would be quadratic once the table has grown.
--
-- Events: one channel, `citelink_events`, one message per inbox change:
--     "<kind> <user_id> <item_id> <notification_id> <unread>"
-- kind is new | read | unread | delete | restore; unread is the user's unread
-- count after the change. "revoke <user_id> <generation> <why> 0": tokens of
-- the user older than <generation> are revoked; <why> is 0 when the user was
-- deactivated or deleted, 1 when the password changed or they signed out
-- everywhere. Payloads carry ids only, so they stay far below the
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
CREATE FUNCTION citelink_fan_out_notification() RETURNS trigger
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
CREATE FUNCTION citelink_publish_item_changes() RETURNS trigger
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
CREATE FUNCTION citelink_publish_removed_items() RETURNS trigger
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

-- A new password or a deactivation revokes every token the user holds: a
-- token carries the generation it was issued in.
CREATE FUNCTION citelink_bump_token_generation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.token_generation := OLD.token_generation + 1;
    RETURN NEW;
END
$$;

-- A user's tokens revoked (a new generation) or the user deleted: their open
-- sockets are closed at once (the relay closes them with 4401) instead of
-- living on until their token expires.
CREATE FUNCTION citelink_publish_user_revoked_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('citelink_events',
                          concat_ws(' ', 'revoke', OLD.id, OLD.token_generation + 1, 0, 0));
    ELSE
        PERFORM pg_notify('citelink_events',
                          concat_ws(' ', 'revoke', NEW.id, NEW.token_generation,
                                    CASE WHEN NEW.is_active THEN 1 ELSE 0 END, 0));
    END IF;
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

CREATE TRIGGER citelink_bump_token_generation
    BEFORE UPDATE OF password_hash, is_active ON users
    FOR EACH ROW
    WHEN (NEW.password_hash IS DISTINCT FROM OLD.password_hash OR (OLD.is_active AND NOT NEW.is_active))
    EXECUTE FUNCTION citelink_bump_token_generation();

CREATE TRIGGER citelink_revoke_user_tokens
    AFTER UPDATE ON users
    FOR EACH ROW WHEN (NEW.token_generation <> OLD.token_generation)
    EXECUTE FUNCTION citelink_publish_user_revoked_v2();

CREATE TRIGGER citelink_revoke_deleted_user
    AFTER DELETE ON users
    FOR EACH ROW WHEN (OLD.is_active)
    EXECUTE FUNCTION citelink_publish_user_revoked_v2();

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
