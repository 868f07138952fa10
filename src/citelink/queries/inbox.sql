-- A user's inbox: shared by the REST routes and the WebSocket relay.
-- Every statement is scoped by user_id ($1): another user's item is never
-- found, changed or counted. The three page queries keep the status literal
-- so each matches its partial index.

-- name: inbox_page_all
SELECT i.id, i.notification_id, n.tag_id AS tag, t.name AS tag_name, n.message, n.data,
       n.created_at AS timestamp, i.is_read, i.read_at
FROM user_notification AS i
JOIN notification AS n ON n.id = i.notification_id
JOIN tag AS t ON t.id = n.tag_id
WHERE i.user_id = $1 AND NOT i.is_deleted AND i.id < $2
  AND ($3::bigint IS NULL OR n.tag_id = $3)
ORDER BY i.id DESC
LIMIT $4;

-- name: inbox_page_unread
SELECT i.id, i.notification_id, n.tag_id AS tag, t.name AS tag_name, n.message, n.data,
       n.created_at AS timestamp, i.is_read, i.read_at
FROM user_notification AS i
JOIN notification AS n ON n.id = i.notification_id
JOIN tag AS t ON t.id = n.tag_id
WHERE i.user_id = $1 AND NOT i.is_deleted AND NOT i.is_read AND i.id < $2
  AND ($3::bigint IS NULL OR n.tag_id = $3)
ORDER BY i.id DESC
LIMIT $4;

-- name: inbox_page_read
SELECT i.id, i.notification_id, n.tag_id AS tag, t.name AS tag_name, n.message, n.data,
       n.created_at AS timestamp, i.is_read, i.read_at
FROM user_notification AS i
JOIN notification AS n ON n.id = i.notification_id
JOIN tag AS t ON t.id = n.tag_id
WHERE i.user_id = $1 AND NOT i.is_deleted AND i.is_read AND i.id < $2
  AND ($3::bigint IS NULL OR n.tag_id = $3)
ORDER BY i.id DESC
LIMIT $4;

-- name: inbox_page_offset
SELECT i.id, i.notification_id, n.tag_id AS tag, t.name AS tag_name, n.message, n.data,
       n.created_at AS timestamp, i.is_read, i.read_at
FROM user_notification AS i
JOIN notification AS n ON n.id = i.notification_id
JOIN tag AS t ON t.id = n.tag_id
WHERE i.user_id = $1 AND NOT i.is_deleted
ORDER BY i.id DESC
OFFSET $2 LIMIT $3;

-- name: inbox_after
SELECT i.id, i.notification_id, n.tag_id AS tag, t.name AS tag_name, n.message, n.data,
       n.created_at AS timestamp, i.is_read, i.read_at
FROM user_notification AS i
JOIN notification AS n ON n.id = i.notification_id
JOIN tag AS t ON t.id = n.tag_id
WHERE i.user_id = $1 AND NOT i.is_deleted AND i.id > $2
ORDER BY i.id
LIMIT $3;

-- name: inbox_item
SELECT i.id, i.notification_id, n.tag_id AS tag, t.name AS tag_name, n.message, n.data,
       n.created_at AS timestamp, i.is_read, i.read_at
FROM user_notification AS i
JOIN notification AS n ON n.id = i.notification_id
JOIN tag AS t ON t.id = n.tag_id
WHERE i.user_id = $1 AND i.id = $2 AND NOT i.is_deleted;

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
