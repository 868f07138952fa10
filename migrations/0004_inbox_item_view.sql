-- One view for the inbox item shape, shared by every inbox query
-- (the same as sql/schema.sql).
-- depends: 0003_fan_out_custom_plan

-- An inbox item as REST and WebSocket show it (`id` is the inbox row id, `tag`
-- the tag id), with the owner and deleted flag to filter on. The planner
-- inlines it, so the partial inbox indexes still apply.
CREATE VIEW inbox_item AS
SELECT i.id, i.user_id, i.is_deleted, i.notification_id, n.tag_id AS tag,
       t.name AS tag_name, n.message, n.data, n.created_at AS timestamp,
       i.is_read, i.read_at
FROM user_notification AS i
JOIN notification AS n ON n.id = i.notification_id
JOIN tag AS t ON t.id = n.tag_id;
