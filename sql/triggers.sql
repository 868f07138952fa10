-- citelink behaviour in the database: fan-out, inbox counters, events, audit.
-- Everything here fires for any writer (the API, psql, another service), so a
-- row inserted by plain SQL is delivered and audited like one from the API.
--
-- Plans: PL/pgSQL plans each query once per session, at its first call, with
-- the transition tables' sizes of that call as estimates. A join planned for
-- one row is a nested loop, quadratic when a later statement brings 100,000
-- rows; one planned for 100,000 scans whole tables when later calls bring one.
-- So no query here leaves the planner a choice it could get wrong. The hints
-- that do it, each guarded by tests/test_database.py::
-- test_big_statements_after_small_ones_stay_linear (small statements first,
-- then big ones under a statement timeout) -- read this before tidying one:
--  * `SET enable_seqscan = off` (every function that probes other tables):
--    a plan made while a table is empty (a fresh database) would scan it
--    whole for every probe, quadratic once the table has grown.
--  * `SET enable_nestloop = off` (citelink_fan_out_notification): its join of
--    (user, notification) pairs to the counter rows they lock stays a hash
--    join, linear at any size. The lateral subscriber probe is a nested loop
--    still: nothing else can compute it.
--  * `CROSS JOIN LATERAL (... WHERE tag_id = n.tag_id OFFSET 0)`: the tag id
--    comes from the outer row, so the subscribers are read by a parameterized
--    probe of the (tag_id, user_id) index; with the tag id as a plain
--    parameter, a generic plan may walk the (user_id, tag_id) index instead,
--    which is in user order too (a 10-recipient fan-out scanned every
--    subscription). OFFSET 0 keeps the subquery from being flattened.
--  * `SET enable_hashjoin = off`, `SET enable_mergejoin = off`
--    (citelink_publish_removed_items, citelink_count_recipients): their join
--    to inbox_count or notification is one primary key probe per row, never
--    a scan of the table.
--  * Old and new rows of an UPDATE are paired by GROUP BY on the id, not
--    joined (citelink_audit_changes, citelink_publish_item_changes).
--  * `ORDER BY id OFFSET 0` in the subquery that feeds pg_notify: events are
--    sent in item order; the fence keeps the ordered subquery as it is.

-- Events: one channel, `citelink_events`; payloads carry ids and numbers
-- only, so they stay far below the 8000-byte pg_notify limit whatever the
-- message length:
--     "<kind> <user_id> <item_id> <notification_id> <position> <old> <new>
--      <unseen> <unread> <total> <archived>"
--         one inbox item was added (kind `new`), changed (`change`) or removed
--         outright (`remove`); <old> and <new> are its states before and after
--         (citelink_item_state: bits for seen, read, archived, interacted,
--         deleted), then the user's counts after the change;
--     "bulk <user_id> <items> <unseen> <unread> <total> <archived>"
--         a statement changed more than citelink_events_per_item_limit()
--         items: one event per user instead of one per item (clients reload
--         what they show);
--     "fanout <notification_id> <recipients>"
--         a statement added more than that many items of one notification:
--         one event for all of them (each relay reads which of its connected
--         users got one);
--     "revoke <user_id> <generation> <active>"
--         the user's tokens older than <generation> were revoked; <active> is
--         1 when the password changed or they signed out everywhere, 0 when
--         the user was deactivated or deleted.
--
-- Per-user order: each user's items are numbered (`position`) 1, 2, 3, ... in
-- commit order. Whoever adds items for a user first locks the user's
-- inbox_count row (an upsert), takes the next numbers from it, and holds the
-- lock until commit: a second writer for the same user waits for the first to
-- commit (it then numbers after it) or abort (it then reuses its numbers), so
-- positions have no holes and never go backwards. Writers for different users
-- lock different rows and never wait on each other: there is no lock wider
-- than one user. The fan-out locks its recipients in user id order, so two
-- fan-outs to overlapping users cannot deadlock.
--
-- Inbox keys: user_notification.user_id and .notification_id name existing
-- rows, under every isolation level, without per-row foreign key checks:
--  * user_id: inbox rows are only added under the owner's counter row lock
--    (above), and that row has a real foreign key to users, with cascade.
--    A user who does not exist has no counter row, and a new one fails its
--    foreign key. Deleting a user deletes the counter row, so it waits for
--    every open transaction adding items for them; under REPEATABLE READ or
--    SERIALIZABLE it then fails to serialize, under READ COMMITTED it goes on
--    and removes their inbox rows, those included (citelink_remove_inbox_rows).
--  * notification_id: the fan-out adds rows only for the notifications its own
--    statement inserted, which no one else can see, let alone delete, before
--    it commits. A plain SQL insert of inbox rows updates the recipient count
--    of each notification it names, and fails when one is missing; deleting
--    a notification conflicts with that update as a user's deletion does with
--    the counter row.

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
-- More items in one statement than this, and the statement sends one `fanout`
-- event per notification (or one `bulk` event per user) instead of one event
-- per item: queueing 100,000 events at commit holds PostgreSQL's cluster-wide
-- NOTIFY lock, which every other notifying commit waits for, and makes every
-- relay parse 100,000 payloads to find the few users it serves.
CREATE FUNCTION citelink_events_per_item_limit() RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT 1000::bigint
$$;

-- An inbox item's state as one number, for events: 1 seen, 2 read,
-- 4 archived, 8 interacted, 16 deleted, 32 expired, 64 quiet (not pushed:
-- delivered to an `inbox` or `muted` subscription), 128 muted.
CREATE FUNCTION citelink_item_state(item user_notification) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT item.is_seen::integer + 2 * item.is_read::integer + 4 * item.is_archived::integer
           + 8 * (item.interacted_at IS NOT NULL)::integer + 16 * item.is_deleted::integer
           + 32 * item.is_expired::integer + 64 * (item.mode <> 'live')::integer
           + 128 * (item.mode = 'muted')::integer
$$;

-- The counts an item adds to its owner's counter row: (unseen, unread,
-- total, archived), as inbox_count defines them.
CREATE FUNCTION citelink_item_counts(item user_notification, OUT unseen integer,
                                     OUT unread integer, OUT total integer,
                                     OUT archived integer)
LANGUAGE sql IMMUTABLE AS $$
    SELECT (listed AND heard AND NOT item.is_seen)::integer,
           (listed AND heard AND NOT item.is_read)::integer,
           listed::integer, (NOT item.is_deleted AND NOT item.is_expired AND item.is_archived)::integer
    FROM (SELECT NOT item.is_deleted AND NOT item.is_archived AND NOT item.is_expired AS listed,
                 item.mode <> 'muted' AS heard) AS l
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

-- New notifications: those due now are fanned out; each gets one audit row
-- that summarises it with its recipient count (also kept on the notification).
CREATE FUNCTION citelink_fan_out_notification() RETURNS trigger
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

-- Schedules: the app's scheduler calls these in a loop (citelink/db/scheduler.py).
-- Each claims what is due with FOR UPDATE SKIP LOCKED and settles it in the
-- same transaction, so with any number of app processes every notification
-- is fanned out, and every expiry done, exactly once: a row another process
-- holds is skipped, and a settled one is never due again (a crash or a
-- database restart rolls the unsettled back, to be claimed again).

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

-- An inbox row inserted by plain SQL (not by the fan-out, which numbers its
-- own rows set-based): its states imply one another as on an update, then
-- lock the owner's counter row, count the item and give it the next
-- position. Whatever position the statement gave is replaced.
CREATE FUNCTION citelink_number_item() RETURNS trigger
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
CREATE FUNCTION citelink_position_before(owner bigint, item bigint) RETURNS bigint
LANGUAGE sql STABLE STRICT AS $$
    SELECT coalesce(
        (SELECT position FROM user_notification WHERE id = item AND user_id = owner),
        (SELECT position + 1 FROM user_notification
         WHERE user_id = owner AND NOT is_deleted AND NOT is_archived AND id < item
         ORDER BY position DESC LIMIT 1),
        0)
$$;

CREATE FUNCTION citelink_position_after(owner bigint, item bigint) RETURNS bigint
LANGUAGE sql STABLE STRICT AS $$
    SELECT coalesce(
        (SELECT position FROM user_notification WHERE id = item AND user_id = owner),
        (SELECT position FROM user_notification
         WHERE user_id = owner AND NOT is_deleted AND NOT is_archived AND id < item
         ORDER BY position DESC LIMIT 1),
        0)
$$;

-- An inbox row belongs to one user for life, and to one notification and
-- place in the user's order, unless grouping moves it (citelink_group_notification).
CREATE FUNCTION citelink_keep_inbox_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id = OLD.user_id AND current_setting('citelink.grouping', true) = 'on' THEN
        RETURN NEW;
    END IF;
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
-- CASCADE would do), through the indexes: a user's rows are in the inbox, the
-- archived and the deleted-items indexes, a notification's in the unique index.
CREATE FUNCTION citelink_remove_inbox_rows() RETURNS trigger
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

-- TRUNCATE of users or notifications (no row triggers fire) empties the inbox.
CREATE FUNCTION citelink_empty_inbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE user_notification;
    RETURN NULL;
END
$$;

-- States imply one another, whoever changes them: an interaction reads the
-- item, reading sees it. Each flag's time follows it.
CREATE FUNCTION citelink_stamp_item_state() RETURNS trigger
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
CREATE FUNCTION citelink_publish_new_items() RETURNS trigger
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
CREATE FUNCTION citelink_publish_item_changes() RETURNS trigger
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

-- Inbox rows removed outright (plain SQL or a cascade): fix the counters and
-- tell the owners their items went away.
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
CREATE FUNCTION citelink_publish_user_revoked() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('citelink_events',
                          concat_ws(' ', 'revoke', OLD.id, OLD.token_generation + 1, 0));
    ELSE
        PERFORM pg_notify('citelink_events',
                          concat_ws(' ', 'revoke', NEW.id, NEW.token_generation,
                                    NEW.is_active::int));
    END IF;
    RETURN NULL;
END
$$;

-- The users of the given external ids (the platform's own user ids), made on
-- the spot for those not seen before (platform provisioning): active, not
-- staff, without a usable password ('!' is no argon2 hash), named `ext.<id>`,
-- or `ext.<md5 of the id>` when the id is no valid username or that name is
-- taken. Two callers provisioning the same id at once get the same user.
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

-- Triggers -------------------------------------------------------------------

CREATE TRIGGER citelink_schedule
    BEFORE INSERT ON notification
    FOR EACH ROW EXECUTE FUNCTION citelink_schedule_notification();

CREATE TRIGGER citelink_fan_out
    AFTER INSERT ON notification
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_fan_out_notification();

CREATE TRIGGER citelink_number_items
    BEFORE INSERT ON user_notification
    FOR EACH ROW WHEN (NOT citelink_in_fan_out())
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
    FOR EACH STATEMENT WHEN (NOT citelink_in_fan_out())
    EXECUTE FUNCTION citelink_count_direct_recipients();

CREATE TRIGGER citelink_remove_inbox_of_deleted_users
    AFTER DELETE ON users
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_remove_inbox_rows();

CREATE TRIGGER citelink_remove_inbox_of_deleted_notifications
    AFTER DELETE ON notification
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_remove_inbox_rows();

CREATE TRIGGER citelink_empty_inbox_of_truncated_users
    AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_empty_inbox();

CREATE TRIGGER citelink_empty_inbox_of_truncated_notifications
    AFTER TRUNCATE ON notification
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_empty_inbox();

CREATE TRIGGER citelink_stamp_state
    BEFORE UPDATE ON user_notification
    FOR EACH ROW
    WHEN ((NEW.is_seen, NEW.is_read, NEW.is_archived, NEW.interacted_at, NEW.is_deleted)
          IS DISTINCT FROM (OLD.is_seen, OLD.is_read, OLD.is_archived, OLD.interacted_at,
                            OLD.is_deleted))
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
    EXECUTE FUNCTION citelink_publish_user_revoked();

CREATE TRIGGER citelink_revoke_deleted_user
    AFTER DELETE ON users
    FOR EACH ROW WHEN (OLD.is_active)
    EXECUTE FUNCTION citelink_publish_user_revoked();

-- Audit. Inbox rows made by a fan-out are summarised in the notification's own
-- audit row; inbox rows inserted directly are not.
CREATE TRIGGER citelink_audit_item_inserts
    AFTER INSERT ON user_notification
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT WHEN (NOT citelink_in_fan_out())
    EXECUTE FUNCTION citelink_audit_changes();

CREATE TRIGGER citelink_audit_item_updates
    AFTER UPDATE ON user_notification
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes();

CREATE TRIGGER citelink_audit_item_deletes
    AFTER DELETE ON user_notification
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes();

-- The fan-out's own update (the recipient count) is in its create row already.
CREATE TRIGGER citelink_audit_notification_updates
    AFTER UPDATE ON notification
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0)
    EXECUTE FUNCTION citelink_audit_changes();

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
