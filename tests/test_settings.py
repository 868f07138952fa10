"""Settings from the environment: every field has its variable, bad values are
refused with a message naming it, and the settings page's table lists exactly
the variables the code reads, with the code's defaults."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from citelink.problems import Problem
from citelink.settings import Settings
from tests.support import ROOT

SETTINGS_PAGE = ROOT / "docs" / "operations" / "settings.md"
# Read by the CLI, not a field of Settings.
CLI_ONLY = {"CITELINK_DEBUG"}


def documented_settings() -> dict[str, str]:
    """Variable → its default as the settings page's table writes it."""
    rows = re.findall(r"^\| `(CITELINK_[A-Z_]+)` \| ([^|]*) \|", SETTINGS_PAGE.read_text(), re.M)
    return {name: default.strip() for name, default in rows}


def test_the_settings_page_lists_every_setting_with_its_default():
    documented = documented_settings()
    fields = {f"CITELINK_{f.name.upper()}": f.default for f in dataclasses.fields(Settings)}
    assert set(documented) - CLI_ONLY == set(fields)
    for name, default in fields.items():
        written = documented[name]
        # Numbers are written as numbers ("1048576", "5", "0: keep").
        if isinstance(default, int | float) and re.match(r"\d", written):
            assert float(re.match(r"[\d.]+", written).group()) == default, name


def test_every_field_is_read_from_its_variable(monkeypatch):
    monkeypatch.setenv("CITELINK_POOL_SIZE", "3")
    monkeypatch.setenv("CITELINK_DB_QUERY_SECONDS", "2.5")
    monkeypatch.setenv("CITELINK_LOG_FORMAT", "JSON")
    monkeypatch.setenv("CITELINK_DATA_DIR", "/tmp/somewhere")
    monkeypatch.setenv("CITELINK_METRICS_TOKEN", "scrape")
    monkeypatch.setenv("CITELINK_WORKERS", "")  # empty: the default
    settings = Settings.from_env()
    assert settings.pool_size == 3 and settings.db_query_seconds == 2.5
    assert settings.log_format == "json" and settings.data_dir == Path("/tmp/somewhere")
    assert settings.metrics_token == "scrape" and settings.workers == 1


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CITELINK_POOL_SIZE", "ten", "CITELINK_POOL_SIZE must be an integer, got 'ten'"),
        ("CITELINK_POOL_SIZE", "0", "CITELINK_POOL_SIZE must be at least 1, got 0"),
        ("CITELINK_POOL_SIZE", "2.5", "CITELINK_POOL_SIZE must be an integer"),
        ("CITELINK_DB_QUERY_SECONDS", "soon", "CITELINK_DB_QUERY_SECONDS must be a number"),
        ("CITELINK_DB_QUERY_SECONDS", "0", "must be at least 0.1, got 0.0"),
        ("CITELINK_PORT", "70000", "CITELINK_PORT must be from 0 to 65535, got 70000"),
        ("CITELINK_MAX_MESSAGE_CHARS", "100001", "must be from 1 to 100000"),
        ("CITELINK_LOG_FORMAT", "xml", "must be one of text, json, got 'xml'"),
        ("CITELINK_AUDIT_RETENTION_DAYS", "-1", "must be at least 0, got -1"),
        ("CITELINK_DATABASE_URL", "mysql://u:secret@h/db", "got a mysql:// URL"),
    ],
)
def test_a_bad_value_is_refused_with_its_name(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(Problem, match=re.escape(message)) as refused:
        Settings.from_env()
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize("variable", ["CITELINK_SECRET_KEY", "CITELINK_PLATFORM_TOKEN_SECRET"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        # .env.example's, 33 bytes: long enough, and known to everyone.
        ("change-me-to-a-long-random-string", "is the example's placeholder"),
        ("Change_Me-and-make-it-long-enough-to-pass", "is the example's placeholder"),
        ("x", "must be at least 32 bytes long, got 1"),
        ("s3cr3t-but-31-bytes-long-......", "must be at least 32 bytes long, got 31"),
        ("é" * 15, "must be at least 32 bytes long, got 30"),
    ],
)
def test_a_guessable_signing_secret_is_refused_without_echoing_it(
    monkeypatch, variable, value, message
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(Problem, match=re.escape(f"{variable} {message}")) as refused:
        Settings.from_env()
    assert value not in str(refused.value) and "token_urlsafe" in str(refused.value)


def test_a_signing_secret_of_32_bytes_is_taken(monkeypatch):
    monkeypatch.setenv("CITELINK_SECRET_KEY", "k" * 32)
    monkeypatch.setenv("CITELINK_PLATFORM_TOKEN_SECRET", "é" * 16)
    settings = Settings.from_env()
    assert (settings.secret_key, settings.platform_token_secret) == ("k" * 32, "é" * 16)
