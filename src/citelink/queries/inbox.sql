-- A user's inbox: shared by the REST routes and the WebSocket relay.
-- Every statement is scoped by user_id ($1): another user's item is never
-- found, changed or counted. Items are ordered by their per-user position
-- (commit order, sql/schema.sql); cursors from clients are item ids, placed
-- in that order by citelink_position_before / _after (sql/triggers.sql). The
-- three page queries keep the status literal so each matches its partial index.

-- name: inbox_page_all
SELECT id, notification_id, tag, tag_name, message, data, timestamp, is_read, read_at, position
FROM inbox_item
WHERE user_id = $1 AND NOT is_deleted
  AND position < coalesce(citelink_position_before($1, $2), 9223372036854775807)
  AND ($3::bigint IS NULL OR tag = $3)
ORDER BY position DESC
LIMIT $4;

-- name: inbox_page_unread
SELECT id, notification_id, tag, tag_name, message, data, timestamp, is_read, read_at, position
FROM inbox_item
WHERE user_id = $1 AND NOT is_deleted AND NOT is_read
  AND position < coalesce(citelink_position_before($1, $2), 9223372036854775807)
  AND ($3::bigint IS NULL OR tag = $3)
ORDER BY position DESC
LIMIT $4;

-- name: inbox_page_read
SELECT id, notification_id, tag, tag_name, message, data, timestamp, is_read, read_at, position
FROM inbox_item
WHERE user_id = $1 AND NOT is_deleted AND is_read
  AND position < coalesce(citelink_position_before($1, $2), 9223372036854775807)
  AND ($3::bigint IS NULL OR tag = $3)
ORDER BY position DESC
LIMIT $4;

-- name: inbox_page_offset
SELECT id, notification_id, tag, tag_name, message, data, timestamp, is_read, read_at, position
FROM inbox_item
WHERE user_id = $1 AND NOT is_deleted
ORDER BY position DESC
OFFSET $2 LIMIT $3;

-- name: inbox_after
-- $2 is a position (the relay's own cursor), not an item id.
SELECT id, notification_id, tag, tag_name, message, data, timestamp, is_read, read_at, position
FROM inbox_item
WHERE user_id = $1 AND NOT is_deleted AND position > $2
ORDER BY position
LIMIT $3;

-- name: inbox_position_after
-- The position a client's "after <item id>" stands for.
SELECT citelink_position_after($1, $2);

-- name: inbox_item
SELECT id, notification_id, tag, tag_name, message, data, timestamp, is_read, read_at, position
FROM inbox_item
WHERE user_id = $1 AND id = $2 AND NOT is_deleted;

-- name: inbox_counts
SELECT coalesce(c.unread, 0) AS unread, coalesce(c.total, 0) AS total
FROM (SELECT 1) AS one LEFT JOIN inbox_count AS c ON c.user_id = $1;

-- name: inbox_set_read
UPDATE user_notification SET is_read = $3
WHERE user_id = $1 AND id = $2 AND NOT is_deleted
RETURNING id;

-- name: inbox_delete
UPDATE user_notification SET is_deleted = true
WHERE user_id = $1 AND id = $2 AND NOT is_deleted
RETURNING id;

-- name: inbox_read_all
WITH marked AS (
    UPDATE user_notification AS i SET is_read = true
    WHERE i.user_id = $1 AND NOT i.is_deleted AND NOT i.is_read
      AND ($2::bigint IS NULL
           OR i.notification_id IN (SELECT id FROM notification WHERE tag_id = $2))
    RETURNING 1
)
SELECT count(*) FROM marked;
