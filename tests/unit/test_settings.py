"""Settings come from the environment through strict helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.settings import database_from_url, env_bool, env_int

ROOT = Path(__file__).resolve().parents[2]


def test_postgres_url_is_parsed() -> None:
    db = database_from_url("DATABASE_URL", "postgres://u:p%40ss@db.local:6543/ordinal")

    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.postgresql", "ordinal", "u", "p@ss", "db.local", "6543")


def test_sqlite_url_uses_wal_and_immediate_transactions() -> None:
    db = database_from_url("DATABASE_URL", "sqlite:////tmp/x.sqlite3")

    assert db["NAME"] == "/tmp/x.sqlite3"
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]


@pytest.mark.parametrize("url", ["mysql://x/y", "postgres://host/", "nonsense"])
def test_bad_database_url_names_the_variable(url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        database_from_url("DATABASE_URL", url)


def test_bad_int_and_bool_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_INT", "ten")
    monkeypatch.setenv("SOME_BOOL", "maybe")

    with pytest.raises(ImproperlyConfigured, match="SOME_INT"):
        env_int("SOME_INT", 1)
    with pytest.raises(ImproperlyConfigured, match="SOME_BOOL"):
        env_bool("SOME_BOOL")


def boot(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL"}}
    return subprocess.run([sys.executable, "-c", "import config.settings"], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_secret_key_is_required_without_debug() -> None:
    result = boot()

    assert result.returncode != 0 and "SECRET_KEY is required" in result.stderr


def test_placeholder_secret_key_is_refused() -> None:
    result = boot(SECRET_KEY="change-me")

    assert result.returncode != 0 and "SECRET_KEY must be a random value" in result.stderr


def test_debug_boots_without_secret_key() -> None:
    assert boot(DEBUG="1").returncode == 0
