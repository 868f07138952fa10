-- Recipient counts move from notification.recipients to a table of their own,
-- inserted by the fan-out (an update of the row just inserted was a quarter
-- of a publish); delivered_at defaults to now, so that a notification with
-- neither send_at nor listed users needs no row trigger.
-- Functions and triggers: sql/triggers.sql (applied after migrating).
-- depends: 0014_delivery_failures_and_groups

CREATE TABLE notification_recipients (
    notification_id bigint PRIMARY KEY,
    recipients      bigint NOT NULL
);

INSERT INTO notification_recipients (notification_id, recipients)
SELECT id, recipients FROM notification WHERE recipients > 0;

ALTER TABLE notification DROP COLUMN recipients;
ALTER TABLE notification ALTER COLUMN delivered_at SET DEFAULT now();
