-- citelink behaviour in the database: fan-out, inbox counters, events, audit.
-- Everything here fires for any writer (the API, psql, another service), so a
-- row inserted by plain SQL is delivered and audited like one from the API.
-- This file is the one home of every function and trigger: migrating applies
-- it again whenever it changed (citelink.db.migrations).
--
-- The common publish (one notification, due now, to a tag or to listed
-- users, no group key) takes one short path: the trigger on notification runs
-- one statement that finds the recipients, locks and bumps their counter
-- rows, inserts their items, counts them, writes the audit row and sends the
-- events. Any other statement goes through citelink_fan_out, the same for
-- any number of notifications; grouping, schedules and expiry add work only
-- to the notifications that use them. tests/db/test_publish_work.py counts the work of one publish
-- (statements, function calls, rows written): a change that adds to the
-- common path fails it until the expected counts are changed with it.
--
-- Plans: PL/pgSQL plans each query once per session, at its first call, with
-- the transition tables' sizes of that call as estimates. A join planned for
-- one row is a nested loop, quadratic when a later statement brings 100,000
-- rows; one planned for 100,000 scans whole tables when later calls bring one.
-- So no query here leaves the planner a choice it could get wrong. The hints
-- that do it, each guarded by tests/db/test_database.py::
-- test_big_statements_after_small_ones_stay_linear (small statements first,
-- then big ones under a statement timeout) -- read this before tidying one:
--  * `SET plan_cache_mode = force_generic_plan` (functions whose statements
--    take parameters): one plan per session; otherwise PostgreSQL may plan
--    the fan-out's statement again at every call (1 ms), because a custom
--    plan for one notification looks cheaper than the generic one.
--  * `SET enable_seqscan = off` (functions that probe other tables): a plan
--    made while a table is empty (a fresh database) would scan it whole for
--    every probe, quadratic once the table has grown.
--  * `SET enable_nestloop = off` (the fan-outs, citelink_item_changes,
--    citelink_items_removed): their joins of rows to the counter rows they
--    lock stay hash joins, linear at any size. Lateral probes are nested
--    loops still: nothing else can compute them.
--  * `EXISTS (... OFFSET 0)`: a correlated probe per row, never turned into a
--    join that could read a whole index.
--  * `CROSS JOIN LATERAL (... WHERE tag_id = n.tag_id OFFSET 0)`: the tag id
--    comes from the outer row, so the subscribers are read by a parameterized
--    probe of the (tag_id, user_id) index; with the tag id as a plain
--    parameter, a generic plan may walk the (user_id, tag_id) index instead,
--    which is in user order too (a 10-recipient fan-out scanned every
--    subscription). OFFSET 0 keeps the subquery from being flattened.
--  * Old and new rows of an UPDATE are paired by GROUP BY on the id, not
--    joined (citelink_audit_changes, citelink_item_changes).
--  * `ORDER BY ... OFFSET 0` in the subquery that feeds pg_notify: events are
--    sent in item order; the fence keeps the ordered subquery as it is.

-- Events: one channel, `citelink_events`; payloads carry ids and numbers
-- only, so they stay far below the 8000-byte pg_notify limit whatever the
-- message length:
--     "<kind> <user_id> <item_id> <notification_id> <position> <old> <new>
--      <unseen> <unread> <total> <archived>"
--         one inbox item was added (kind `new`), changed (`change`), moved to
--         the top by grouping (`update`) or removed outright (`remove`); <old>
--         and <new> are its states before and after (citelink_item_state:
--         bits for seen, read, archived, interacted, deleted), then the
--         user's counts after the statement;
--     "bulk <user_id> <items> <unseen> <unread> <total> <archived>"
--         a statement changed more than citelink_events_per_item_limit()
--         items: one event per user instead of one per item (clients reload
--         what they show);
--     "fanout <notification_id> <recipients>"
--         a statement added more than that many items: one event per
--         notification for all of them (each relay reads which of its
--         connected users got one);
--     "revoke <user_id> <generation> <active>"
--         the user's tokens older than <generation> were revoked; <active> is
--         1 when the password changed or they signed out everywhere, 0 when
--         the user was deactivated or deleted.
-- Each statement sends its events in one set-based query, in item order.
--
-- Per-user order: each user's items are numbered (`position`) 1, 2, 3, ... in
-- commit order. Whoever adds items for a user first locks the user's
-- inbox_count row (an upsert), takes the next numbers from it, and holds the
-- lock until commit: a second writer for the same user waits for the first to
-- commit (it then numbers after it) or abort (it then reuses its numbers), so
-- positions have no holes and never go backwards. Writers for different users
-- lock different rows and never wait on each other: there is no lock wider
-- than one user.
--
-- Lock order: every writer of a user's items locks the user's counter row
-- (inbox_count) first, then items; a statement for several users locks their
-- counter rows in user id order, all before any item. Notification rows come
-- before both: a publisher's own new ones, those the scheduler claims for
-- delivery or expiry, the one a plain SQL inbox row counts itself on. The fan-out and
-- grouping upsert them (citelink_fan_out, citelink_lock_inboxes); the app's
-- writes (REST, socket frames, bulk) lock them with citelink_lock_inbox before
-- their UPDATE; expiry and the deletion of a notification lock its
-- recipients' rows; a plain SQL insert of an inbox row locks its owner's row
-- before the row exists. Two writers that follow this order cannot deadlock:
-- they wait for each other only on counter rows, taken in one order, and
-- whoever holds a user's counter row is the only one of them changing that
-- user's items. A plain SQL UPDATE or DELETE of inbox rows locks its items
-- first (PostgreSQL locks a row before any row trigger sees it) and their
-- counter rows at the end of the statement: so that such a statement can never
-- close a cycle, writers that follow the order never wait for an item while
-- they hold a counter row -- grouping and expiry skip an item another
-- transaction holds (FOR UPDATE SKIP LOCKED), and the app's writes give up
-- after a short lock_timeout and try again (citelink_lock_inbox). A
-- transaction of several statements that changes inbox rows by hand should
-- call citelink_lock_inboxes(ARRAY[...]) first.
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
--  * notification_id: the fan-out adds rows only for notifications its own
--    transaction inserted or claimed (FOR UPDATE), which no one else can
--    delete before it commits. A plain SQL insert of an inbox row updates the
--    recipient count of the notification it names, and fails when it is
--    missing; deleting a notification conflicts with that update as a user's
--    deletion does with the counter row.

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

-- One audit row per changed row of the table the trigger is on (statement
-- level). Secret columns, named as the trigger's arguments (a password hash,
-- a key's hash), are never copied: an update says only that one changed.
CREATE FUNCTION citelink_audit_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    hidden text[] := coalesce(TG_ARGV, '{}');
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
        SELECT TG_TABLE_NAME, r.id, 'create', citelink_row_diff(NULL, to_jsonb(r) - hidden),
               citelink_actor_id()
        FROM new_rows AS r ORDER BY r.id;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
        SELECT TG_TABLE_NAME, d.id, 'update', d.changes, citelink_actor_id()
        FROM (
            SELECT id, citelink_row_diff((pair -> 'old') - hidden, (pair -> 'new') - hidden)
                       || (SELECT coalesce(jsonb_object_agg(h, '["(hidden)", "(changed)"]'::jsonb),
                                           '{}')
                           FROM unnest(hidden) AS h
                           WHERE pair -> 'old' -> h IS DISTINCT FROM pair -> 'new' -> h) AS changes
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
        SELECT TG_TABLE_NAME, r.id, 'delete', citelink_row_diff(to_jsonb(r) - hidden, NULL),
               citelink_actor_id()
        FROM old_rows AS r ORDER BY r.id;
    END IF;
    RETURN NULL;
END
$$;

-- One audit row for one changed row (row level: for tables whose updates are
-- few, so that the updates the triggers make themselves -- a notification's
-- recipient count -- collect no transition tables).
CREATE FUNCTION citelink_audit_row_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes jsonb := citelink_row_diff(to_jsonb(OLD), to_jsonb(NEW));
BEGIN
    IF changes <> '{}' THEN
        INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
        VALUES (TG_TABLE_NAME, NEW.id, 'update', changes, citelink_actor_id());
    END IF;
    RETURN NULL;
END
$$;

-- More items in one statement than this, and the statement sends one `fanout`
-- event per notification (or one `bulk` event per user) instead of one event
-- per item, and audits a bulk change in one row per user and change: queueing
-- 100,000 events at commit holds PostgreSQL's cluster-wide NOTIFY lock, which
-- every other notifying commit waits for, and makes every relay parse 100,000
-- payloads to find the few users it serves.
CREATE FUNCTION citelink_events_per_item_limit() RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT 1000::bigint
$$;

-- How many of a grouped item's notification ids the item keeps (the newest);
-- the whole list is in group_member.
CREATE FUNCTION citelink_group_ids_kept() RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT 10
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

-- Locks the inbox of `owner` (their counter row) for a change of their
-- items, as the lock order wants it: first, and alone. The wait for the
-- counter row is as long as it takes (another writer of the user commits
-- soon); the items are then changed under a short lock_timeout, since only a
-- writer outside the lock order (a plain SQL UPDATE of inbox rows) can hold
-- one of them, and it is waiting for this very row: giving up (the app tries
-- again) is what lets it finish. Returns whether the user has an inbox.
CREATE FUNCTION citelink_lock_inbox(owner bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM inbox_count WHERE user_id = owner FOR NO KEY UPDATE;
    PERFORM set_config('lock_timeout', '200ms', true);
    RETURN FOUND;
END
$$;

-- Locks the inboxes of `owners`, in user id order, making counter rows for
-- those who have none yet (users who do not exist are left out): what a
-- writer for several users does before any item.
CREATE FUNCTION citelink_lock_inboxes(owners bigint[]) RETURNS void
LANGUAGE sql
SET enable_seqscan = off
AS $$
    INSERT INTO inbox_count AS c (user_id)
    SELECT DISTINCT o FROM unnest(owners) AS o WHERE EXISTS (SELECT FROM users WHERE id = o)
    ORDER BY 1
    ON CONFLICT (user_id) DO UPDATE SET last_position = c.last_position
$$;

-- The users a notification lists must exist: those missing are named (not
-- found later as a failed fan-out).
CREATE FUNCTION citelink_require_users(listed bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    missing bigint[] := ARRAY(SELECT DISTINCT u FROM unnest(listed) AS u
                              WHERE NOT EXISTS (SELECT FROM users WHERE id = u) ORDER BY u);
BEGIN
    IF missing <> '{}' THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('notification.users names users that do not exist: %s%s',
                             array_to_string(missing[1:20], ', '),
                             CASE WHEN cardinality(missing) > 20
                                  THEN format(' and %s more', cardinality(missing) - 20) END),
            COLUMN = 'users', TABLE = 'notification';
    END IF;
END
$$;

-- A new notification: due at once unless it is scheduled for later
-- (`send_at`; then it waits, undelivered, for the scheduler); the users it
-- lists exist. Its listed users changed before delivery: checked again.
CREATE FUNCTION citelink_check_notification() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.delivered_at := CASE WHEN NEW.send_at IS NULL OR NEW.send_at <= now() THEN now() END;
    END IF;
    IF NEW.users IS NOT NULL THEN
        PERFORM citelink_require_users(NEW.users);
    END IF;
    RETURN NEW;
END
$$;

-- New notifications: those due now are fanned out (grouped ones by
-- citelink_group_notifications), then each gets one audit row that summarises
-- it: field -> [null, value], and its recipient count. The trigger holds the
-- common publish's whole path itself: a function call, and a statement
-- sized for any number of notifications, were a fifth of it.
CREATE FUNCTION citelink_fan_out_notification() RETURNS trigger
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_nestloop = off
AS $$
DECLARE
    plain bigint[];
    grouped bigint[];
    simple boolean;
    sent bigint;
BEGIN
    SELECT count(*) = 1 AND bool_and(group_key IS NULL AND delivered_at IS NOT NULL
                                      AND (users IS NULL OR tag_id IS NULL))
    INTO simple FROM new_rows;
    IF simple THEN
        -- The common publish: one notification, due now, to a tag or to listed
        -- users (not both), no group key. One statement: recipients, counter
        -- rows (locked in user id order), inbox rows (each user gets one: their
        -- position is their counter's new last one), the recipient count, the
        -- audit row and the events. citelink_fan_out is the same for any
        -- number of notifications and every feature.
        PERFORM set_config('citelink.fan_out', 'on', true);
        WITH subscribers AS MATERIALIZED (
            SELECT s.user_id, n.id AS notification_id, n.priority,
                   CASE WHEN (SELECT critical FROM tag WHERE id = n.tag_id) THEN 'live'
                        ELSE s.mode END AS mode
            FROM new_rows AS n
            CROSS JOIN LATERAL (
                SELECT user_id, mode FROM subscription WHERE tag_id = n.tag_id OFFSET 0
            ) AS s
            UNION ALL
            SELECT u.user_id, n.id, n.priority, 'live'
            FROM new_rows AS n
            CROSS JOIN LATERAL (SELECT DISTINCT unnest(n.users) AS user_id) AS u
            WHERE n.tag_id IS NULL AND EXISTS (SELECT FROM users WHERE id = u.user_id OFFSET 0)
        ), numbered AS (
            INSERT INTO inbox_count AS c (user_id, unseen, unread, total, last_position)
            SELECT user_id, (mode <> 'muted')::int, (mode <> 'muted')::int, 1, 1
            FROM subscribers ORDER BY user_id
            ON CONFLICT (user_id) DO UPDATE
                SET unseen = c.unseen + excluded.unseen, unread = c.unread + excluded.unread,
                    total = c.total + 1, last_position = c.last_position + 1
            RETURNING c.user_id, c.last_position, c.unseen, c.unread, c.total, c.archived
        ), inserted AS (
            INSERT INTO user_notification (user_id, notification_id, position, mode, priority)
            SELECT s.user_id, s.notification_id, b.last_position, s.mode, s.priority
            FROM subscribers AS s JOIN numbered AS b ON b.user_id = s.user_id
            ORDER BY s.user_id
            RETURNING id, user_id, notification_id, position, mode
        ), counted AS (
            INSERT INTO notification_recipients (notification_id, recipients)
            SELECT notification_id, count(*) FROM inserted GROUP BY notification_id
        ), audited AS (
            INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
            SELECT 'notification', n.id, 'create',
                   (SELECT jsonb_object_agg(key, jsonb_build_array(NULL, value))
                    FROM jsonb_each(to_jsonb(n) - 'id'))
                   || jsonb_build_object('recipients',
                                         jsonb_build_array(NULL, (SELECT count(*) FROM inserted))),
                   citelink_actor_id()
            FROM new_rows AS n
        )
        SELECT count(pg_notify('citelink_events', e.payload)) INTO sent
        FROM (
            SELECT concat_ws(' ', 'new', i.user_id, i.id, i.notification_id, i.position,
                             s.state, s.state, b.unseen, b.unread, b.total, b.archived) AS payload,
                   i.id AS ord
            FROM inserted AS i
            JOIN numbered AS b ON b.user_id = i.user_id
            CROSS JOIN LATERAL (SELECT CASE i.mode WHEN 'live' THEN 0 WHEN 'inbox' THEN 64
                                                   ELSE 192 END AS state) AS s
            WHERE (SELECT count(*) FROM inserted) <= citelink_events_per_item_limit()
            UNION ALL
            SELECT concat_ws(' ', 'fanout', notification_id, count(*)), min(id)
            FROM inserted
            WHERE (SELECT count(*) FROM inserted) > citelink_events_per_item_limit()
            GROUP BY notification_id
            ORDER BY ord OFFSET 0
        ) AS e;
        PERFORM set_config('citelink.fan_out', '', true);
        RETURN NULL;
    END IF;
    SELECT array_agg(id ORDER BY id) FILTER (WHERE group_key IS NULL),
           array_agg(id ORDER BY id) FILTER (WHERE group_key IS NOT NULL)
    INTO plain, grouped
    FROM new_rows WHERE delivered_at IS NOT NULL;
    IF grouped IS NOT NULL THEN
        PERFORM citelink_group_notifications(grouped, plain);
    ELSIF plain IS NOT NULL THEN
        PERFORM citelink_fan_out(plain);
    END IF;
    INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
    SELECT 'notification', n.id, 'create',
           (SELECT jsonb_object_agg(key, jsonb_build_array(NULL, value))
            FROM jsonb_each(to_jsonb(n) - 'id'))
           || jsonb_build_object('recipients', jsonb_build_array(NULL, coalesce(
               (SELECT recipients FROM notification_recipients WHERE notification_id = n.id),
               0))),
           citelink_actor_id()
    FROM new_rows AS n
    ORDER BY n.id;
    RETURN NULL;
END
$$;

-- A fan-out in one statement: for the notifications
-- `ids` (due, not fanned out yet), every recipient -- the subscribers of the
-- tag, with their mode (`live` whatever it is for a critical tag), and the
-- listed users who are not subscribed, live, those deleted since left out --
-- except the users in `skip` (grouping has updated theirs) gets an inbox row
-- numbered from their counter row (locked in user id order, "Per-user
-- order"); each notification counts its recipients, and each item is told in
-- an event (one `fanout` event per notification past the item limit).
CREATE FUNCTION citelink_fan_out(ids bigint[], skip bigint[] DEFAULT NULL) RETURNS void
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_nestloop = off
AS $$
DECLARE
    sent bigint;
BEGIN
    -- The rows are numbered, counted, audited and told here, not one by one
    -- by the trigger that does it for inbox rows inserted by plain SQL.
    PERFORM set_config('citelink.fan_out', 'on', true);
    WITH notes AS MATERIALIZED (
        SELECT n.id, n.tag_id, n.users, n.priority, n.group_key,
               coalesce((SELECT critical FROM tag WHERE id = n.tag_id), false) AS critical
        FROM unnest(ids) AS d (id)
        CROSS JOIN LATERAL (SELECT * FROM notification WHERE id = d.id OFFSET 0) AS n
    ), pairs AS MATERIALIZED (
        SELECT s.user_id, n.id AS notification_id,
               CASE WHEN n.critical THEN 'live' ELSE s.mode END AS mode, n.priority, n.group_key
        FROM notes AS n
        CROSS JOIN LATERAL (
            SELECT user_id, mode FROM subscription WHERE tag_id = n.tag_id OFFSET 0
        ) AS s
        WHERE skip IS NULL OR s.user_id <> ALL (skip)
        UNION ALL
        SELECT u.user_id, n.id, 'live', n.priority, n.group_key
        FROM notes AS n
        CROSS JOIN LATERAL (SELECT DISTINCT unnest(n.users) AS user_id) AS u
        WHERE (skip IS NULL OR u.user_id <> ALL (skip))
          AND NOT EXISTS (SELECT FROM subscription AS s
                          WHERE s.tag_id = n.tag_id AND s.user_id = u.user_id OFFSET 0)
          AND EXISTS (SELECT FROM users WHERE id = u.user_id OFFSET 0)
    ), numbered AS (
        INSERT INTO inbox_count AS c (user_id, unseen, unread, total, last_position)
        SELECT user_id, count(*) FILTER (WHERE mode <> 'muted'),
               count(*) FILTER (WHERE mode <> 'muted'), count(*), count(*)
        FROM pairs GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE
            SET unseen = c.unseen + excluded.unseen, unread = c.unread + excluded.unread,
                total = c.total + excluded.total,
                last_position = c.last_position + excluded.last_position
        RETURNING c.user_id, c.last_position, c.unseen, c.unread, c.total, c.archived
    ), inserted AS (
        INSERT INTO user_notification (user_id, notification_id, position, mode, priority,
                                       group_key)
        SELECT p.user_id, p.notification_id,
               b.last_position - count(*) OVER (PARTITION BY p.user_id)
                   + row_number() OVER (PARTITION BY p.user_id ORDER BY p.notification_id),
               p.mode, p.priority, p.group_key
        FROM pairs AS p JOIN numbered AS b ON b.user_id = p.user_id
        ORDER BY p.notification_id, p.user_id
        RETURNING id, user_id, notification_id, position, mode
    ), counted AS (
        INSERT INTO notification_recipients AS r (notification_id, recipients)
        SELECT notification_id, count(*) FROM inserted GROUP BY notification_id
        ON CONFLICT (notification_id) DO UPDATE SET recipients = r.recipients + excluded.recipients
    )
    SELECT count(pg_notify('citelink_events', e.payload)) INTO sent
    FROM (
        SELECT concat_ws(' ', 'new', i.user_id, i.id, i.notification_id, i.position, s.state,
                         s.state, b.unseen, b.unread, b.total, b.archived) AS payload, i.id AS ord
        FROM inserted AS i
        JOIN numbered AS b ON b.user_id = i.user_id
        CROSS JOIN LATERAL (SELECT CASE i.mode WHEN 'live' THEN 0 WHEN 'inbox' THEN 64
                                               ELSE 192 END AS state) AS s
        WHERE (SELECT count(*) FROM inserted) <= citelink_events_per_item_limit()
        UNION ALL
        SELECT concat_ws(' ', 'fanout', notification_id, count(*)), min(id)
        FROM inserted
        WHERE (SELECT count(*) FROM inserted) > citelink_events_per_item_limit()
        GROUP BY notification_id
        ORDER BY ord OFFSET 0
    ) AS e;
    PERFORM set_config('citelink.fan_out', '', true);
END
$$;

-- The notifications `grouped` (due, with a group key) and `plain` (due,
-- without), fanned out in one transaction: every recipient's counter row is
-- locked first, all at once in user id order (the lock order; the fan-outs
-- below take them again, held already), then the plain ones in one
-- statement, then the grouped ones one by one.
CREATE FUNCTION citelink_group_notifications(grouped bigint[], plain bigint[]) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    note notification;
BEGIN
    PERFORM citelink_lock_inboxes(ARRAY(
        SELECT s.user_id
        FROM notification AS n JOIN subscription AS s ON s.tag_id = n.tag_id
        WHERE n.id = ANY (grouped || coalesce(plain, '{}'))
        UNION
        SELECT unnest(n.users) FROM notification AS n
        WHERE n.id = ANY (grouped || coalesce(plain, '{}'))));
    IF plain IS NOT NULL THEN
        PERFORM citelink_fan_out(plain);
    END IF;
    FOR note IN SELECT * FROM notification WHERE id = ANY (grouped) ORDER BY id LOOP
        PERFORM citelink_group_notification(note);
    END LOOP;
END
$$;

-- Grouping: a recipient who has an unread item of the notification's
-- group_key, from within its group_window, has that item updated in place
-- (the message it shows replaced, `count` one more, the notification listed,
-- unseen again) and moved to the top: a new position in their order, one
-- `update` event. The others get a new item (citelink_fan_out). Their counter
-- rows are locked already (citelink_group_notifications), so the items of the
-- group are looked for in a later snapshot, which sees every earlier writer
-- of these users committed: concurrent publishes of one key group together.
-- An item another transaction holds (only a writer outside the lock order
-- can) is skipped: that user gets a new item rather than a wait.
-- The item keeps its newest notification ids (citelink_group_ids_kept);
-- group_member lists all of them, for every item that collected more than one.
CREATE FUNCTION citelink_group_notification(note notification) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    found record;
BEGIN
    SELECT array_agg(g.id) AS targets, array_agg(g.user_id) AS owners INTO found
    FROM (SELECT s.user_id FROM subscription AS s WHERE s.tag_id = note.tag_id
          UNION
          SELECT unnest(note.users)) AS r
    CROSS JOIN LATERAL (
        SELECT i.id, i.user_id, i.notification_id, i.count FROM user_notification AS i
        WHERE i.user_id = r.user_id AND i.group_key = note.group_key
          AND NOT i.is_read AND NOT i.is_deleted AND NOT i.is_archived AND NOT i.is_expired
          AND (SELECT created_at FROM notification WHERE id = i.notification_id)
              > now() - note.group_window
        ORDER BY i.position DESC LIMIT 1
        FOR UPDATE SKIP LOCKED
    ) AS g;

    IF found.targets IS NOT NULL THEN
        -- An item grouped for the first time: its first notification joins
        -- the list too.
        INSERT INTO group_member (item_id, notification_id)
        SELECT id, notification_id FROM user_notification
        WHERE id = ANY (found.targets) AND count = 1
        UNION ALL
        SELECT unnest(found.targets), note.id;
        PERFORM set_config('citelink.grouping', 'on', true);
        WITH moved AS (
            UPDATE inbox_count AS c SET last_position = c.last_position + 1
            WHERE c.user_id = ANY (found.owners)
            RETURNING c.user_id, c.last_position
        )
        UPDATE user_notification AS i
        SET notification_id = note.id, position = m.last_position, count = i.count + 1,
            notification_ids = (coalesce(i.notification_ids, ARRAY[i.notification_id]) || note.id)
                [greatest(1, coalesce(cardinality(i.notification_ids), 1) + 2
                             - citelink_group_ids_kept()):],
            is_seen = false, priority = note.priority
        FROM moved AS m
        WHERE i.id = ANY (found.targets) AND i.user_id = m.user_id;
        PERFORM set_config('citelink.grouping', '', true);
        INSERT INTO notification_recipients AS r (notification_id, recipients)
        VALUES (note.id, cardinality(found.targets))
        ON CONFLICT (notification_id) DO UPDATE SET recipients = r.recipients + excluded.recipients;
    END IF;
    PERFORM citelink_fan_out(ARRAY[note.id], found.owners);
END
$$;

-- Schedules: the app's scheduler (citelink/db/scheduler.py) finds what is due
-- and calls these, a batch per transaction, halving a batch that fails until
-- the one notification that fails is alone: that one is marked failed (its
-- error kept, audited, tried again later with backoff) and the others go on.
-- Each claims its notifications with FOR UPDATE SKIP LOCKED and settles them
-- in the same transaction, so with any number of app processes every
-- notification is fanned out, and every expiry done, exactly once.

-- When a notification is due: at send_at, or at its next try after a failure.
CREATE FUNCTION citelink_due_at(note notification) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(note.send_at, note.retry_at)
$$;

-- Fans out those of the notifications `ids` that are due and not delivered,
-- skipping any another transaction holds, and marks them delivered; how many.
CREATE FUNCTION citelink_deliver(ids bigint[]) RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    plain bigint[];
    grouped bigint[];
BEGIN
    SELECT array_agg(id ORDER BY id) FILTER (WHERE group_key IS NULL),
           array_agg(id ORDER BY id) FILTER (WHERE group_key IS NOT NULL)
    INTO plain, grouped
    FROM (SELECT id, group_key FROM notification AS n
          WHERE id = ANY (ids) AND delivered_at IS NULL AND citelink_due_at(n) <= now()
          ORDER BY id FOR UPDATE SKIP LOCKED) AS due;
    IF grouped IS NOT NULL THEN
        PERFORM citelink_group_notifications(grouped, plain);
    ELSIF plain IS NOT NULL THEN
        PERFORM citelink_fan_out(plain);
    END IF;
    UPDATE notification SET delivered_at = now(), delivery_error = NULL, retry_at = NULL
    WHERE id = ANY (coalesce(plain, '{}') || coalesce(grouped, '{}'));
    RETURN coalesce(cardinality(plain), 0) + coalesce(cardinality(grouped), 0);
END
$$;

-- A notification whose delivery failed with `error`: kept undelivered, the
-- error and attempt recorded, and tried again after an exponential backoff
-- with jitter (5 s, 10 s, 20 s, ... at most an hour), 10 attempts in all.
CREATE FUNCTION citelink_delivery_failed(note_id bigint, error text) RETURNS void
LANGUAGE sql AS $$
    UPDATE notification
    SET delivery_attempts = delivery_attempts + 1, delivery_error = left(error, 1000),
        retry_at = CASE WHEN delivery_attempts + 1 >= 10 THEN 'infinity'
                        ELSE now() + least(interval '1 hour',
                                           interval '5 seconds' * 2 ^ delivery_attempts)
                                     * (0.75 + random() / 2) END
    WHERE id = note_id AND delivered_at IS NULL
      AND greatest(send_at, retry_at) <= now()  -- once per failed try, however many saw it
$$;

-- Marks the items of those of the notifications `ids` whose expires_at has
-- passed expired (counted, audited and told like any other change): their
-- owners' counter rows first, then the items, skipping any another
-- transaction holds (the next round gets them). A notification is settled
-- (expired_at) once all its items are marked. Returns how many were.
CREATE FUNCTION citelink_expire(ids bigint[]) RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    due bigint[];
    settled integer;
BEGIN
    due := ARRAY(SELECT id FROM notification
                 WHERE id = ANY (ids) AND expired_at IS NULL AND expires_at <= now()
                 ORDER BY id FOR UPDATE SKIP LOCKED);
    PERFORM FROM inbox_count
    WHERE user_id IN (SELECT user_id FROM user_notification
                      WHERE notification_id = ANY (due) AND NOT is_expired)
    ORDER BY user_id FOR NO KEY UPDATE;
    UPDATE user_notification SET is_expired = true
    WHERE id IN (SELECT id FROM user_notification
                 WHERE notification_id = ANY (due) AND NOT is_expired
                 FOR NO KEY UPDATE SKIP LOCKED);
    WITH done AS (
        UPDATE notification AS n SET expired_at = now()
        WHERE n.id = ANY (due)
          AND NOT EXISTS (SELECT FROM user_notification AS i
                          WHERE i.notification_id = n.id AND NOT i.is_expired)
        RETURNING 1
    )
    SELECT count(*) INTO settled FROM done;
    RETURN settled;
END
$$;

-- Publishing as the API does it, in one round trip: the publisher is the
-- audit actor, the notification is inserted like any other (the triggers
-- fan it out, or leave it to the scheduler), and it comes back with its
-- number of recipients (`(p.note).*, p.recipients`). Called outside an explicit transaction, it commits as
-- soon as it returns, so the recipients' counter rows are locked for no
-- client round trip.
CREATE FUNCTION citelink_publish(tag bigint, users bigint[], body text, extra jsonb,
                                 priority text, group_key text, group_window interval,
                                 send_at timestamptz, expires_at timestamptz, actor bigint,
                                 OUT note notification, OUT recipients bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('citelink.actor_id', coalesce(actor::text, ''), true);
    INSERT INTO notification AS n (tag_id, users, message, data, priority, group_key,
                                   group_window, send_at, expires_at, created_by)
    VALUES (tag, users, body, extra, coalesce(priority, 'normal'), group_key,
            coalesce(group_window, interval '10 minutes'), send_at, expires_at, actor)
    RETURNING n.* INTO note;
    -- The row as inserted; the fan-out has counted its recipients since.
    recipients := coalesce((SELECT r.recipients FROM notification_recipients AS r
                            WHERE r.notification_id = note.id), 0);
END
$$;

-- Many notifications of one publisher in one statement, each as
-- citelink_publish would publish it alone (no listed users, no group key):
-- the API's group commit (citelink.db.group_commit). They come back in the
-- order given: their ids are drawn in that order.
CREATE FUNCTION citelink_publish_many(tags bigint[], bodies text[], extras jsonb[],
                                      priorities text[], send_ats timestamptz[],
                                      expires_ats timestamptz[], actor bigint)
RETURNS TABLE (note notification, recipients bigint)
LANGUAGE plpgsql AS $$
DECLARE
    made bigint[];
BEGIN
    PERFORM set_config('citelink.actor_id', coalesce(actor::text, ''), true);
    WITH inserted AS (
        INSERT INTO notification AS n (tag_id, message, data, priority, send_at, expires_at,
                                       created_by)
        SELECT g.tag, g.body, g.extra, coalesce(g.priority, 'normal'), g.send_at,
               g.expires_at, actor
        FROM unnest(tags, bodies, extras, priorities, send_ats, expires_ats)
             WITH ORDINALITY AS g(tag, body, extra, priority, send_at, expires_at, k)
        ORDER BY g.k
        RETURNING n.id
    )
    SELECT array_agg(id ORDER BY id) INTO made FROM inserted;
    -- The fan-out ran at the end of that statement and counted the recipients.
    RETURN QUERY
    SELECT n, coalesce(r.recipients, 0)
    FROM notification AS n
    LEFT JOIN notification_recipients AS r ON r.notification_id = n.id
    WHERE n.id = ANY (made)
    ORDER BY n.id;
END
$$;

-- An inbox row inserted by plain SQL (not by the fan-out, which does all of
-- this set-based): its states imply one another as on an update; its
-- notification counts it as a recipient, which also fails the insert when
-- there is no such notification ("Inbox keys"); its owner's counter row is
-- locked (the lock order: before the row exists), counts it and gives it the
-- next position (whatever position the statement gave is replaced); it is
-- audited and told; one the user has already is refused. Row by row: a
-- statement of rows for several users or notifications locks them in its own
-- row order, so list them in notification, then user id order.
CREATE FUNCTION citelink_add_direct_item() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    added record;
    now_counts record;
BEGIN
    NEW.is_read := NEW.is_read OR NEW.interacted_at IS NOT NULL;
    NEW.is_seen := NEW.is_seen OR NEW.is_read;
    -- The notification first, its recipients' counter rows next (the lock
    -- order). Updated, not only locked: its deletion then waits until commit,
    -- and under REPEATABLE READ or SERIALIZABLE fails to serialize instead of
    -- missing this row ("Inbox keys").
    UPDATE notification SET created_at = created_at WHERE id = NEW.notification_id;
    IF NOT FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'inbox row names no such notification',
            DETAIL = format('Key (notification_id)=(%s) is not present in table "notification".',
                            NEW.notification_id);
    END IF;
    -- Counted before PostgreSQL checks the unique key (BEFORE triggers come
    -- first, and ON CONFLICT DO NOTHING would skip the row after they ran): so
    -- a row the user has already is refused here, under their counter lock.
    PERFORM FROM inbox_count WHERE user_id = NEW.user_id FOR NO KEY UPDATE;
    IF EXISTS (SELECT FROM user_notification
               WHERE notification_id = NEW.notification_id AND user_id = NEW.user_id) THEN
        RAISE unique_violation USING
            MESSAGE = format('user %s has an inbox row of notification %s already',
                             NEW.user_id, NEW.notification_id),
            CONSTRAINT = 'user_notification_notification_id_user_id_key',
            HINT = 'leave it out of the insert (WHERE NOT EXISTS ...): ON CONFLICT cannot skip it';
    END IF;
    added := citelink_item_counts(NEW);
    INSERT INTO inbox_count AS c (user_id, unseen, unread, total, archived, last_position)
    VALUES (NEW.user_id, added.unseen, added.unread, added.total, added.archived, 1)
    ON CONFLICT (user_id) DO UPDATE
        SET unseen = c.unseen + excluded.unseen, unread = c.unread + excluded.unread,
            total = c.total + excluded.total, archived = c.archived + excluded.archived,
            last_position = c.last_position + 1
    RETURNING c.last_position, c.unseen, c.unread, c.total, c.archived INTO now_counts;
    NEW.position := now_counts.last_position;
    INSERT INTO notification_recipients AS r (notification_id, recipients)
    VALUES (NEW.notification_id, 1)
    ON CONFLICT (notification_id) DO UPDATE SET recipients = r.recipients + 1;
    INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
    VALUES ('user_notification', NEW.id, 'create', citelink_row_diff(NULL, to_jsonb(NEW)),
            citelink_actor_id());
    IF NOT NEW.is_deleted THEN
        PERFORM pg_notify('citelink_events',
                          concat_ws(' ', 'new', NEW.user_id, NEW.id, NEW.notification_id,
                                    NEW.position, citelink_item_state(NEW),
                                    citelink_item_state(NEW), now_counts.unseen,
                                    now_counts.unread, now_counts.total, now_counts.archived));
    END IF;
    RETURN NEW;
END
$$;

-- Changed inbox rows, in one statement: counters adjusted (the new rows'
-- counts minus the old rows'), one audit row per changed item -- or, past
-- the item limit, one per user and kind of change, with how many items and
-- the first and last id (a bulk change audited in bounded space: resource
-- `inbox`, object the user) -- and one event per item whose state changed or
-- that moved (or one `bulk` event per user). The grouped list of ids is left
-- out of the audit: `notification_id` and `count` say what changed.
CREATE FUNCTION citelink_item_changes() RETURNS trigger
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_nestloop = off
AS $$
DECLARE
    many boolean := (SELECT count(*) > citelink_events_per_item_limit() FROM new_rows);
    sent bigint;
BEGIN
    WITH pairs AS MATERIALIZED (
        SELECT r.id, r.user_id,
               max(r.notification_id) FILTER (WHERE r.sign = 1) AS notification_id,
               max(r.position) FILTER (WHERE r.sign = 1) AS position,
               count(DISTINCT r.position) > 1 AS moved,
               min(r.state) FILTER (WHERE r.sign = -1) AS old_state,
               min(r.state) FILTER (WHERE r.sign = 1) AS new_state,
               sum(r.sign * (r.k).unseen) AS unseen, sum(r.sign * (r.k).unread) AS unread,
               sum(r.sign * (r.k).total) AS total, sum(r.sign * (r.k).archived) AS archived,
               citelink_row_diff((array_agg(r.doc) FILTER (WHERE r.sign = -1))[1],
                                 (array_agg(r.doc) FILTER (WHERE r.sign = 1))[1]) AS changes
        FROM (SELECT -1 AS sign, o.id, o.user_id, o.notification_id, o.position,
                     citelink_item_state(o) AS state, citelink_item_counts(o) AS k,
                     to_jsonb(o) - 'notification_ids' AS doc
              FROM old_rows AS o
              UNION ALL
              SELECT 1, n.id, n.user_id, n.notification_id, n.position,
                     citelink_item_state(n), citelink_item_counts(n),
                     to_jsonb(n) - 'notification_ids'
              FROM new_rows AS n) AS r
        GROUP BY r.id, r.user_id
    ), counted AS (
        INSERT INTO inbox_count AS c (user_id, unseen, unread, total, archived)
        SELECT user_id, sum(unseen), sum(unread), sum(total), sum(archived)
        FROM pairs GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE
            SET unseen = c.unseen + excluded.unseen, unread = c.unread + excluded.unread,
                total = c.total + excluded.total, archived = c.archived + excluded.archived
        RETURNING c.user_id, c.unseen, c.unread, c.total, c.archived
    ), audited AS (
        INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
        SELECT resource, object_id, 'update', changes, citelink_actor_id()
        FROM (SELECT 'user_notification' AS resource, id AS object_id, changes, id AS ord
              FROM pairs WHERE NOT many AND changes <> '{}'
              UNION ALL
              SELECT 'inbox', user_id,
                     changes || jsonb_build_object('items', count(*),
                                                   'item_ids', jsonb_build_array(min(id), max(id))),
                     min(id)
              FROM pairs WHERE many AND changes <> '{}'
              GROUP BY user_id, changes) AS a
        ORDER BY ord
    )
    SELECT count(pg_notify('citelink_events', e.payload)) INTO sent
    FROM (
        SELECT concat_ws(' ', CASE WHEN p.moved THEN 'update' ELSE 'change' END, p.user_id, p.id,
                         p.notification_id, p.position, p.old_state, p.new_state,
                         c.unseen, c.unread, c.total, c.archived) AS payload, p.id AS ord
        FROM pairs AS p JOIN counted AS c ON c.user_id = p.user_id
        WHERE NOT many AND (p.moved OR p.old_state <> p.new_state)
        UNION ALL
        SELECT concat_ws(' ', 'bulk', c.user_id, x.items, c.unseen, c.unread, c.total,
                         c.archived), c.user_id
        FROM counted AS c
        JOIN (SELECT user_id, count(*) AS items FROM pairs GROUP BY user_id) AS x
            ON x.user_id = c.user_id
        WHERE many
        ORDER BY ord OFFSET 0
    ) AS e;
    RETURN NULL;
END
$$;

-- Inbox rows removed outright (plain SQL or a cascade): the counters fixed
-- (an UPDATE, not an upsert: when a user is deleted, the cascade has removed
-- their counter row already), the owners told their items went away, the rows
-- audited (past the item limit, one row per user: how many, first and last
-- id), and the rows' group lists dropped.
CREATE FUNCTION citelink_items_removed() RETURNS trigger
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_nestloop = off
AS $$
DECLARE
    many boolean := (SELECT count(*) > citelink_events_per_item_limit() FROM old_rows);
    sent bigint;
BEGIN
    WITH counted AS (
        UPDATE inbox_count AS c
        SET unseen = c.unseen - d.unseen, unread = c.unread - d.unread,
            total = c.total - d.total, archived = c.archived - d.archived
        FROM (SELECT user_id, sum((k).unseen) AS unseen, sum((k).unread) AS unread,
                     sum((k).total) AS total, sum((k).archived) AS archived
              FROM (SELECT user_id, citelink_item_counts(r.*) AS k FROM old_rows AS r) AS one
              GROUP BY user_id ORDER BY user_id) AS d
        WHERE c.user_id = d.user_id
        RETURNING c.user_id, c.unseen, c.unread, c.total, c.archived
    ), audited AS (
        INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
        SELECT resource, object_id, 'delete', changes, citelink_actor_id()
        FROM (SELECT 'user_notification' AS resource, r.id AS object_id,
                     citelink_row_diff(to_jsonb(r), NULL) AS changes, r.id AS ord
              FROM old_rows AS r WHERE NOT many
              UNION ALL
              SELECT 'inbox', r.user_id,
                     jsonb_build_object('items', count(*),
                                        'item_ids', jsonb_build_array(min(r.id), max(r.id))),
                     min(r.id)
              FROM old_rows AS r WHERE many
              GROUP BY r.user_id) AS a
        ORDER BY ord
    )
    SELECT count(pg_notify('citelink_events', e.payload)) INTO sent
    FROM (
        SELECT concat_ws(' ', 'remove', r.user_id, r.id, r.notification_id, r.position,
                         citelink_item_state(r), 0, coalesce(c.unseen, 0), coalesce(c.unread, 0),
                         coalesce(c.total, 0), coalesce(c.archived, 0)) AS payload, r.id AS ord
        FROM old_rows AS r LEFT JOIN counted AS c ON c.user_id = r.user_id
        WHERE NOT r.is_deleted
        ORDER BY ord OFFSET 0
    ) AS e;
    IF EXISTS (SELECT FROM old_rows WHERE group_key IS NOT NULL) THEN
        DELETE FROM group_member
        WHERE item_id IN (SELECT id FROM old_rows WHERE group_key IS NOT NULL);
    END IF;
    RETURN NULL;
END
$$;

-- Deleting users or notifications deletes their inbox rows (what ON DELETE
-- CASCADE would do), through the indexes: a user's rows are in the inbox, the
-- archived and the deleted-items indexes, a notification's in the unique
-- index. A user's counter row went first (a cascade of the users row); a
-- notification's recipients' counter rows are locked first here.
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
        PERFORM FROM inbox_count
        WHERE user_id IN (SELECT user_id FROM user_notification WHERE notification_id = ANY (ids))
        ORDER BY user_id FOR NO KEY UPDATE;
        DELETE FROM user_notification WHERE notification_id = ANY (ids);
        DELETE FROM notification_recipients WHERE notification_id = ANY (ids);
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE of users or notifications (no row triggers fire) empties the inbox.
CREATE FUNCTION citelink_empty_inbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE user_notification, group_member, notification_recipients;
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

-- A new password, a deactivation or a sign-out everywhere revokes every
-- token the user holds. citelink's tokens carry the generation they were
-- issued in: a new password or a deactivation bumps it here; a sign-out
-- everywhere has bumped it already (the app's UPDATE, or plain SQL).
-- Platform tokens carry their issue time (`iat`) only: the time is stamped,
-- and one issued at or before it is refused (citelink.identity.callers).
CREATE FUNCTION citelink_bump_token_generation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.token_generation = OLD.token_generation THEN
        NEW.token_generation := OLD.token_generation + 1;
    END IF;
    NEW.tokens_valid_after := clock_timestamp();
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

-- A notification with neither send_at nor listed users needs no check: due
-- at once (delivered_at's default), no one to look for.
CREATE TRIGGER citelink_check
    BEFORE INSERT ON notification
    FOR EACH ROW
    WHEN (NEW.send_at IS NOT NULL OR NEW.users IS NOT NULL OR NEW.delivered_at IS NULL)
    EXECUTE FUNCTION citelink_check_notification();

-- Listed users changed by plain SQL before delivery are checked as at insert.
CREATE TRIGGER citelink_check_listed_users
    BEFORE UPDATE OF users ON notification
    FOR EACH ROW WHEN (NEW.users IS DISTINCT FROM OLD.users AND NEW.users IS NOT NULL)
    EXECUTE FUNCTION citelink_check_notification();

CREATE TRIGGER citelink_fan_out
    AFTER INSERT ON notification
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_fan_out_notification();

-- Not for a fan-out's own inserts (citelink_fan_out sets citelink.fan_out).
-- Spelt out, not a SQL function: PostgreSQL prepares a trigger's WHEN once per
-- statement, and inlining a function there parses its body every time.
CREATE TRIGGER citelink_add_direct_items
    BEFORE INSERT ON user_notification
    FOR EACH ROW WHEN (current_setting('citelink.fan_out', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION citelink_add_direct_item();

CREATE TRIGGER citelink_keep_keys
    BEFORE UPDATE OF user_id, notification_id, position ON user_notification
    FOR EACH ROW
    WHEN (NEW.user_id <> OLD.user_id OR NEW.notification_id <> OLD.notification_id
          OR NEW.position <> OLD.position)
    EXECUTE FUNCTION citelink_keep_inbox_keys();

CREATE TRIGGER citelink_stamp_state
    BEFORE UPDATE ON user_notification
    FOR EACH ROW
    WHEN ((NEW.is_seen, NEW.is_read, NEW.is_archived, NEW.interacted_at, NEW.is_deleted)
          IS DISTINCT FROM (OLD.is_seen, OLD.is_read, OLD.is_archived, OLD.interacted_at,
                            OLD.is_deleted))
    EXECUTE FUNCTION citelink_stamp_item_state();

CREATE TRIGGER citelink_item_updates
    AFTER UPDATE ON user_notification
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_item_changes();

CREATE TRIGGER citelink_item_deletes
    AFTER DELETE ON user_notification
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_items_removed();

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

CREATE TRIGGER citelink_bump_token_generation
    BEFORE UPDATE OF password_hash, is_active, token_generation ON users
    FOR EACH ROW
    WHEN (NEW.password_hash IS DISTINCT FROM OLD.password_hash OR (OLD.is_active AND NOT NEW.is_active)
          OR NEW.token_generation <> OLD.token_generation)
    EXECUTE FUNCTION citelink_bump_token_generation();

CREATE TRIGGER citelink_revoke_user_tokens
    AFTER UPDATE ON users
    FOR EACH ROW WHEN (NEW.token_generation <> OLD.token_generation)
    EXECUTE FUNCTION citelink_publish_user_revoked();

CREATE TRIGGER citelink_revoke_deleted_user
    AFTER DELETE ON users
    FOR EACH ROW WHEN (OLD.is_active)
    EXECUTE FUNCTION citelink_publish_user_revoked();

-- Audit. Inbox rows are audited by their own triggers above (a fan-out's in
-- its notification's create row); a notification's create row is written by
-- its fan-out trigger, its updates one by one, except the ones the triggers
-- make themselves (its recipient count, at trigger depth 1).
CREATE TRIGGER citelink_audit_notification_updates
    AFTER UPDATE ON notification
    FOR EACH ROW WHEN (pg_trigger_depth() = 0)
    EXECUTE FUNCTION citelink_audit_row_change();

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

-- Users and API keys: who made them (a user, or a key: audit_log.api_key_id)
-- and every change; their secrets only as a digest that says they changed.
CREATE TRIGGER citelink_audit_user_inserts
    AFTER INSERT ON users
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes('password_hash');

CREATE TRIGGER citelink_audit_user_updates
    AFTER UPDATE ON users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes('password_hash');

CREATE TRIGGER citelink_audit_user_deletes
    AFTER DELETE ON users
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes('password_hash');

CREATE TRIGGER citelink_audit_api_key_inserts
    AFTER INSERT ON api_key
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes('hash');

CREATE TRIGGER citelink_audit_api_key_updates
    AFTER UPDATE ON api_key
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION citelink_audit_changes('hash');
