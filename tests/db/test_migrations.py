"""migrations/ (yoyo) and sql/*.sql must build exactly the same database, and
an old database upgrades to it: migrations carry tables, sql/triggers.sql the
functions and triggers, applied again whenever it changed."""

from __future__ import annotations

import difflib

import psycopg
from yoyo import get_backend, read_migrations
from yoyo.migrations import MigrationList

from citelink.db.migrations import apply_functions, migrate, resource_dir, yoyo_url
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
    assert_same_schema(catalog_of_sql_files(server_url), catalog(template_url))


def catalog_of_sql_files(server_url: str) -> dict[str, list[tuple]]:
    """The catalog of a database built from sql/schema.sql and sql/triggers.sql."""
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
        return catalog(url)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def assert_same_schema(from_files: dict, from_migrations: dict) -> None:
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
        migrate(url)
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
            recipients = conn.execute(
                "SELECT notification_id, recipients FROM notification_recipients ORDER BY 1"
            ).fetchall()
            assert recipients == [(1, 2), (2, 1), (3, 2)]
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


def fresh_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_a_database_of_the_last_release_upgrades_to_the_sql_files(server_url):
    """Migrated to 0012 by yoyo alone (functions as the old migrations made
    them), with inboxes in it: `migrate` brings exactly the schema and
    functions of sql/*.sql, keeps the rows, and the database works on."""
    name = "citelink_last_release"
    url = fresh_database(server_url, name)
    backend = get_backend(yoyo_url(url))
    try:
        migrations = read_migrations(str(resource_dir("migrations")))
        released = MigrationList([m for m in migrations if m.id <= "0012"])
        with backend.lock():
            backend.apply_migrations(backend.to_apply(released))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(OLD_INBOXES)
            before = conn.execute("SELECT * FROM user_notification ORDER BY id").fetchall()
        assert migrate(url) == [m.id for m in migrations if m.id > "0012"]
        assert_same_schema(catalog_of_sql_files(server_url), catalog(url))
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT * FROM user_notification ORDER BY id").fetchall() == before
            conn.execute("INSERT INTO notification (tag_id, message) VALUES (1, 'four')")
            assert conn.execute(
                "SELECT user_id, position FROM user_notification WHERE notification_id = 4 "
                "ORDER BY user_id"
            ).fetchall() == [(1, 4), (2, 3)]
    finally:
        backend.connection.close()
        drop_database(server_url, name)


def test_functions_are_made_again_only_when_sql_triggers_changed(server_url):
    name = "citelink_functions_again"
    url = fresh_database(server_url, name)
    try:
        migrate(url)
        assert not apply_functions(url), "unchanged: nothing to do"
        with psycopg.connect(url, autocommit=True) as conn:
            # As if sql/triggers.sql had changed since, and a function had gone.
            conn.execute("UPDATE sql_functions SET sha256 = 'older'")
            conn.execute("DROP FUNCTION citelink_actor_id() CASCADE")
        assert migrate(url) == []
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM sql_functions").fetchone() == (1,)
            assert conn.execute("SELECT citelink_actor_id()").fetchone() == (None,)
    finally:
        drop_database(server_url, name)


def test_no_migration_copies_a_function_body():
    """Since 0013 functions and triggers have one home, sql/triggers.sql."""
    for path in sorted(resource_dir("migrations").glob("*.sql")):
        if path.name >= "0013":
            text = path.read_text().upper()
            assert "CREATE FUNCTION" not in text and "CREATE OR REPLACE FUNCTION" not in text, path
            assert "CREATE TRIGGER" not in text, path
