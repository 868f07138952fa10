-- From here on, migrations carry table changes only: functions and triggers
-- come from sql/triggers.sql, applied again after migrating whenever it
-- changed (citelink.db.migrations). This table says which file made them.
-- depends: 0012_platform_embedding

CREATE TABLE sql_functions (
    sha256     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
