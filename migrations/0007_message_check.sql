-- A notification message is 1 to 100,000 characters for every writer: the API,
-- the CLI and plain SQL agree (the same as sql/schema.sql). The API's limit,
-- CITELINK_MAX_MESSAGE_CHARS, may be lower, never higher.
-- Existing rows are checked: if this fails, find the offenders with
--     SELECT id FROM notification WHERE char_length(message) NOT BETWEEN 1 AND 100000;
-- depends: 0006_per_user_order

ALTER TABLE notification
    ADD CONSTRAINT notification_message_check
    CHECK (char_length(message) BETWEEN 1 AND 100000);
