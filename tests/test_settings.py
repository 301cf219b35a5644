"""One settings object: flags, then GNOSYNC_* variables, then the config file, then defaults."""

from __future__ import annotations

import pytest

from gnosync.errors import ConfigError
from gnosync.settings import load_settings


def test_precedence(tmp_path, monkeypatch):
    config = tmp_path / "gnosync.toml"
    config.write_text('batch_size = 11\ninterval = 3.0\nsource = "http://file"\ndb_schema = "from_file"\n')
    monkeypatch.setenv("GNOSYNC_INTERVAL", "2.0")
    monkeypatch.setenv("GNOSYNC_SOURCE", "http://env-a, http://env-b")
    settings = load_settings(config, batch_size=None, source=None, db_schema="from_flag")
    assert settings.batch_size == 11  # file beats default
    assert settings.interval == 2.0  # environment beats file
    assert settings.sources == ["http://env-a", "http://env-b"]  # comma-separated list
    assert settings.db_schema == "from_flag"  # flag beats everything
    assert settings.retry_max == 3.0  # default


def test_config_file_from_the_environment(tmp_path, monkeypatch):
    config = tmp_path / "elsewhere.toml"
    config.write_text("fetch_concurrency = 7\n")
    monkeypatch.setenv("GNOSYNC_CONFIG", str(config))
    assert load_settings().fetch_concurrency == 7


@pytest.mark.parametrize("problem, expected", [
    ({"batch_size": 0}, "batch_size"),
    ({"source": "ftp://x"}, "not an http"),
    ({"interval": -1}, "interval"),
])
def test_bad_values_name_the_setting(problem, expected):
    with pytest.raises(ConfigError, match=expected):
        load_settings(**problem)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("batch_size = = 3\n")
    with pytest.raises(ConfigError, match="config file"):
        load_settings(broken)
