from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from specklab.server.settings import load_settings


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("SPECKLAB_PORT", "SPECKLAB_HOST", "SPECKLAB_LOG_LEVEL", "SPECKLAB_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "specklab.toml"
    path.write_text('port = 9001\nhost = "0.0.0.0"\nlog_level = "debug"\n')
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8765)
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_database_url.endswith("specklab.db")


def test_file_overrides_defaults(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECKLAB_CONFIG", str(config_file))
    settings = load_settings()
    assert (settings.port, settings.host, settings.log_level) == (9001, "0.0.0.0", "debug")


def test_environment_overrides_file(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECKLAB_CONFIG", str(config_file))
    monkeypatch.setenv("SPECKLAB_PORT", "9002")
    settings = load_settings()
    assert (settings.port, settings.host) == (9002, "0.0.0.0")


def test_command_line_overrides_environment(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPECKLAB_CONFIG", str(config_file))
    monkeypatch.setenv("SPECKLAB_PORT", "9002")
    settings = load_settings(port=9003, host=None)
    assert (settings.port, settings.host) == (9003, "0.0.0.0")


def test_bad_values_are_rejected_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECKLAB_PORT", "70000")
    with pytest.raises(ValidationError, match="port"):
        load_settings()


def test_unknown_config_file_keys_are_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("prot = 1\n")
    monkeypatch.setenv("SPECKLAB_CONFIG", str(path))
    with pytest.raises(ValidationError, match="prot"):
        load_settings()


def test_a_named_file_leaves_the_environment_alone(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other = tmp_path / "other.toml"
    other.write_text("port = 9100\n")
    monkeypatch.setenv("SPECKLAB_CONFIG", str(other))
    assert load_settings(config_file).port == 9001
    # The next build without a file named reads the environment's file, not the last one named.
    assert load_settings().port == 9100


def test_a_missing_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPECKLAB_CONFIG", raising=False)
    with pytest.raises(FileNotFoundError, match=r"missing\.toml"):
        load_settings(tmp_path / "missing.toml")
