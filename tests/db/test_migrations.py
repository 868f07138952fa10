"""migrations/ (yoyo) and sql/*.sql must build exactly the same database."""

from __future__ import annotations

import difflib

import psycopg
from yoyo import get_backend, read_migrations
from yoyo.migrations import MigrationList

from citelink.db.migrations import resource_dir, yoyo_url
from tests.support.database import with_database

# Everything a schema is made of, as text, minus yoyo's own bookkeeping tables.
CATALOG = {
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm') AND a.attnum > 0
          AND NOT a.attisdropped AND c.relname NOT LIKE '%yoyo%'
        ORDER BY 1, 2""",
    "tables": """
        SELECT c.relname, c.reloptions FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
          AND c.relname NOT LIKE '%yoyo%'
        ORDER BY 1""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename NOT LIKE '%yoyo%' ORDER BY 1""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint
        WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text NOT LIKE '%yoyo%'
        ORDER BY 1, 2""",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1""",
    "triggers": """
        SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger
        WHERE NOT tgisinternal ORDER BY 1""",
    "views": """
        SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1""",
    "sequences": """
        SELECT sequencename, data_type, increment_by FROM pg_sequences
        WHERE schemaname = 'public' ORDER BY 1""",
}


def catalog(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(sql).fetchall() for name, sql in CATALOG.items()}


def test_migrations_build_the_schema_of_sql_files(server_url, template_url):
    name = "citelink_from_sql_files"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = with_database(server_url, name)
    try:
        sql = resource_dir("sql")
        with psycopg.connect(url) as conn:
            conn.execute((sql / "schema.sql").read_text())
            conn.execute((sql / "triggers.sql").read_text())
        from_files, from_migrations = catalog(url), catalog(template_url)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")

    for part in CATALOG:
        assert from_files[part], f"no {part} found: the comparison would prove nothing"
        assert from_files[part] == from_migrations[part], difference(
            part, from_files[part], from_migrations[part]
        )


def difference(part: str, from_files: list[tuple], from_migrations: list[tuple]) -> str:
    """What differs, as a unified diff of one line per catalog row."""
    lines = difflib.unified_diff(
        [repr(row) for row in from_files],
        [repr(row) for row in from_migrations],
        "sql/*.sql",
        "migrations/",
        lineterm="",
    )
    return f"{part} differ:\n" + "\n".join(lines)


# Alice gets notifications 1, 2 and 3 (reads 1), Bob 1 and 3 (deletes 3).
OLD_INBOXES = """
    INSERT INTO users (username, password_hash) VALUES ('alice', 'x'), ('bob', 'x');
    INSERT INTO tag (name) VALUES ('news'), ('private');
    INSERT INTO subscription (user_id, tag_id) VALUES (1, 1), (2, 1), (1, 2);
    INSERT INTO notification (tag_id, message) VALUES (1, 'one'), (2, 'two'), (1, 'three');
    UPDATE user_notification SET is_read = true WHERE user_id = 1 AND notification_id = 1;
    UPDATE user_notification SET is_deleted = true WHERE user_id = 2 AND notification_id = 3;
"""


def test_per_user_order_migration_keeps_existing_inboxes(server_url):
    """Items made before positions existed are numbered in id order (commit
    order under the old inbox lock), counters and states are kept, recipient
    counts come over from the audit log, and the migration writes no audit row."""
    name = "citelink_before_positions"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = with_database(server_url, name)
    backend = get_backend(yoyo_url(url))
    try:
        migrations = read_migrations(str(resource_dir("migrations")))
        earlier = MigrationList([m for m in migrations if m.id < "0006"])
        with backend.lock():
            backend.apply_migrations(backend.to_apply(earlier))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(OLD_INBOXES)
            audit_rows = conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]
            states = conn.execute(
                "SELECT id, user_id, is_read, is_deleted FROM user_notification ORDER BY id"
            ).fetchall()
        with backend.lock():
            backend.apply_migrations(backend.to_apply(migrations))
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT id, user_id, is_read, is_deleted, position "
                "FROM user_notification ORDER BY id"
            ).fetchall()
            assert [r[:4] for r in rows] == states
            assert [(r[1], r[4]) for r in rows] == [(1, 1), (2, 1), (1, 2), (1, 3), (2, 2)]
            counters = conn.execute(
                "SELECT user_id, unread, total, last_position FROM inbox_count ORDER BY 1"
            ).fetchall()
            assert counters == [(1, 2, 3, 3), (2, 1, 1, 2)]
            # Read items are seen; unseen ones are the unread ones.
            assert conn.execute(
                "SELECT bool_and(is_seen = is_read AND seen_at IS NOT DISTINCT FROM read_at) "
                "FROM user_notification"
            ).fetchone() == (True,)
            assert conn.execute("SELECT bool_and(unseen = unread) FROM inbox_count").fetchone() == (
                True,
            )
            recipients = conn.execute("SELECT recipients FROM notification ORDER BY id").fetchall()
            assert recipients == [(2,), (1,), (2,)]
            assert conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == audit_rows
            # And the database works on: a new item numbers after the old ones.
            conn.execute("INSERT INTO notification (tag_id, message) VALUES (2, 'four')")
            new = conn.execute(
                "SELECT position FROM user_notification WHERE notification_id = 4"
            ).fetchone()
            assert new == (4,)
    finally:
        backend.connection.close()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
