-- notification.data nests 100 levels at most, as the API takes it (the same
-- as sql/schema.sql). Rows already deeper are left as they are, and the
-- constraint then stays NOT VALID (new rows are checked all the same) until
-- they are fixed and `ALTER TABLE notification VALIDATE CONSTRAINT
-- notification_data_depth` is run; the app shows their deepest parts as a
-- placeholder (citelink.decoding).
-- depends: 0010_token_revocation

ALTER TABLE notification ADD CONSTRAINT notification_data_depth CHECK (
    NOT jsonb_path_exists(data, 'strict $.**{100} ? (@.type() == "object" || @.type() == "array")')
) NOT VALID;

DO $$
BEGIN
    ALTER TABLE notification VALIDATE CONSTRAINT notification_data_depth;
EXCEPTION WHEN check_violation THEN
    RAISE NOTICE 'notification rows nested deeper than 100 levels: notification_data_depth stays NOT VALID';
END
$$;
