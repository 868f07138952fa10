-- Trigger plans that stay linear whatever the size of the statement that
-- made them (see "Plans" in sql/triggers.sql), no custom plan per fan-out,
-- and the inbox uniqueness index led by notification_id, which also serves
-- the cascade from notifications (the same as sql/schema.sql and triggers.sql).
-- depends: 0004_inbox_item_view

ALTER TABLE user_notification
    DROP CONSTRAINT user_notification_user_id_notification_id_key,
    ADD UNIQUE (notification_id, user_id);
DROP INDEX user_notification_notification_idx;

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
-- right plan for a tag of ten and for a tag of 100,000 alike.
CREATE OR REPLACE FUNCTION citelink_fan_out_notification() RETURNS trigger
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
BEGIN
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
            SELECT id, min(user_id) AS user_id, min(notification_id) AS notification_id,
                   min(user_id) = max(user_id) AS same_owner,
                   bool_or(is_read) FILTER (WHERE side = 'old') AS was_read,
                   bool_or(is_deleted) FILTER (WHERE side = 'old') AS was_deleted,
                   bool_or(is_read) FILTER (WHERE side = 'new') AS is_read,
                   bool_or(is_deleted) FILTER (WHERE side = 'new') AS is_deleted
            FROM (SELECT 'old' AS side, * FROM old_rows
                  UNION ALL
                  SELECT 'new', * FROM new_rows) AS sides
            GROUP BY id
        ) AS pairs
        WHERE same_owner AND (is_read, is_deleted) IS DISTINCT FROM (was_read, was_deleted)
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
