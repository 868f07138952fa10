"""citelink: real-time notifications where PostgreSQL does the work."""

__version__ = "0.1.0"
