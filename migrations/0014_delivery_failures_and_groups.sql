-- Scheduled deliveries fail one at a time (the error kept, tried again with
-- backoff); grouped items keep their last ten notification ids, group_member
-- all of them; the fan-out reads subscribers' modes from the index alone.
-- Functions and triggers: sql/triggers.sql (applied after migrating).
-- depends: 0013_functions_from_sql_files

ALTER TABLE notification
    ADD COLUMN delivery_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN delivery_error text,
    ADD COLUMN retry_at timestamptz;

DROP INDEX notification_scheduled_idx;
CREATE INDEX notification_due_idx
    ON notification (greatest(send_at, retry_at)) WHERE delivered_at IS NULL;

DROP INDEX subscription_tag_user_idx;
CREATE INDEX subscription_tag_user_idx ON subscription (tag_id, user_id) INCLUDE (mode);

CREATE TABLE group_member (
    item_id         bigint NOT NULL,
    notification_id bigint NOT NULL,
    PRIMARY KEY (item_id, notification_id)
);

-- Grouped items collected every id until now: their full lists move to
-- group_member, the items keep the last ten.
INSERT INTO group_member (item_id, notification_id)
SELECT i.id, m.notification_id
FROM user_notification AS i, unnest(i.notification_ids) AS m (notification_id)
WHERE i.notification_ids IS NOT NULL
ON CONFLICT DO NOTHING;
