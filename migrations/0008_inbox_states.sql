-- Inbox states (the same as sql/schema.sql and sql/triggers.sql): seen apart
-- from read (reading implies seen), archived apart from deleted, interacted
-- (a click on the item's link or one of its actions: implies read); the
-- counter row keeps unseen, unread, total and archived for the default list
-- (neither deleted nor archived). Item events carry the item's state before
-- and after, and the four counts; a statement changing more than 1,000 items
-- sends one `bulk` event per user. Existing items keep their state, and read
-- ones are seen.
-- depends: 0007_message_check

ALTER TABLE user_notification
    ADD COLUMN is_seen boolean NOT NULL DEFAULT false,
    ADD COLUMN seen_at timestamptz,
    ADD COLUMN is_archived boolean NOT NULL DEFAULT false,
    ADD COLUMN archived_at timestamptz,
    ADD COLUMN interacted_at timestamptz,
    ADD COLUMN action text CHECK (char_length(action) BETWEEN 1 AND 100);
ALTER TABLE inbox_count
    ADD COLUMN unseen bigint NOT NULL DEFAULT 0,
    ADD COLUMN archived bigint NOT NULL DEFAULT 0;

-- Read items were seen when they were read: bookkeeping, no events or audit.
ALTER TABLE user_notification DISABLE TRIGGER USER;
UPDATE user_notification SET is_seen = true, seen_at = read_at WHERE is_read;
ALTER TABLE user_notification ENABLE TRIGGER USER;
UPDATE inbox_count SET unseen = unread;

DROP INDEX user_notification_inbox_idx;
DROP INDEX user_notification_unread_idx;
DROP INDEX user_notification_read_idx;
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

CREATE OR REPLACE VIEW inbox_item AS
SELECT i.id, i.user_id, i.is_deleted, i.notification_id, n.tag_id AS tag,
       t.name AS tag_name, n.message, n.data, n.created_at AS timestamp,
       i.is_read, i.read_at, i.position, i.is_seen, i.seen_at, i.is_archived,
       i.archived_at, i.interacted_at, i.action
FROM user_notification AS i
JOIN notification AS n ON n.id = i.notification_id
JOIN tag AS t ON t.id = n.tag_id;

-- Functions ------------------------------------------------------------------

-- An inbox item's state as one number, for events: 1 seen, 2 read,
-- 4 archived, 8 interacted, 16 deleted.
CREATE FUNCTION citelink_item_state(item user_notification) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT item.is_seen::integer + 2 * item.is_read::integer + 4 * item.is_archived::integer
           + 8 * (item.interacted_at IS NOT NULL)::integer + 16 * item.is_deleted::integer
$$;

-- The counts an item adds to its owner's counter row: (unseen, unread,
-- total, archived), as inbox_count defines them.
CREATE FUNCTION citelink_item_counts(item user_notification, OUT unseen integer,
                                     OUT unread integer, OUT total integer,
                                     OUT archived integer)
LANGUAGE sql IMMUTABLE AS $$
    SELECT (listed AND NOT item.is_seen)::integer, (listed AND NOT item.is_read)::integer,
           listed::integer, (NOT item.is_deleted AND item.is_archived)::integer
    FROM (SELECT NOT item.is_deleted AND NOT item.is_archived AS listed) AS l
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
        INSERT INTO inbox_count AS c (user_id, unseen, unread, total, last_position)
        SELECT user_id, count(*), count(*), count(*), count(*)
        FROM pairs GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE
            SET unseen = c.unseen + excluded.unseen, unread = c.unread + excluded.unread,
                total = c.total + excluded.total,
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

-- An inbox row inserted by plain SQL (not by the fan-out, which numbers its
-- own rows set-based): its states imply one another as on an update, then
-- lock the owner's counter row, count the item and give it the next
-- position. Whatever position the statement gave is replaced.
CREATE OR REPLACE FUNCTION citelink_number_item() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    added record;
BEGIN
    NEW.is_read := NEW.is_read OR NEW.interacted_at IS NOT NULL;
    NEW.is_seen := NEW.is_seen OR NEW.is_read;
    added := citelink_item_counts(NEW);
    INSERT INTO inbox_count AS c (user_id, unseen, unread, total, archived, last_position)
    VALUES (NEW.user_id, added.unseen, added.unread, added.total, added.archived, 1)
    ON CONFLICT (user_id) DO UPDATE
        SET unseen = c.unseen + excluded.unseen, unread = c.unread + excluded.unread,
            total = c.total + excluded.total, archived = c.archived + excluded.archived,
            last_position = c.last_position + 1
    RETURNING last_position INTO NEW.position;
    RETURN NEW;
END
$$;

-- Cursors are item ids (what clients hold), orders are positions: the bound
-- an id stands for in a user's order. An item of the user stands for its own
-- position. Any other id (another user's item, one removed outright, a
-- made-up number) stands for the point just after the user's newest listed
-- item (neither deleted nor archived), in their order, with a smaller id:
-- found by walking their inbox back from the newest, so it costs as many
-- steps as they have newer items.
-- `before`: items with a position below the result come before the id.
-- `after`: items with a position above the result come after it.
CREATE OR REPLACE FUNCTION citelink_position_before(owner bigint, item bigint) RETURNS bigint
LANGUAGE sql STABLE STRICT AS $$
    SELECT coalesce(
        (SELECT position FROM user_notification WHERE id = item AND user_id = owner),
        (SELECT position + 1 FROM user_notification
         WHERE user_id = owner AND NOT is_deleted AND NOT is_archived AND id < item
         ORDER BY position DESC LIMIT 1),
        0)
$$;

CREATE OR REPLACE FUNCTION citelink_position_after(owner bigint, item bigint) RETURNS bigint
LANGUAGE sql STABLE STRICT AS $$
    SELECT coalesce(
        (SELECT position FROM user_notification WHERE id = item AND user_id = owner),
        (SELECT position FROM user_notification
         WHERE user_id = owner AND NOT is_deleted AND NOT is_archived AND id < item
         ORDER BY position DESC LIMIT 1),
        0)
$$;

-- Deleting users or notifications deletes their inbox rows (what ON DELETE
-- CASCADE would do), through the indexes: a user's rows are in the inbox, the
-- archived and the deleted-items indexes, a notification's in the unique index.
CREATE OR REPLACE FUNCTION citelink_remove_inbox_rows() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    ids bigint[] := ARRAY(SELECT id FROM old_rows);
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        DELETE FROM user_notification WHERE user_id = ANY (ids) AND NOT is_deleted AND NOT is_archived;
        DELETE FROM user_notification WHERE user_id = ANY (ids) AND NOT is_deleted AND is_archived;
        DELETE FROM user_notification WHERE user_id = ANY (ids) AND is_deleted;
    ELSE
        DELETE FROM user_notification WHERE notification_id = ANY (ids);
    END IF;
    RETURN NULL;
END
$$;

-- States imply one another, whoever changes them: an interaction reads the
-- item, reading sees it. Each flag's time follows it.
CREATE OR REPLACE FUNCTION citelink_stamp_item_state() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.interacted_at IS NOT NULL AND OLD.interacted_at IS NULL THEN
        NEW.is_read := true;
    END IF;
    IF NEW.is_read THEN
        NEW.is_seen := true;  -- a read item is always a seen one
    END IF;
    IF NEW.is_seen IS DISTINCT FROM OLD.is_seen THEN
        NEW.seen_at := CASE WHEN NEW.is_seen THEN now() END;
    END IF;
    IF NEW.is_read IS DISTINCT FROM OLD.is_read THEN
        NEW.read_at := CASE WHEN NEW.is_read THEN now() END;
    END IF;
    IF NEW.is_archived IS DISTINCT FROM OLD.is_archived THEN
        NEW.archived_at := CASE WHEN NEW.is_archived THEN now() END;
    END IF;
    IF NEW.is_deleted IS DISTINCT FROM OLD.is_deleted THEN
        NEW.deleted_at := CASE WHEN NEW.is_deleted THEN now() END;
    END IF;
    RETURN NEW;
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
        PERFORM citelink_notify_item('new', e.user_id, e.id, e.notification_id, e.position,
                                     e.state, e.state)
        FROM (SELECT r.*, citelink_item_state(r) AS state FROM new_rows AS r
              WHERE NOT r.is_deleted ORDER BY r.id OFFSET 0) AS e;
    END IF;
    RETURN NULL;
END
$$;

-- The event of one item (see "Events" above), with its owner's counts after
-- the change.
CREATE FUNCTION citelink_notify_item(kind text, owner bigint, item bigint, note bigint,
                                     place bigint, old_state integer, new_state integer)
RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('citelink_events', concat_ws(' ', kind, owner, item, note, place,
                     old_state, new_state, c.unseen, c.unread, c.total, c.archived))
    FROM (SELECT coalesce(max(unseen), 0) AS unseen, coalesce(max(unread), 0) AS unread,
                 coalesce(max(total), 0) AS total, coalesce(max(archived), 0) AS archived
          FROM inbox_count WHERE user_id = owner) AS c
$$;

-- Changed states: adjust counters, then one event per row, or one `bulk`
-- event per user for a big statement.
CREATE OR REPLACE FUNCTION citelink_publish_item_changes() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
BEGIN
    -- Counter deltas need no pairing: what the new rows count minus what the
    -- old rows counted, per owner.
    INSERT INTO inbox_count AS c (user_id, unseen, unread, total, archived)
    SELECT user_id, sum(sign * (k).unseen), sum(sign * (k).unread), sum(sign * (k).total),
           sum(sign * (k).archived)
    FROM (SELECT user_id, citelink_item_counts(r.*) AS k, 1 AS sign FROM new_rows AS r
          UNION ALL
          SELECT user_id, citelink_item_counts(r.*), -1 FROM old_rows AS r) AS sides
    GROUP BY user_id
    HAVING sum(sign * (k).unseen) <> 0 OR sum(sign * (k).unread) <> 0
        OR sum(sign * (k).total) <> 0 OR sum(sign * (k).archived) <> 0
    ORDER BY user_id  -- the fan-out's lock order
    ON CONFLICT (user_id) DO UPDATE
        SET unseen = c.unseen + excluded.unseen, unread = c.unread + excluded.unread,
            total = c.total + excluded.total, archived = c.archived + excluded.archived;

    IF (SELECT count(*) > citelink_events_per_item_limit() FROM new_rows) THEN
        PERFORM pg_notify('citelink_events', concat_ws(' ', 'bulk', e.user_id, e.items,
                          c.unseen, c.unread, c.total, c.archived))
        FROM (SELECT user_id, count(*) AS items FROM new_rows
              GROUP BY user_id ORDER BY user_id OFFSET 0) AS e
        CROSS JOIN LATERAL (SELECT * FROM inbox_count WHERE user_id = e.user_id) AS c;
        RETURN NULL;
    END IF;
    -- Old and new rows paired by grouping on the id ("Plans").
    PERFORM citelink_notify_item('change', e.user_id, e.id, e.notification_id, e.position,
                                 e.old_state, e.new_state)
    FROM (
        SELECT r.id, r.user_id, r.notification_id, r.position,
               min(r.state) FILTER (WHERE r.side = 'old') AS old_state,
               min(r.state) FILTER (WHERE r.side = 'new') AS new_state
        FROM (SELECT 'old' AS side, o.id, o.user_id, o.notification_id, o.position,
                     citelink_item_state(o) AS state
              FROM old_rows AS o
              UNION ALL
              SELECT 'new', n.id, n.user_id, n.notification_id, n.position,
                     citelink_item_state(n)
              FROM new_rows AS n) AS r
        GROUP BY r.id, r.user_id, r.notification_id, r.position
        ORDER BY r.id OFFSET 0
    ) AS e
    WHERE e.old_state <> e.new_state;
    RETURN NULL;
END
$$;

-- Inbox rows removed outright (plain SQL or a cascade): fix the counters and
-- tell the owners their items went away.
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
    SET unseen = c.unseen - d.unseen, unread = c.unread - d.unread,
        total = c.total - d.total, archived = c.archived - d.archived
    FROM (SELECT user_id, sum((k).unseen) AS unseen, sum((k).unread) AS unread,
                 sum((k).total) AS total, sum((k).archived) AS archived
          FROM (SELECT user_id, citelink_item_counts(r.*) AS k FROM old_rows AS r) AS counted
          GROUP BY user_id) AS d
    WHERE c.user_id = d.user_id;

    PERFORM citelink_notify_item('remove', e.user_id, e.id, e.notification_id, e.position,
                                 e.state, 0)
    FROM (SELECT r.*, citelink_item_state(r) AS state FROM old_rows AS r
          WHERE NOT r.is_deleted ORDER BY r.id OFFSET 0) AS e;
    RETURN NULL;
END
$$;

-- Triggers -------------------------------------------------------------------

DROP TRIGGER citelink_stamp_state ON user_notification;
CREATE TRIGGER citelink_stamp_state
    BEFORE UPDATE ON user_notification
    FOR EACH ROW
    WHEN ((NEW.is_seen, NEW.is_read, NEW.is_archived, NEW.interacted_at, NEW.is_deleted)
          IS DISTINCT FROM (OLD.is_seen, OLD.is_read, OLD.is_archived, OLD.interacted_at,
                            OLD.is_deleted))
    EXECUTE FUNCTION citelink_stamp_item_state();

