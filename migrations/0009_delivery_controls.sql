-- Who gets what, and when (the same as sql/schema.sql and sql/triggers.sql):
--  * notifications to listed users (`users`), with or without a tag;
--  * scheduled ones (`send_at`), fanned out exactly once by the app's
--    scheduler (citelink_deliver_due), and expiring ones (`expires_at`,
--    citelink_expire_due; lists leave them out on read);
--  * per subscription preferences (`mode`: live, inbox, muted) and critical
--    tags that ignore them;
--  * grouping (`group_key`, `group_window`) and priority (high is pinned).
-- Existing notifications were all delivered when they were made.
-- depends: 0008_inbox_states

ALTER TABLE tag ADD COLUMN critical boolean NOT NULL DEFAULT false;
ALTER TABLE subscription
    ADD COLUMN mode text NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'inbox', 'muted'));
ALTER TABLE notification
    ALTER COLUMN tag_id DROP NOT NULL,
    ADD COLUMN users bigint[] CHECK (cardinality(users) BETWEEN 1 AND 10000),
    ADD COLUMN priority text NOT NULL DEFAULT 'normal'
        CHECK (priority IN ('low', 'normal', 'high')),
    ADD COLUMN group_key text CHECK (char_length(group_key) BETWEEN 1 AND 200),
    ADD COLUMN group_window interval NOT NULL DEFAULT '10 minutes' CHECK (group_window > '0'),
    ADD COLUMN send_at timestamptz,
    ADD COLUMN delivered_at timestamptz,
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN expired_at timestamptz,
    ADD CHECK (tag_id IS NOT NULL OR users IS NOT NULL);
ALTER TABLE user_notification
    ADD COLUMN is_expired boolean NOT NULL DEFAULT false,
    ADD COLUMN mode text NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'inbox', 'muted')),
    ADD COLUMN priority text NOT NULL DEFAULT 'normal'
        CHECK (priority IN ('low', 'normal', 'high')),
    ADD COLUMN group_key text,
    ADD COLUMN count integer NOT NULL DEFAULT 1,
    ADD COLUMN notification_ids bigint[];

-- Bookkeeping, not a change anyone made: no audit rows.
ALTER TABLE notification DISABLE TRIGGER USER;
UPDATE notification SET delivered_at = created_at;
ALTER TABLE notification ENABLE TRIGGER USER;

-- `expired` is evaluated here, on read: an item past its notification's
-- expires_at is expired even before the scheduler marks it (is_expired).
CREATE OR REPLACE VIEW inbox_item AS
SELECT i.id, i.user_id, i.is_deleted, i.notification_id, n.tag_id AS tag,
       t.name AS tag_name, n.message, n.data, n.created_at AS timestamp,
       i.is_read, i.read_at, i.position, i.is_seen, i.seen_at, i.is_archived,
       i.archived_at, i.interacted_at, i.action, i.priority, i.group_key, i.count,
       i.notification_ids, n.expires_at,
       i.is_expired OR coalesce(n.expires_at <= now(), false) AS expired
FROM user_notification AS i
JOIN notification AS n ON n.id = i.notification_id
LEFT JOIN tag AS t ON t.id = n.tag_id;

-- What the scheduler has to fan out, and to expire.
CREATE INDEX notification_scheduled_idx ON notification (send_at) WHERE delivered_at IS NULL;
CREATE INDEX notification_expiring_idx
    ON notification (expires_at) WHERE expires_at IS NOT NULL AND expired_at IS NULL;
-- High-priority unread items, pinned to the top of the default list.
CREATE INDEX user_notification_pinned_idx
    ON user_notification (user_id, position)
    WHERE priority = 'high' AND NOT is_read AND NOT is_deleted AND NOT is_archived;
-- A user's unread items of a group, for the next notification of its key.
CREATE INDEX user_notification_group_idx
    ON user_notification (user_id, group_key, position)
    WHERE group_key IS NOT NULL AND NOT is_read AND NOT is_deleted AND NOT is_archived;

-- Functions ------------------------------------------------------------------

DROP FUNCTION citelink_publish(bigint, text, jsonb, bigint);
DROP TRIGGER citelink_number_items ON user_notification;
DROP TRIGGER citelink_count_direct_items ON user_notification;
DROP TRIGGER citelink_audit_item_inserts ON user_notification;

-- An inbox item's state as one number, for events: 1 seen, 2 read,
-- 4 archived, 8 interacted, 16 deleted, 32 expired, 64 quiet (not pushed:
-- delivered to an `inbox` or `muted` subscription), 128 muted.
CREATE OR REPLACE FUNCTION citelink_item_state(item user_notification) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT item.is_seen::integer + 2 * item.is_read::integer + 4 * item.is_archived::integer
           + 8 * (item.interacted_at IS NOT NULL)::integer + 16 * item.is_deleted::integer
           + 32 * item.is_expired::integer + 64 * (item.mode <> 'live')::integer
           + 128 * (item.mode = 'muted')::integer
$$;

-- The counts an item adds to its owner's counter row: (unseen, unread,
-- total, archived), as inbox_count defines them.
CREATE OR REPLACE FUNCTION citelink_item_counts(item user_notification, OUT unseen integer,
                                     OUT unread integer, OUT total integer,
                                     OUT archived integer)
LANGUAGE sql IMMUTABLE AS $$
    SELECT (listed AND heard AND NOT item.is_seen)::integer,
           (listed AND heard AND NOT item.is_read)::integer,
           listed::integer, (NOT item.is_deleted AND NOT item.is_expired AND item.is_archived)::integer
    FROM (SELECT NOT item.is_deleted AND NOT item.is_archived AND NOT item.is_expired AS listed,
                 item.mode <> 'muted' AS heard) AS l
$$;

-- New notifications: those due now are fanned out; each gets one audit row
-- that summarises it with its recipient count (also kept on the notification).
CREATE OR REPLACE FUNCTION citelink_fan_out_notification() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM citelink_fan_out(ARRAY(SELECT id FROM new_rows WHERE delivered_at IS NOT NULL
                                   ORDER BY id));
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

-- An inbox row belongs to one user for life, and to one notification and
-- place in the user's order, unless grouping moves it (citelink_group_notification).
CREATE OR REPLACE FUNCTION citelink_keep_inbox_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id = OLD.user_id AND current_setting('citelink.grouping', true) = 'on' THEN
        RETURN NEW;
    END IF;
    RAISE restrict_violation USING
        MESSAGE = 'an inbox row cannot move to another user, notification or position';
END
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
    -- A moved item (grouping: a new notification, a new position) is an
    -- `update`; otherwise an item whose state changed is a `change`.
    PERFORM citelink_notify_item(CASE WHEN e.moved THEN 'update' ELSE 'change' END, e.user_id,
                                 e.id, e.notification_id, e.position, e.old_state, e.new_state)
    FROM (
        SELECT r.id, r.user_id,
               max(r.notification_id) FILTER (WHERE r.side = 'new') AS notification_id,
               max(r.position) FILTER (WHERE r.side = 'new') AS position,
               count(DISTINCT r.position) > 1 AS moved,
               min(r.state) FILTER (WHERE r.side = 'old') AS old_state,
               min(r.state) FILTER (WHERE r.side = 'new') AS new_state
        FROM (SELECT 'old' AS side, o.id, o.user_id, o.notification_id, o.position,
                     citelink_item_state(o) AS state
              FROM old_rows AS o
              UNION ALL
              SELECT 'new', n.id, n.user_id, n.notification_id, n.position,
                     citelink_item_state(n)
              FROM new_rows AS n) AS r
        GROUP BY r.id, r.user_id
        ORDER BY r.id OFFSET 0
    ) AS e
    WHERE e.moved OR e.old_state <> e.new_state;
    RETURN NULL;
END
$$;

-- A notification is due at once unless it is scheduled for later (`send_at`):
-- then it waits, undelivered, for the scheduler (citelink_deliver_due).
CREATE FUNCTION citelink_schedule_notification() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.delivered_at := CASE WHEN NEW.send_at IS NULL OR NEW.send_at <= now() THEN now() END;
    RETURN NEW;
END
$$;

-- Who gets notification `note`: the subscribers of its tag, with their mode
-- (`live` whatever it is for a critical tag), and the listed users who are
-- not subscribed, live. Lateral probes only ("Plans").
CREATE FUNCTION citelink_recipients(note notification)
RETURNS TABLE (user_id bigint, mode text)
LANGUAGE sql STABLE
SET enable_seqscan = off
AS $$
    SELECT s.user_id,
           CASE WHEN (SELECT critical FROM tag WHERE id = note.tag_id) THEN 'live' ELSE s.mode END
    FROM subscription AS s WHERE s.tag_id = note.tag_id
    UNION ALL
    SELECT u.user_id, 'live'
    FROM (SELECT DISTINCT unnest(note.users) AS user_id) AS u
    WHERE NOT EXISTS (SELECT FROM subscription AS s
                      WHERE s.tag_id = note.tag_id AND s.user_id = u.user_id)
$$;

-- Fans out the notifications `ids` (due, not fanned out yet): each recipient
-- gets an inbox row, or for a grouped notification their item of the group
-- is moved to the top (citelink_group_notification). Then each notification
-- counts its recipients.
CREATE FUNCTION citelink_fan_out(ids bigint[]) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    note notification;
    pairs record;
BEGIN
    SELECT array_agg(r.user_id ORDER BY r.user_id, n.id) AS users,
           array_agg(n.id ORDER BY r.user_id, n.id) AS notes,
           array_agg(r.mode ORDER BY r.user_id, n.id) AS modes,
           array_agg(n.priority ORDER BY r.user_id, n.id) AS priorities
    INTO pairs
    FROM unnest(ids) AS d (id)
    CROSS JOIN LATERAL (SELECT * FROM notification WHERE id = d.id OFFSET 0) AS n
    CROSS JOIN LATERAL citelink_recipients(n) AS r
    WHERE n.group_key IS NULL;
    PERFORM citelink_add_items(pairs.users, pairs.notes, pairs.modes, pairs.priorities, NULL);
    FOR note IN SELECT * FROM notification WHERE id = ANY (ids) AND group_key IS NOT NULL
                ORDER BY id LOOP
        PERFORM citelink_group_notification(note);
    END LOOP;
END
$$;

-- Inbox rows for (users[i], notes[i]) pairs, sorted by user: each user's
-- counter row is locked in user id order (the upsert follows the sorted pairs)
-- and gives as many positions as the user gets items, in notification order
-- ("Per-user order"). Pairs and counter rows meet in a hash join, linear at
-- any size ("Plans").
CREATE FUNCTION citelink_add_items(users bigint[], notes bigint[], modes text[],
                                   priorities text[], key text) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_nestloop = off
AS $$
DECLARE
    made bigint;
BEGIN
    -- The rows of a fan-out are numbered, counted and audited here, not one
    -- by one by the triggers that do it for rows inserted by plain SQL.
    PERFORM set_config('citelink.fan_out', 'on', true);
    WITH pairs AS (
        SELECT * FROM unnest(users, notes, modes, priorities)
                      AS p (user_id, notification_id, mode, priority)
    ), numbered AS (
        INSERT INTO inbox_count AS c (user_id, unseen, unread, total, last_position)
        SELECT user_id, count(*) FILTER (WHERE mode <> 'muted'),
               count(*) FILTER (WHERE mode <> 'muted'), count(*), count(*)
        FROM pairs GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE
            SET unseen = c.unseen + excluded.unseen, unread = c.unread + excluded.unread,
                total = c.total + excluded.total,
                last_position = c.last_position + excluded.last_position
        RETURNING user_id, last_position
    ), inserted AS (
        INSERT INTO user_notification (user_id, notification_id, position, mode, priority,
                                       group_key)
        SELECT p.user_id, p.notification_id,
               b.last_position - count(*) OVER (PARTITION BY p.user_id)
                   + row_number() OVER (PARTITION BY p.user_id ORDER BY p.notification_id),
               p.mode, p.priority, key
        FROM pairs AS p JOIN numbered AS b ON b.user_id = p.user_id
        RETURNING notification_id
    )
    SELECT citelink_count_recipients(array_agg(notification_id), array_agg(items))
    FROM (SELECT notification_id, count(*) AS items FROM inserted GROUP BY notification_id) AS m
    INTO made;
    PERFORM set_config('citelink.fan_out', '', true);
END
$$;

-- Whether the statement running is a fan-out's insert (citelink_add_items).
CREATE FUNCTION citelink_in_fan_out() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('citelink.fan_out', true) = 'on', false)
$$;

-- Grouping: a recipient who has an unread item of the notification's
-- group_key, from within its group_window, has that item updated in place
-- (the message it shows replaced, `count` one more, the notification listed,
-- unseen again) and moved to the top: a new position in their order, one
-- `update` event. The others get a new item. Their counter rows are locked
-- first, in user id order, by their own statement: the items of the group are
-- then looked for in a later snapshot, which sees every earlier writer of
-- these users committed, so concurrent publishes of one key group together.
CREATE FUNCTION citelink_group_notification(note notification) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    users bigint[];
    modes text[];
    found record;
BEGIN
    SELECT array_agg(r.user_id ORDER BY r.user_id), array_agg(r.mode ORDER BY r.user_id)
    INTO users, modes
    FROM citelink_recipients(note) AS r;
    IF users IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO inbox_count AS c (user_id)
    SELECT unnest(users)
    ON CONFLICT (user_id) DO UPDATE SET last_position = c.last_position;

    SELECT array_agg(g.id) FILTER (WHERE g.id IS NOT NULL) AS targets,
           array_agg(u.user_id) FILTER (WHERE g.id IS NOT NULL) AS grouped,
           array_agg(u.user_id ORDER BY u.user_id) FILTER (WHERE g.id IS NULL) AS users,
           array_agg(u.mode ORDER BY u.user_id) FILTER (WHERE g.id IS NULL) AS modes
    INTO found
    FROM unnest(users, modes) AS u (user_id, mode)
    LEFT JOIN LATERAL (
        SELECT i.id FROM user_notification AS i
        WHERE i.user_id = u.user_id AND i.group_key = note.group_key
          AND NOT i.is_read AND NOT i.is_deleted AND NOT i.is_archived AND NOT i.is_expired
          AND (SELECT created_at FROM notification WHERE id = i.notification_id)
              > now() - note.group_window
        ORDER BY i.position DESC LIMIT 1
    ) AS g ON true;

    IF found.targets IS NOT NULL THEN
        PERFORM set_config('citelink.grouping', 'on', true);
        WITH moved AS (
            UPDATE inbox_count AS c SET last_position = c.last_position + 1
            WHERE c.user_id = ANY (found.grouped)
            RETURNING c.user_id, c.last_position
        )
        UPDATE user_notification AS i
        SET notification_id = note.id, position = m.last_position, count = i.count + 1,
            notification_ids = coalesce(i.notification_ids, ARRAY[i.notification_id]) || note.id,
            is_seen = false, priority = note.priority
        FROM moved AS m
        WHERE i.id = ANY (found.targets) AND i.user_id = m.user_id;
        PERFORM set_config('citelink.grouping', '', true);
        PERFORM citelink_count_recipients(ARRAY[note.id],
                                          ARRAY[cardinality(found.targets)::bigint]);
    END IF;
    IF found.users IS NOT NULL THEN
        PERFORM citelink_add_items(
            found.users,
            array_fill(note.id, ARRAY[cardinality(found.users)]),
            found.modes,
            array_fill(note.priority, ARRAY[cardinality(found.users)]),
            note.group_key);
    END IF;
END
$$;

-- Fans out up to `most` notifications whose send_at has come; how many.
CREATE FUNCTION citelink_deliver_due(most integer) RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    due bigint[];
BEGIN
    due := ARRAY(SELECT id FROM notification
                 WHERE delivered_at IS NULL AND send_at <= now()
                 ORDER BY send_at, id LIMIT most
                 FOR UPDATE SKIP LOCKED);
    PERFORM citelink_fan_out(due);
    UPDATE notification SET delivered_at = now() WHERE id = ANY (due);
    RETURN cardinality(due);
END
$$;

-- Marks the items of up to `most` notifications whose expires_at has passed
-- expired (counted, audited and told like any other change); how many
-- notifications.
CREATE FUNCTION citelink_expire_due(most integer) RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    due bigint[];
BEGIN
    due := ARRAY(SELECT id FROM notification
                 WHERE expired_at IS NULL AND expires_at <= now()
                 ORDER BY expires_at, id LIMIT most
                 FOR UPDATE SKIP LOCKED);
    UPDATE user_notification SET is_expired = true
    WHERE notification_id = ANY (due) AND NOT is_expired;
    UPDATE notification SET expired_at = now() WHERE id = ANY (due);
    RETURN cardinality(due);
END
$$;

-- Publishing as the API does it, in one round trip: the publisher is the
-- audit actor, the notification is inserted like any other (the triggers
-- fan it out, or leave it to the scheduler), and it comes back with its
-- number of recipients. Called outside an explicit transaction, it commits as
-- soon as it returns, so the recipients' counter rows are locked for no
-- client round trip.
CREATE FUNCTION citelink_publish(tag bigint, users bigint[], body text, extra jsonb,
                                 priority text, group_key text, group_window interval,
                                 send_at timestamptz, expires_at timestamptz, actor bigint)
RETURNS SETOF notification
LANGUAGE plpgsql AS $$
DECLARE
    note_id bigint;
BEGIN
    PERFORM set_config('citelink.actor_id', coalesce(actor::text, ''), true);
    INSERT INTO notification (tag_id, users, message, data, priority, group_key, group_window,
                              send_at, expires_at, created_by)
    VALUES (tag, users, body, extra, coalesce(priority, 'normal'), group_key,
            coalesce(group_window, interval '10 minutes'), send_at, expires_at, actor)
    RETURNING notification.id INTO note_id;
    -- Read back: the fan-out has set the recipient count since.
    RETURN QUERY SELECT * FROM notification AS n WHERE n.id = note_id;
END
$$;

-- Triggers -------------------------------------------------------------------

CREATE TRIGGER citelink_schedule
    BEFORE INSERT ON notification
    FOR EACH ROW EXECUTE FUNCTION citelink_schedule_notification();

CREATE TRIGGER citelink_number_items
    BEFORE INSERT ON user_notification
    FOR EACH ROW WHEN (NOT citelink_in_fan_out())
    EXECUTE FUNCTION citelink_number_item();

CREATE TRIGGER citelink_count_direct_items
    AFTER INSERT ON user_notification
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT WHEN (NOT citelink_in_fan_out())
    EXECUTE FUNCTION citelink_count_direct_recipients();

-- Audit. Inbox rows made by a fan-out are summarised in the notification's own
-- audit row; inbox rows inserted directly are not.
CREATE TRIGGER citelink_audit_item_inserts
    AFTER INSERT ON user_notification
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT WHEN (NOT citelink_in_fan_out())
    EXECUTE FUNCTION citelink_audit_changes();

