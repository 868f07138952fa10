-- Per-user order instead of the global inbox lock (the same as sql/schema.sql
-- and sql/triggers.sql):
--  * every inbox row has a `position`, gapless and in commit order per user,
--    numbered under the user's inbox_count row lock; lists, resume and
--    back-fill follow it, and writers for different users never wait on each
--    other (the database-wide advisory lock is gone);
--  * inbox keys kept by the counter rows and the notifications' recipient
--    counts, valid under every isolation level ("Inbox keys");
--  * notification.recipients holds the recipient count (no longer read from
--    the audit log);
--  * one `fanout` event per notification for statements with more than 1,000
--    items of it; events carry the item's position.
-- Existing items are numbered in id order, which the old lock made commit order.
-- depends: 0005_statement_level_inbox_triggers

-- Old lock and key checks ----------------------------------------------------

DROP TRIGGER citelink_serialize_inserts ON user_notification;
DROP TRIGGER citelink_check_keys ON user_notification;
DROP TRIGGER citelink_keep_keys ON user_notification;
DROP TRIGGER citelink_lock_inbox_before_user_deletes ON users;
DROP TRIGGER citelink_lock_inbox_before_notification_deletes ON notification;
DROP TRIGGER citelink_audit_notification_updates ON notification;
DROP FUNCTION citelink_check_inbox_keys();
DROP FUNCTION citelink_lock_inbox_for_statement();
DROP FUNCTION citelink_lock_inbox();

-- Tables, and the data they hold ---------------------------------------------

ALTER TABLE notification ADD COLUMN recipients bigint NOT NULL DEFAULT 0;
UPDATE notification AS n
SET recipients = coalesce(
    (SELECT (a.changes -> 'recipients' ->> 1)::bigint FROM audit_log AS a
     WHERE a.resource = 'notification' AND a.object_id = n.id AND a.action = 'create'),
    (SELECT count(*) FROM user_notification AS i WHERE i.notification_id = n.id));

ALTER TABLE inbox_count ADD COLUMN last_position bigint NOT NULL DEFAULT 0;
ALTER TABLE inbox_count SET (fillfactor = 50);

-- Numbering every existing item is bookkeeping, not a change of anyone's
-- inbox: no counters, events or audit rows for it.
ALTER TABLE user_notification ADD COLUMN position bigint;
ALTER TABLE user_notification DISABLE TRIGGER USER;
UPDATE user_notification AS i SET position = numbered.position
FROM (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY id) AS position
      FROM user_notification) AS numbered
WHERE i.id = numbered.id;
ALTER TABLE user_notification ENABLE TRIGGER USER;
ALTER TABLE user_notification ALTER COLUMN position SET NOT NULL;
INSERT INTO inbox_count AS c (user_id, last_position)
SELECT user_id, max(position) FROM user_notification GROUP BY user_id
ON CONFLICT (user_id) DO UPDATE SET last_position = excluded.last_position;

DROP INDEX user_notification_inbox_idx;
DROP INDEX user_notification_unread_idx;
DROP INDEX user_notification_read_idx;
DROP INDEX user_notification_deleted_idx;
-- Inbox keyset pages (newest first) and resume (oldest first), by status, in
-- each user's order. Unique: no two visible items of a user share a position.
CREATE UNIQUE INDEX user_notification_inbox_idx
    ON user_notification (user_id, position) WHERE NOT is_deleted;
CREATE INDEX user_notification_unread_idx
    ON user_notification (user_id, position) WHERE NOT is_deleted AND NOT is_read;
CREATE INDEX user_notification_read_idx
    ON user_notification (user_id, position) WHERE NOT is_deleted AND is_read;
-- With the inbox index, every row of a user (to remove a deleted user's rows);
-- new items are not deleted, so the fan-out never writes to it.
CREATE INDEX user_notification_deleted_idx
    ON user_notification (user_id, position) WHERE is_deleted;

CREATE OR REPLACE VIEW inbox_item AS
SELECT i.id, i.user_id, i.is_deleted, i.notification_id, n.tag_id AS tag,
       t.name AS tag_name, n.message, n.data, n.created_at AS timestamp,
       i.is_read, i.read_at, i.position
FROM user_notification AS i
JOIN notification AS n ON n.id = i.notification_id
JOIN tag AS t ON t.id = n.tag_id;

-- Functions ------------------------------------------------------------------

-- More items of one notification in one statement than this, and the
-- statement sends one `fanout` event instead of one event per item: queueing
-- 100,000 events at commit holds PostgreSQL's cluster-wide NOTIFY lock, which
-- every other notifying commit waits for, and makes every relay parse 100,000
-- payloads to find the few users it serves.
CREATE FUNCTION citelink_events_per_item_limit() RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT 1000::bigint
$$;

-- Each new notification gets one inbox row per subscriber of its tag, and one
-- audit row that summarises the fan-out with its recipient count (also kept on
-- the notification), all set-based whatever the number of notifications in
-- the statement. The upsert locks each recipient's counter row, in user id
-- order, and takes as many positions as the user gets items ("Per-user
-- order"); each (user, notification) pair then gets its own, in notification
-- order. Subscribers are read through a lateral probe on the (tag_id,
-- user_id) index, the one plan that suits a tag of ten and one of 100,000;
-- pairs and counter rows meet in a hash join (no nested loop: "Plans").
CREATE OR REPLACE FUNCTION citelink_fan_out_notification() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_nestloop = off
AS $$
DECLARE
    notes bigint[];
    counts bigint[];
BEGIN
    WITH pairs AS (
        SELECT s.user_id, n.id AS notification_id
        FROM new_rows AS n
        CROSS JOIN LATERAL (SELECT user_id FROM subscription WHERE tag_id = n.tag_id OFFSET 0) AS s
    ), numbered AS (
        INSERT INTO inbox_count AS c (user_id, unread, total, last_position)
        SELECT user_id, count(*), count(*), count(*) FROM pairs GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE
            SET unread = c.unread + excluded.unread, total = c.total + excluded.total,
                last_position = c.last_position + excluded.last_position
        RETURNING user_id, last_position
    ), inserted AS (
        INSERT INTO user_notification (user_id, notification_id, position)
        SELECT p.user_id, p.notification_id,
               b.last_position - count(*) OVER (PARTITION BY p.user_id)
                   + row_number() OVER (PARTITION BY p.user_id ORDER BY p.notification_id)
        FROM pairs AS p JOIN numbered AS b ON b.user_id = p.user_id
        RETURNING notification_id
    )
    SELECT array_agg(notification_id), array_agg(items) INTO notes, counts
    FROM (SELECT notification_id, count(*) AS items FROM inserted GROUP BY notification_id) AS made;

    PERFORM citelink_count_recipients(notes, counts);
    INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
    SELECT 'notification', n.id, 'create',
           citelink_row_diff(NULL, to_jsonb(n)) || jsonb_build_object('recipients',
               jsonb_build_array(NULL, (SELECT recipients FROM notification WHERE id = n.id))),
           citelink_actor_id()
    FROM new_rows AS n
    ORDER BY n.id;
    RETURN NULL;
END
$$;

-- Publishing as the API does it, in one round trip: the publisher is the
-- audit actor, the notification is inserted like any other (the triggers
-- fan it out), and it comes back with its number of recipients. Called
-- outside an explicit transaction, it commits as soon as it returns, so the
-- recipients' counter rows are locked for no client round trip.
CREATE OR REPLACE FUNCTION citelink_publish(tag bigint, body text, extra jsonb, actor bigint)
RETURNS TABLE (id bigint, tag_id bigint, message text, data jsonb, created_at timestamptz,
               recipients bigint)
LANGUAGE plpgsql AS $$
DECLARE
    note_id bigint;
BEGIN
    PERFORM set_config('citelink.actor_id', coalesce(actor::text, ''), true);
    INSERT INTO notification (tag_id, message, data, created_by)
    VALUES (tag, body, extra, actor)
    RETURNING notification.id INTO note_id;
    -- Read back: the fan-out has set the recipient count since.
    RETURN QUERY
    SELECT n.id, n.tag_id, n.message, n.data, n.created_at, n.recipients
    FROM notification AS n WHERE n.id = note_id;
END
$$;

-- Adds `counts[i]` inbox rows to the recipient count of notification `ids[i]`,
-- in array order; returns how many of the notifications exist. Nested loops
-- only: one primary key probe per notification ("Plans").
CREATE FUNCTION citelink_count_recipients(ids bigint[], counts bigint[]) RETURNS bigint
LANGUAGE sql
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
    WITH counted AS (
        UPDATE notification AS n SET recipients = n.recipients + c.items
        FROM unnest(ids, counts) AS c (id, items)
        WHERE n.id = c.id
        RETURNING 1
    )
    SELECT count(*) FROM counted
$$;

-- An inbox row inserted by plain SQL (not by the fan-out, which numbers its
-- own rows set-based): lock the owner's counter row, count the item and give
-- it the next position. Whatever position the statement gave is replaced.
CREATE FUNCTION citelink_number_item() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbox_count AS c (user_id, unread, total, last_position)
    VALUES (NEW.user_id, (NOT NEW.is_read AND NOT NEW.is_deleted)::int,
            (NOT NEW.is_deleted)::int, 1)
    ON CONFLICT (user_id) DO UPDATE
        SET unread = c.unread + excluded.unread, total = c.total + excluded.total,
            last_position = c.last_position + 1
    RETURNING last_position INTO NEW.position;
    RETURN NEW;
END
$$;

-- Cursors are item ids (what clients hold), orders are positions: the bound
-- an id stands for in a user's order. An item of the user stands for its own
-- position. Any other id (another user's item, one removed outright, a
-- made-up number) stands for the point just after the user's newest item, in
-- their order, with a smaller id: found by walking their inbox back from the
-- newest, so it costs as many steps as they have newer items.
-- `before`: items with a position below the result come before the id.
-- `after`: items with a position above the result come after it.
CREATE FUNCTION citelink_position_before(owner bigint, item bigint) RETURNS bigint
LANGUAGE sql STABLE STRICT AS $$
    SELECT coalesce(
        (SELECT position FROM user_notification WHERE id = item AND user_id = owner),
        (SELECT position + 1 FROM user_notification
         WHERE user_id = owner AND NOT is_deleted AND id < item
         ORDER BY position DESC LIMIT 1),
        0)
$$;

CREATE FUNCTION citelink_position_after(owner bigint, item bigint) RETURNS bigint
LANGUAGE sql STABLE STRICT AS $$
    SELECT coalesce(
        (SELECT position FROM user_notification WHERE id = item AND user_id = owner),
        (SELECT position FROM user_notification
         WHERE user_id = owner AND NOT is_deleted AND id < item
         ORDER BY position DESC LIMIT 1),
        0)
$$;

-- An inbox row belongs to one user and one notification for life, and keeps
-- its place in the user's order.
CREATE OR REPLACE FUNCTION citelink_keep_inbox_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE restrict_violation USING
        MESSAGE = 'an inbox row cannot move to another user, notification or position';
END
$$;

-- Inbox rows inserted by plain SQL: each notification they name counts them
-- as recipients, which locks it against deletion until commit ("Inbox
-- keys"); a name that matches no notification is a foreign key violation.
CREATE FUNCTION citelink_count_direct_recipients() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    notes bigint[];
    counts bigint[];
    missing bigint;
BEGIN
    SELECT array_agg(notification_id ORDER BY notification_id),
           array_agg(items ORDER BY notification_id)
    INTO notes, counts
    FROM (SELECT notification_id, count(*) AS items FROM new_rows GROUP BY notification_id) AS named;
    IF citelink_count_recipients(notes, counts) < cardinality(notes) THEN
        SELECT id INTO missing FROM unnest(notes) AS id
        WHERE NOT EXISTS (SELECT FROM notification AS n WHERE n.id = id)
        LIMIT 1;
        RAISE foreign_key_violation USING
            MESSAGE = 'inbox row names no such notification',
            DETAIL = format('Key (notification_id)=(%s) is not present in table "notification".',
                            missing);
    END IF;
    RETURN NULL;
END
$$;

-- Deleting users or notifications deletes their inbox rows (what ON DELETE
-- CASCADE would do), through the indexes: a user's rows are in the inbox index
-- and the deleted-items index, a notification's in the unique index.
CREATE OR REPLACE FUNCTION citelink_remove_inbox_rows() RETURNS trigger
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

-- New inbox rows (counted and numbered before they were inserted): one event
-- per row, or one `fanout` event per notification for a big statement.
CREATE OR REPLACE FUNCTION citelink_publish_new_items() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
BEGIN
    IF (SELECT count(*) > citelink_events_per_item_limit() FROM new_rows) THEN
        PERFORM pg_notify('citelink_events', concat_ws(' ', 'fanout', e.notification_id, e.items))
        FROM (SELECT notification_id, count(*) AS items FROM new_rows
              WHERE NOT is_deleted GROUP BY notification_id ORDER BY notification_id) AS e;
    ELSE
        PERFORM pg_notify('citelink_events', concat_ws(' ', 'new', e.user_id, e.id,
                          e.notification_id, e.position,
                          (SELECT unread FROM inbox_count WHERE user_id = e.user_id)))
        FROM (SELECT user_id, id, notification_id, position FROM new_rows
              WHERE NOT is_deleted ORDER BY id OFFSET 0) AS e;
    END IF;
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
    ORDER BY user_id  -- the fan-out's lock order
    ON CONFLICT (user_id) DO UPDATE
        SET unread = c.unread + excluded.unread, total = c.total + excluded.total;

    PERFORM pg_notify('citelink_events', concat_ws(' ', e.kind, e.user_id, e.id, e.notification_id,
                      e.position, (SELECT unread FROM inbox_count WHERE user_id = e.user_id)))
    FROM (
        SELECT id, user_id, notification_id, position,
               CASE WHEN is_deleted AND NOT was_deleted THEN 'delete'
                    WHEN was_deleted AND NOT is_deleted THEN 'restore'
                    WHEN is_read THEN 'read'
                    ELSE 'unread' END AS kind
        FROM (
            SELECT id, user_id, notification_id, position,
                   bool_or(is_read) FILTER (WHERE side = 'old') AS was_read,
                   bool_or(is_deleted) FILTER (WHERE side = 'old') AS was_deleted,
                   bool_or(is_read) FILTER (WHERE side = 'new') AS is_read,
                   bool_or(is_deleted) FILTER (WHERE side = 'new') AS is_deleted
            FROM (SELECT 'old' AS side, * FROM old_rows
                  UNION ALL
                  SELECT 'new', * FROM new_rows) AS sides
            GROUP BY id, user_id, notification_id, position
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
                      e.position, (SELECT unread FROM inbox_count WHERE user_id = e.user_id)))
    FROM (SELECT user_id, id, notification_id, position FROM old_rows
          WHERE NOT is_deleted ORDER BY id OFFSET 0) AS e;
    RETURN NULL;
END
$$;

-- A user deactivated or deleted: their open sockets are closed at once (the
-- relay closes them with 4401) instead of living on until their token expires.
CREATE OR REPLACE FUNCTION citelink_publish_user_revoked() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('citelink_events', concat_ws(' ', 'revoke', OLD.id));
    RETURN NULL;
END
$$;

-- TRUNCATE of users or notifications (no row triggers fire) empties the inbox.
CREATE FUNCTION citelink_empty_inbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE user_notification;
    RETURN NULL;
END
$$;

-- Triggers -------------------------------------------------------------------

CREATE TRIGGER citelink_number_items
    BEFORE INSERT ON user_notification
    FOR EACH ROW WHEN (pg_trigger_depth() = 0)
    EXECUTE FUNCTION citelink_number_item();

CREATE TRIGGER citelink_keep_keys
    BEFORE UPDATE OF user_id, notification_id, position ON user_notification
    FOR EACH ROW
    WHEN (NEW.user_id <> OLD.user_id OR NEW.notification_id <> OLD.notification_id
          OR NEW.position <> OLD.position)
    EXECUTE FUNCTION citelink_keep_inbox_keys();

CREATE TRIGGER citelink_count_direct_items
    AFTER INSERT ON user_notification
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0)
    EXECUTE FUNCTION citelink_count_direct_recipients();

CREATE TRIGGER citelink_empty_inbox_of_truncated_users
    AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_empty_inbox();

CREATE TRIGGER citelink_empty_inbox_of_truncated_notifications
    AFTER TRUNCATE ON notification
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_empty_inbox();

-- The fan-out's own update (the recipient count) is in its create row already.
CREATE TRIGGER citelink_audit_notification_updates
    AFTER UPDATE ON notification
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0)
    EXECUTE FUNCTION citelink_audit_changes();

