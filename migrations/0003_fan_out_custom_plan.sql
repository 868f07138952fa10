-- The fan-out is planned at every call with the actual tag ids: one huge tag
-- skewed the statistics and the generic plan scanned every subscription to
-- fan out to a small tag (the same as sql/triggers.sql).
-- depends: 0002_revoke_user_sockets

CREATE OR REPLACE FUNCTION citelink_fan_out_notification() RETURNS trigger
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    tags bigint[] := ARRAY(SELECT DISTINCT tag_id FROM new_rows);
BEGIN
    WITH items AS (
        INSERT INTO user_notification (user_id, notification_id)
        SELECT s.user_id, n.id
        FROM new_rows AS n JOIN subscription AS s ON s.tag_id = n.tag_id
        WHERE s.tag_id = ANY (tags)
        ORDER BY n.id, s.user_id
        RETURNING notification_id
    ), recipients AS (
        SELECT notification_id, count(*) AS total FROM items GROUP BY notification_id
    )
    INSERT INTO audit_log (resource, object_id, action, changes, actor_id)
    SELECT 'notification', n.id, 'create',
           citelink_row_diff(NULL, to_jsonb(n))
               || jsonb_build_object('recipients', jsonb_build_array(NULL, coalesce(r.total, 0))),
           citelink_actor_id()
    FROM new_rows AS n LEFT JOIN recipients AS r ON r.notification_id = n.id
    ORDER BY n.id;
    RETURN NULL;
END
$$;

