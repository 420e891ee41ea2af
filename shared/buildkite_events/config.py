"""Configuration from the environment, as a typed frozen dataclass.

    @dataclass(frozen=True)
    class Config:
        bucket: str = env("ARCHIVE_BUCKET")
        prefix: str = env("ARCHIVE_PREFIX", default="")
        token: str = env("SLACK_TOKEN", secret=True)

``load_config(Config)`` reads and converts every field, and raises ``ConfigError`` naming
the variable that is missing or invalid. Secret values are stripped of surrounding
whitespace (a required one that is only whitespace is missing) and never appear in reprs
or errors.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")
_MISSING: Any = dataclasses.MISSING
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env(name: str, *, default: Any = _MISSING, secret: bool = False, help: str = "") -> Any:
    """Declare a field read from environment variable ``name``."""
    return dataclasses.field(default=default, repr=not secret, metadata={"env": name, "secret": secret, "help": help})


def _convert(raw: str, kind: Any, name: str) -> Any:
    origin = typing.get_origin(kind)
    if kind is str:
        return raw
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ConfigError(f"{name} must be true or false")
    if kind is int or kind is float:
        try:
            return kind(raw.strip())
        except ValueError:
            raise ConfigError(f"{name} must be a number") from None
    if origin is tuple:  # comma-separated list of the declared item type
        item_type = typing.get_args(kind)[0]
        return tuple(_convert(item.strip(), item_type, name) for item in raw.split(",") if item.strip())
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return None if raw == "" else _convert(raw, inner[0], name)
    raise TypeError(f"unsupported config type {kind!r} for {name}")


def load_config(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from the environment; ``ConfigError`` names what is wrong."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = field.metadata.get("env", field.name.upper())
        raw = environ.get(name)
        if raw is None or (raw == "" and field.default is _MISSING):
            if field.default is _MISSING:
                raise ConfigError(f"environment variable {name} is required but not set")
            continue
        if field.metadata.get("secret") and isinstance(raw, str):
            raw = raw.strip()  # stored with `echo`, a secret ends in a newline no request carries
            if not raw and field.default is _MISSING:
                raise ConfigError(f"environment variable {name} is set but holds only whitespace")
        values[field.name] = _convert(raw, hints[field.name], name)
    try:
        return cls(**values)
    except ValueError as err:  # __post_init__ validation
        raise ConfigError(str(err)) from None


def secret_values(config: Any) -> list[str]:
    """The values of fields declared ``secret=True`` (for redaction)."""
    if not dataclasses.is_dataclass(config):
        return []
    return [
        str(getattr(config, f.name))
        for f in dataclasses.fields(config)
        if f.metadata.get("secret") and getattr(config, f.name)
    ]
