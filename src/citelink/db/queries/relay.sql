-- The WebSocket relay (citelink/relay/hub.py): rendering pushes and back-filling
-- sockets. Inbox pages, resume and writes are in inbox.sql.

-- name: relay_socket_start
-- A socket opens: is its user still allowed in, with a token of this
-- generation, and what is the position of their newest item (the watermark:
-- items above it are pushed, and back-fills start from it)?
SELECT u.is_active, u.token_generation, coalesce(c.last_position, 0) AS last_position
FROM users AS u
LEFT JOIN inbox_count AS c ON c.user_id = u.id
WHERE u.id = $1;

-- name: relay_notifications
-- What every recipient of a notification is shown, read once per notification
-- however many recipients have a socket here.
SELECT n.id AS notification_id, n.tag_id AS tag, t.name AS tag_name, n.message, n.data,
       n.created_at AS timestamp, n.priority, n.group_key, n.expires_at
FROM notification AS n
LEFT JOIN tag AS t ON t.id = n.tag_id
WHERE n.id = ANY($1::bigint[]);

-- name: relay_item_states
-- The state (citelink_item_state) of the items a user's sockets have shown,
-- to tell them what changed while the listener was down. A missing row was
-- removed outright.
SELECT i.id, citelink_item_state(i) AS state
FROM user_notification AS i
WHERE i.user_id = $1 AND i.id = ANY($2::bigint[]);

-- name: relay_items
-- Items as they are now (their ids come from the database's own events).
SELECT id, notification_id, tag, tag_name, message, data, timestamp, position, is_seen, seen_at,
       is_read, read_at, is_archived, archived_at, interacted_at, action, priority, group_key,
       count, notification_ids, expires_at
FROM inbox_item
WHERE id = ANY($1::bigint[]) AND NOT is_deleted;

-- name: relay_fan_out_items
-- The items of `fanout` notifications, for the relay to keep those of its
-- connected users (when they outnumber the recipients).
SELECT i.notification_id, i.user_id, i.id, i.position, c.unseen, c.unread, c.total, c.archived
FROM user_notification AS i
JOIN inbox_count AS c ON c.user_id = i.user_id
WHERE i.notification_id = ANY($1::bigint[]) AND NOT i.is_deleted
ORDER BY i.notification_id, i.user_id;

-- name: relay_fan_out_items_of_users
-- The same, for the given users only (when the recipients outnumber them):
-- one probe of the (notification_id, user_id) index per pair.
SELECT i.notification_id, i.user_id, i.id, i.position, c.unseen, c.unread, c.total, c.archived
FROM user_notification AS i
JOIN inbox_count AS c ON c.user_id = i.user_id
WHERE i.notification_id = ANY($1::bigint[]) AND i.user_id = ANY($2::bigint[])
  AND NOT i.is_deleted
ORDER BY i.notification_id, i.user_id;
