-- A deactivated or deleted user's open sockets are closed at once: an event
-- `revoke <user_id> 0 0 0` on citelink_events (the same as sql/triggers.sql).
-- depends: 0001_initial

-- A user deactivated or deleted: their open sockets are closed at once (the
-- relay closes them with 4401) instead of living on until their token expires.
CREATE FUNCTION citelink_publish_user_revoked() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('citelink_events', concat_ws(' ', 'revoke', OLD.id, 0, 0, 0));
    RETURN NULL;
END
$$;

CREATE TRIGGER citelink_revoke_deactivated_user
    AFTER UPDATE OF is_active ON users
    FOR EACH ROW WHEN (OLD.is_active AND NOT NEW.is_active)
    EXECUTE FUNCTION citelink_publish_user_revoked();

CREATE TRIGGER citelink_revoke_deleted_user
    AFTER DELETE ON users
    FOR EACH ROW WHEN (OLD.is_active)
    EXECUTE FUNCTION citelink_publish_user_revoked();
