-- Secrets and tokens (the same as sql/schema.sql):
--  * users.tokens_valid_after, stamped with every new token generation
--    (sql/triggers.sql, citelink_bump_token_generation): platform tokens
--    carry no generation, so one issued at or before it is refused;
--  * api_key.created_by_key, the key a key was made with.
-- Functions and triggers: sql/triggers.sql (applied after migrating).
-- depends: 0015_notification_recipients

ALTER TABLE users ADD COLUMN tokens_valid_after timestamptz;

ALTER TABLE api_key ADD COLUMN created_by_key bigint REFERENCES api_key (id) ON DELETE SET NULL;
