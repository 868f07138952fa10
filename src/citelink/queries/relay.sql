-- The WebSocket relay (citelink/hub.py): rendering pushes and back-filling
-- sockets. Inbox pages, resume and writes are in inbox.sql.

-- name: relay_socket_start
-- A socket opens: is its user still allowed in, with a token of this
-- generation, and what is the newest item it should not be pushed (the
-- watermark back-fills start from)? max(id) over the partial inbox index is
-- one index probe.
SELECT u.is_active, u.token_generation,
       coalesce((SELECT max(i.id) FROM user_notification AS i
                 WHERE i.user_id = u.id AND NOT i.is_deleted), 0) AS last_id
FROM users AS u
WHERE u.id = $1;

-- name: relay_notifications
-- What every recipient of a notification is shown, read once per notification
-- however many recipients have a socket here.
SELECT n.id AS notification_id, n.tag_id AS tag, t.name AS tag_name, n.message, n.data,
       n.created_at AS timestamp
FROM notification AS n
JOIN tag AS t ON t.id = n.tag_id
WHERE n.id = ANY($1::bigint[]);

-- name: relay_item_states
-- Read/deleted state of the items a user's sockets have shown, to tell them
-- what changed while the listener was down. A missing row was deleted outright.
SELECT id, is_read, is_deleted
FROM user_notification
WHERE user_id = $1 AND id = ANY($2::bigint[]);
