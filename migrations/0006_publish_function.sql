-- Publishing in one round trip (the same as sql/triggers.sql).
-- depends: 0005_linear_trigger_plans

-- Publishing as the API does it, in one round trip: the publisher is the
-- audit actor, the notification is inserted like any other (the triggers
-- fan it out), and it comes back with its number of recipients. Called
-- outside an explicit transaction, it commits as soon as it returns, so no
-- client round trip happens while inbox inserts are serialised.
CREATE FUNCTION citelink_publish(tag bigint, body text, extra jsonb, actor bigint)
RETURNS TABLE (id bigint, tag_id bigint, message text, data jsonb, created_at timestamptz,
               recipients bigint)
LANGUAGE plpgsql AS $$
DECLARE
    note notification;
BEGIN
    PERFORM set_config('citelink.actor_id', coalesce(actor::text, ''), true);
    INSERT INTO notification (tag_id, message, data, created_by)
    VALUES (tag, body, extra, actor)
    RETURNING * INTO note;
    RETURN QUERY
    SELECT note.id, note.tag_id, note.message, note.data, note.created_at,
           (SELECT count(*) FROM user_notification AS i WHERE i.notification_id = note.id);
END
$$;
