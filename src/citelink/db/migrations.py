"""Schema migrations: yoyo's for tables, then sql/triggers.sql for behaviour.

Migrations (yoyo speaks psycopg 3, not asyncpg) carry table changes only.
Functions and triggers have one home, sql/triggers.sql: after the migrations,
when the file differs from the one the database's functions were made from
(its SHA-256, kept in `sql_functions`), every citelink_ trigger and function
is dropped and the file is applied again, in one transaction. So no migration
copies a function body, and an old database ends up with exactly the
functions a new one gets.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
from yoyo import get_backend, read_migrations

# Every trigger and function citelink made (their names start with
# `citelink_`); the tables, views and their data stay. Nothing in
# sql/schema.sql may use one of these functions: dropping it would fail.
DROP_FUNCTIONS = r"""
DO $$
DECLARE
    found record;
BEGIN
    FOR found IN SELECT t.tgname, t.tgrelid::regclass AS tbl FROM pg_trigger AS t
                 JOIN pg_class AS c ON c.oid = t.tgrelid
                 WHERE NOT t.tgisinternal AND t.tgname LIKE 'citelink\_%'
                   AND c.relnamespace = 'public'::regnamespace LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', found.tgname, found.tbl);
    END LOOP;
    FOR found IN SELECT p.oid::regprocedure AS fn FROM pg_proc AS p
                 WHERE p.pronamespace = 'public'::regnamespace
                   AND p.proname LIKE 'citelink\_%' LOOP
        EXECUTE format('DROP FUNCTION %s', found.fn);
    END LOOP;
END
$$
"""


def resource_dir(name: str) -> Path:
    """`sql/` or `migrations/`: inside the installed package, or at the top of a
    source checkout (editable installs)."""
    packaged = Path(__file__).parents[1] / name
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / name


def yoyo_url(database_url: str) -> str:
    """yoyo picks its driver from the URL scheme."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql"):
        raise ValueError(f"not a postgresql:// URL: {database_url!r}")
    return f"postgresql+psycopg://{rest}"


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations, then sql/triggers.sql if it changed, under
    yoyo's lock; return the ids of the migrations applied."""
    backend = get_backend(yoyo_url(database_url))
    try:
        with backend.lock():
            pending = backend.to_apply(read_migrations(str(resource_dir("migrations"))))
            backend.apply_migrations(pending)
            apply_functions(database_url)
    finally:
        backend.connection.close()
    return [m.id for m in pending]


def apply_functions(database_url: str) -> bool:
    """Make the functions and triggers of sql/triggers.sql, unless the database
    has them already; whether it made them."""
    source = (resource_dir("sql") / "triggers.sql").read_text()
    digest = hashlib.sha256(source.encode()).hexdigest()
    with psycopg.connect(database_url) as conn, conn.transaction():
        if conn.execute("SELECT sha256 FROM sql_functions").fetchone() == (digest,):
            return False
        conn.execute(DROP_FUNCTIONS)
        conn.execute(source)
        conn.execute("DELETE FROM sql_functions")
        conn.execute("INSERT INTO sql_functions (sha256) VALUES (%s)", (digest,))
    return True
