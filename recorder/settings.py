"""Settings: one TOML file plus two environment overrides, read once."""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_CONFIG_PATH = Path("zuul-status.toml")
DEFAULT_DATABASE_URL = "sqlite:///var/zuul-status.sqlite"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """One Zuul status URL to poll, and how."""

    name: str
    url: str
    interval_s: float = 60.0
    connect_timeout_s: float = 5.0
    deadline_s: float = 30.0
    max_bytes: int = 64 * 1024 * 1024
    web_root: str | None = None

    @property
    def zuul_web_root(self) -> str:
        """The Zuul web root that relative job URLs of this source resolve to."""
        if self.web_root:
            return self.web_root.rstrip("/") + "/"
        parts = urlsplit(self.url)
        base = f"{parts.scheme}://{parts.netloc}"
        match = re.search(r"^(.*)/api/tenant/([^/]+)/status", parts.path)
        if match:
            return f"{base}{match.group(1)}/t/{match.group(2)}/"
        prefix = parts.path.split("/api/status")[0] if "/api/" in parts.path else ""
        return f"{base}{prefix}/"


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """How long snapshots are kept at each density; zero days means forever."""

    keep_all_days: float = 14.0
    hourly_days: float = 365.0
    daily_days: float = 0.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the recorder and the web app are built from."""

    database_url: str = DEFAULT_DATABASE_URL
    sources: tuple[SourceSettings, ...] = ()
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    display_timezone: str = "UTC"

    def source(self, name: str) -> SourceSettings:
        for source in self.sources:
            if source.name == name:
                return source
        raise ConfigError(f"no source named {name!r} in the configuration")

    def with_database(self, url: str) -> Settings:
        return replace(self, database_url=url)


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the TOML file (if any) and apply the environment overrides."""
    environ = os.environ if environ is None else environ
    explicit = path is not None or "ZUUL_STATUS_CONFIG" in environ
    config_path = Path(path or environ.get("ZUUL_STATUS_CONFIG") or DEFAULT_CONFIG_PATH)
    data = _read_toml(config_path, required=explicit)
    if environ.get("ZUUL_STATUS_URL"):
        # The environment's URL replaces the file's sources, unread.
        data = {key: value for key, value in data.items() if key != "sources"}
    settings = settings_from_mapping(data, where=str(config_path))

    if environ.get("ZUUL_STATUS_DATABASE_URL"):
        settings = settings.with_database(environ["ZUUL_STATUS_DATABASE_URL"])
    if environ.get("ZUUL_STATUS_URL"):
        url = environ["ZUUL_STATUS_URL"]
        source = SourceSettings(name=source_name_from_url(url), url=_check_url(url))
        settings = replace(settings, sources=(source,))
    return settings


def settings_from_mapping(data: Mapping, where: str = "configuration") -> Settings:
    """Build settings from a decoded TOML document, checking every value."""
    known = {"database_url", "sources", "retention", "display_timezone"}
    _reject_unknown(data, known, where)
    sources = tuple(
        _source(raw, f"{where}: sources[{index}]")
        for index, raw in enumerate(_list_of_tables(data.get("sources", []), where))
    )
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: source names must be unique: {duplicates}")
    return Settings(
        database_url=str(data.get("database_url", DEFAULT_DATABASE_URL)),
        sources=sources,
        retention=_retention(data.get("retention", {}), where),
        display_timezone=str(data.get("display_timezone", "UTC")),
    )


def source_name_from_url(url: str) -> str:
    """A source name for a bare URL: its tenant, else its host."""
    match = re.search(r"/api/tenant/([^/]+)/", url)
    name = unquote(match.group(1)) if match else (urlsplit(url).hostname or "zuul")
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:100]


def check_source_name(name: object, where: str) -> str:
    """``name`` if it can name a source (it appears in URLs); ConfigError if not."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ConfigError(
            f"{where} must be 1-100 letters, digits, '.', '_' or '-', got {name!r}"
        )
    return name


def _read_toml(path: Path, required: bool) -> dict:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"configuration file {path} does not exist") from None
        return {}
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not valid TOML: byte {error.start} is not UTF-8"
        ) from None


def _source(raw: Mapping, where: str) -> SourceSettings:
    _reject_unknown(
        raw,
        {"name", "url", "interval", "connect_timeout", "deadline", "max_bytes"}
        | {"web_root"},
        where,
    )
    name = check_source_name(raw.get("name"), f"{where}: 'name'")
    if "url" not in raw:
        raise ConfigError(f"{where}: 'url' is required")
    interval_s = _positive(raw, "interval", 60.0, where)
    source = SourceSettings(
        name=name,
        url=_check_url(raw["url"], where),
        interval_s=interval_s,
        connect_timeout_s=_positive(raw, "connect_timeout", 5.0, where),
        # Unless told, a fetch may take the interval, up to 30 s.
        deadline_s=_positive(raw, "deadline", min(30.0, interval_s), where),
        max_bytes=int(_positive(raw, "max_bytes", 64 * 1024 * 1024, where)),
        web_root=raw.get("web_root"),
    )
    if source.deadline_s >= source.interval_s * 10:
        raise ConfigError(
            f"{where}: 'deadline' ({source.deadline_s:g} s) must be less than ten "
            f"times 'interval' ({source.interval_s:g} s); a poll is skipped while "
            "the one before it runs"
        )
    return source


def _retention(raw: object, where: str) -> RetentionSettings:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: 'retention' must be a table")
    _reject_unknown(raw, {"keep_all_days", "hourly_days", "daily_days"}, where)
    defaults = RetentionSettings()
    return RetentionSettings(
        **{
            key: _non_negative(raw, key, getattr(defaults, key), where)
            for key in ("keep_all_days", "hourly_days", "daily_days")
        }
    )


def _check_url(url: object, where: str = "ZUUL_STATUS_URL") -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where}: 'url' must be an http(s) URL, got {url!r}")
    return url


def _positive(raw: Mapping, key: str, default: float, where: str) -> float:
    value = _finite(raw, key, default)
    if value is None or value <= 0:
        raise ConfigError(
            f"{where}: '{key}' must be a finite positive number, got {raw[key]!r}"
        )
    return value


def _non_negative(raw: Mapping, key: str, default: float, where: str) -> float:
    value = _finite(raw, key, default)
    if value is None or value < 0:
        raise ConfigError(
            f"{where}: '{key}' must be a finite number >= 0, got {raw[key]!r}"
        )
    return value


def _finite(raw: Mapping, key: str, default: float) -> float | None:
    """The setting as a float; None unless it is a finite number (TOML has nan, inf)."""
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and abs(value) > 2**53:
        return None
    return float(value) if math.isfinite(value) else None


def _list_of_tables(value: object, where: str) -> list[Mapping]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError(f"{where}: 'sources' must be an array of tables")
    return value


def _reject_unknown(raw: Mapping, known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}")
