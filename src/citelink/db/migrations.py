"""Schema migrations with yoyo (it speaks psycopg 3, not asyncpg)."""

from __future__ import annotations

from pathlib import Path

from yoyo import get_backend, read_migrations


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
    """Apply pending migrations under yoyo's lock; return the ids applied."""
    backend = get_backend(yoyo_url(database_url))
    try:
        with backend.lock():
            pending = backend.to_apply(read_migrations(str(resource_dir("migrations"))))
            backend.apply_migrations(pending)
    finally:
        backend.connection.close()
    return [m.id for m in pending]
