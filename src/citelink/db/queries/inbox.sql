-- A user's inbox: shared by the REST routes and the WebSocket relay.
-- Every statement is scoped by user_id ($1): another user's item is never
-- found, changed or counted. Items are ordered by their per-user position
-- (commit order, sql/schema.sql); cursors from clients are item ids, placed
-- in that order by citelink_position_before / _after (sql/triggers.sql).
--
-- /*status*/ stands for one status's condition (citelink.db.inbox_store.STATUS): each
-- status is its own statement, so each matches its partial index. The other
-- filters (tags, data containment, times) are bound parameters, NULL for none.
-- Expired items are left out everywhere: `expired` is evaluated on read (the
-- inbox_item view), so it holds before the scheduler marks them.

-- name: inbox_page
SELECT id, notification_id, tag, tag_name, message, data, timestamp, position, is_seen, seen_at,
       is_read, read_at, is_archived, archived_at, interacted_at, action, priority, group_key,
       count, notification_ids, expires_at
FROM inbox_item
-- $8: leave out the pinned items (listed apart, inbox_pinned).
WHERE user_id = $1 AND NOT is_deleted AND /*status*/ AND NOT expired
  AND position < coalesce(citelink_position_before($1, $2), 9223372036854775807)
  AND ($3::bigint[] IS NULL OR tag = ANY($3))
  AND ($4::jsonb IS NULL OR data @> $4)
  AND ($5::timestamptz IS NULL OR timestamp >= $5)
  AND ($6::timestamptz IS NULL OR timestamp < $6)
  AND NOT ($8 AND priority = 'high' AND NOT is_read)
  -- $9: the bottom of a filtered listing's window (inbox_window), NULL for none.
  AND ($9::bigint IS NULL OR position >= $9)
ORDER BY position DESC
LIMIT $7;

-- name: inbox_window
-- The last of the $3 newest items of the status's list below item $2 (the
-- cursor): the bottom of a filtered page's window, so that a filter that
-- matches little never walks the whole inbox (from the index alone).
SELECT id, position FROM user_notification
WHERE user_id = $1 AND NOT is_deleted AND /*status*/
  AND position < coalesce(citelink_position_before($1, $2), 9223372036854775807)
ORDER BY position DESC
OFFSET $3 - 1
LIMIT 1;

-- name: inbox_pinned
-- High-priority unread items of the default list, newest first: pinned above
-- the rest (through their own small index).
SELECT id, notification_id, tag, tag_name, message, data, timestamp, position, is_seen, seen_at,
       is_read, read_at, is_archived, archived_at, interacted_at, action, priority, group_key,
       count, notification_ids, expires_at
FROM inbox_item
WHERE user_id = $1 AND priority = 'high' AND NOT is_read AND NOT is_deleted AND NOT is_archived
  AND NOT expired
  AND ($2::bigint[] IS NULL OR tag = ANY($2))
  AND ($3::jsonb IS NULL OR data @> $3)
  AND ($4::timestamptz IS NULL OR timestamp >= $4)
  AND ($5::timestamptz IS NULL OR timestamp < $5)
ORDER BY position DESC
LIMIT $6;

-- name: inbox_page_offset
-- The seed's numbered pages of the default list.
SELECT id, notification_id, tag, tag_name, message, data, timestamp, position, is_seen, seen_at,
       is_read, read_at, is_archived, archived_at, interacted_at, action, priority, group_key,
       count, notification_ids, expires_at
FROM inbox_item
WHERE user_id = $1 AND NOT is_deleted AND NOT is_archived AND NOT expired
ORDER BY position DESC
OFFSET $2 LIMIT $3;

-- name: inbox_after
-- The default list above a position (the relay's own cursor, not an item id).
SELECT id, notification_id, tag, tag_name, message, data, timestamp, position, is_seen, seen_at,
       is_read, read_at, is_archived, archived_at, interacted_at, action, priority, group_key,
       count, notification_ids, expires_at
FROM inbox_item
WHERE user_id = $1 AND NOT is_deleted AND NOT is_archived AND NOT expired AND position > $2
ORDER BY position
LIMIT $3;

-- name: inbox_position_after
-- The position a client's "after <item id>" stands for.
SELECT citelink_position_after($1, $2);

-- name: inbox_item
SELECT id, notification_id, tag, tag_name, message, data, timestamp, position, is_seen, seen_at,
       is_read, read_at, is_archived, archived_at, interacted_at, action, priority, group_key,
       count, notification_ids, expires_at
FROM inbox_item
WHERE user_id = $1 AND id = $2 AND NOT is_deleted AND NOT expired;

-- name: inbox_counts
SELECT coalesce(c.unseen, 0) AS unseen, coalesce(c.unread, 0) AS unread,
       coalesce(c.total, 0) AS total, coalesce(c.archived, 0) AS archived
FROM (SELECT 1) AS one LEFT JOIN inbox_count AS c ON c.user_id = $1;

-- name: inbox_counts_filtered
-- The counts of the items the filters select (counted, not O(1): the
-- counter row holds the unfiltered ones).
SELECT count(*) FILTER (WHERE NOT is_archived AND NOT is_seen) AS unseen,
       count(*) FILTER (WHERE NOT is_archived AND NOT is_read) AS unread,
       count(*) FILTER (WHERE NOT is_archived) AS total,
       count(*) FILTER (WHERE is_archived) AS archived
FROM inbox_item
WHERE user_id = $1 AND NOT is_deleted AND NOT expired
  AND ($2::bigint[] IS NULL OR tag = ANY($2))
  AND ($3::jsonb IS NULL OR data @> $3)
  AND ($4::timestamptz IS NULL OR timestamp >= $4)
  AND ($5::timestamptz IS NULL OR timestamp < $5);

-- Writes: one statement each, run on its own (no explicit transaction), with
-- the user as the audit actor. Each locks the user's counter row first
-- (citelink_lock_inbox, the lock order of sql/triggers.sql), in a one-time
-- filter evaluated before any item is read, then changes the items.

-- name: inbox_set_state
-- NULL leaves a flag as it is.
WITH inbox AS MATERIALIZED (
    SELECT citelink_lock_inbox($1) AS locked, set_config('citelink.actor_id', $1::text, true)
)
UPDATE user_notification
SET is_seen = coalesce($3, is_seen), is_read = coalesce($4, is_read),
    is_archived = coalesce($5, is_archived)
WHERE (SELECT locked FROM inbox) AND user_id = $1 AND id = $2 AND NOT is_deleted
RETURNING id;

-- name: inbox_interact
-- $3: the action clicked, NULL for the item's own link.
WITH inbox AS MATERIALIZED (
    SELECT citelink_lock_inbox($1) AS locked, set_config('citelink.actor_id', $1::text, true)
)
UPDATE user_notification SET interacted_at = now(), action = $3
WHERE (SELECT locked FROM inbox) AND user_id = $1 AND id = $2 AND NOT is_deleted
RETURNING id;

-- name: inbox_delete
WITH inbox AS MATERIALIZED (
    SELECT citelink_lock_inbox($1) AS locked, set_config('citelink.actor_id', $1::text, true)
)
UPDATE user_notification SET is_deleted = true
WHERE (SELECT locked FROM inbox) AND user_id = $1 AND id = $2 AND NOT is_deleted
RETURNING id;

-- name: inbox_bulk
-- One action on every item the filters select, in one statement: /*set*/
-- and /*changes*/ are the action's (citelink.db.inbox_store.ACTIONS); only items it
-- changes are updated (and so counted, audited and told).
WITH inbox AS MATERIALIZED (
    SELECT citelink_lock_inbox($1) AS locked, set_config('citelink.actor_id', $1::text, true)
), changed AS (
    UPDATE user_notification AS i SET /*set*/
    FROM notification AS n
    WHERE (SELECT locked FROM inbox)
      AND i.user_id = $1 AND NOT i.is_deleted AND NOT i.is_expired AND /*status*/
      AND /*changes*/ AND n.id = i.notification_id
      AND (n.expires_at IS NULL OR n.expires_at > now())
      AND ($2::bigint[] IS NULL OR n.tag_id = ANY($2))
      AND ($3::jsonb IS NULL OR n.data @> $3)
      AND ($4::timestamptz IS NULL OR n.created_at >= $4)
      AND ($5::timestamptz IS NULL OR n.created_at < $5)
    RETURNING 1
)
SELECT count(*) FROM changed;
