"""One settings object: command-line flags, then ``GNOSYNC_*`` variables, then a TOML
config file, then the defaults below.

The config file is ``--config PATH`` or ``GNOSYNC_CONFIG``; without either,
``<user config dir>/gnosync/gnosync.toml`` is read when it exists. Keys are the field
names below (``source``, ``db``, ``batch_size``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gnosync.errors import ConfigError

DEFAULT_CONFIG_FILE = Path(platformdirs.user_config_dir("gnosync")) / "gnosync.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GNOSYNC_", extra="forbid", env_ignore_empty=True)

    source: str | None = Field(None, description="tx-indexer GraphQL URLs, comma-separated")
    db: str | None = Field(None, description="PostgreSQL DSN; embedded PostgreSQL when unset")
    db_schema: str = Field("indexer", description="PostgreSQL schema gnosync writes")
    component: str = Field("block_sync", description="app_state row this process owns")
    batch_size: int = Field(10_000, ge=1, le=1_000_000, description="most blocks per batch")
    batch_txs: int = Field(5000, ge=1, description="transactions a batch aims to hold")
    fetch_concurrency: int = Field(4, ge=1, le=64, description="ranges fetched at once")
    max_pending_bytes: int = Field(
        64 * 1024 * 1024, ge=1024 * 1024, description="most bytes fetched but not yet committed"
    )
    stuck_after: int = Field(
        20, ge=1, description="repeats of one error at one height that mark the sync stuck"
    )
    subscribe: bool = Field(True, description="wake on the source's new-block subscription")
    durable_commits: bool = Field(False, description="wait for each batch's WAL flush")
    interval: float = Field(1.0, gt=0, description="seconds between polls at the tip")
    start_height: int | None = Field(None, ge=0, description="first height of a new sync")
    request_timeout: float = Field(30.0, gt=0, description="seconds for a whole source answer")
    connect_timeout: float = Field(3.0, gt=0, description="seconds to connect to a source")
    read_timeout: float = Field(10.0, gt=0, description="longest silence once an answer has begun")
    max_response_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="largest answer read")
    retry_initial: float = Field(0.2, gt=0, description="first retry delay, seconds")
    retry_max: float = Field(3.0, gt=0, description="longest retry delay, seconds")
    retry_attempts: int = Field(8, ge=1, description="tries per batch for one-shot commands")
    data_dir: Path | None = Field(None, description="embedded PostgreSQL data directory")
    # None: not given, so the default address (127.0.0.1:9464), or a free port when
    # another process holds it; a given address is used exactly or not at all.
    http: str | None = Field(None, description="metrics/health address; 'off' disables")
    ready_max_lag: int = Field(50, ge=0, description="blocks behind the tip /readyz tolerates")
    checkpoint_every: int = Field(10_000, ge=0, description="heights between checkpoints; 0 disables")
    derive: Literal["all", "none"] = Field(
        "all", description="decoded tables written with each batch: all, or none (raw rows only)"
    )
    partition_size: int = Field(
        1_000_000, ge=1, description="heights per partition of the tables that grow"
    )

    @field_validator("source")
    @classmethod
    def _source_is_http(cls, value: str | None) -> str | None:
        for url in _split(value):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return value

    @property
    def sources(self) -> list[str]:
        """The source URLs, in the order given."""
        return _split(self.source)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for every :class:`~gnosync.source.client.SourceClient`."""
        return {
            "timeout": self.request_timeout,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "max_response_bytes": self.max_response_bytes,
        }

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def config_file(explicit: Path | None) -> Path | None:
    """The config file to read: ``explicit``, else ``GNOSYNC_CONFIG``, else the default
    one when it exists."""
    path = explicit or (
        Path(os.environ["GNOSYNC_CONFIG"]) if os.environ.get("GNOSYNC_CONFIG") else None
    )
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; fix --config or GNOSYNC_CONFIG")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(config: Path | None = None, **flags: Any) -> Settings:
    """Settings from ``flags`` (None means "not given"), the environment and the file.

    Raises ``ConfigError`` naming the first bad value and where it came from.
    """
    given = {key: value for key, value in flags.items() if value is not None}
    path = config_file(config)
    settings_cls = Settings
    if path is not None:
        settings_cls = type(
            "Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}}
        )
    try:
        return settings_cls(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(
            f"invalid setting {field}: {first['msg'].removeprefix('Value error, ')}"
            f" (from --{field.replace('_', '-')}, GNOSYNC_{field.upper()} or the config file)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from None
