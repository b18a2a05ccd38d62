"""Settings: one object, precedence defaults < toml < environment < overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifactstore.config import Settings, parse_duration
from artifactstore.errors import InvalidInput


def test_defaults_derive_urls_from_home(tmp_path: Path) -> None:
    s = Settings.load(env={}, home=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path / 'artifactstore.db'}"
    assert s.storage_url == f"file://{tmp_path / 'storage'}"
    assert s.fsync is True and s.gc_grace == 86400.0


def test_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text("gc_grace = 10.0\nmax_files = 5\n")
    env = {"ARTIFACTSTORE_CONFIG": str(cfg), "ARTIFACTSTORE_MAX_FILES": "7"}
    s = Settings.load(env=env, home=tmp_path)
    assert s.gc_grace == 10.0 and s.max_files == 7
    assert Settings.load(env=env, home=tmp_path, max_files=9).max_files == 9


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("30s", 30.0), ("15m", 900.0), ("24h", 86400.0), ("2d", 172800.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "env",
    [
        {"ARTIFACTSTORE_FSYNC": "maybe"},
        {"ARTIFACTSTORE_MAX_FILES": "lots"},
        {"ARTIFACTSTORE_GC_GRACE": "soon"},
        {"ARTIFACTSTORE_PRIMARY_DIGEST": "md5"},
    ],
)
def test_bad_values_are_refused(env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        Settings.load(env=env, home=tmp_path)


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text("gc_gracee = 1\n")
    with pytest.raises(InvalidInput, match="gc_gracee"):
        Settings.load(env={"ARTIFACTSTORE_CONFIG": str(cfg)}, home=tmp_path)


def test_redacted_database_url() -> None:
    s = Settings(home=Path("x"), database_url="postgresql://user:secret@db/x")
    assert "secret" not in s.redacted_database_url()
