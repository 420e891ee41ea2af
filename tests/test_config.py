"""Typed configuration from the environment: env(), load_config(), secret_values()."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import pytest

from buildkite_events import ConfigError, env, load_config
from buildkite_events.config import secret_values


@dataclass(frozen=True)
class Config:
    bucket: str = env("ARCHIVE_BUCKET")
    token: str = env("API_TOKEN", secret=True)
    prefix: str = env("ARCHIVE_PREFIX", default="")
    retries: int = env("RETRIES", default=3)
    ratio: float = env("RATIO", default=0.5)
    enabled: bool = env("ENABLED", default=False)
    keys: tuple[str, ...] = env("PROJECT_KEYS", default=())
    channel: str | None = env("CHANNEL", default=None)
    limit: int | None = env("LIMIT", default=None)
    webhook: str = env("WEBHOOK_URL", default="", secret=True)


REQUIRED = {"ARCHIVE_BUCKET": "my-bucket", "API_TOKEN": "tok-0123456789"}


def _load(**extra: str) -> Config:
    return load_config(Config, {**REQUIRED, **extra})


def test_required_only_gives_defaults() -> None:
    config = _load()
    assert config == Config(
        bucket="my-bucket",
        token="tok-0123456789",
        prefix="",
        retries=3,
        ratio=0.5,
        enabled=False,
        keys=(),
        channel=None,
        limit=None,
        webhook="",
    )


def test_strings_are_kept_verbatim() -> None:
    assert _load(ARCHIVE_PREFIX="  a/b  ").prefix == "  a/b  "
    assert _load(ARCHIVE_PREFIX="ünï").prefix == "ünï"


@pytest.mark.parametrize(("raw", "value"), [("42", 42), (" 7 ", 7), ("-1", -1), ("0", 0)])
def test_int(raw: str, value: int) -> None:
    assert _load(RETRIES=raw).retries == value


@pytest.mark.parametrize(("raw", "value"), [("1.25", 1.25), ("2", 2.0), (" 3e2 ", 300.0), ("-0.5", -0.5)])
def test_float(raw: str, value: float) -> None:
    assert _load(RATIO=raw).ratio == value


@pytest.mark.parametrize("raw", ["abc", "4.2", "1,000", "0x10", "", " "])
def test_invalid_int_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(RETRIES=raw)
    assert "RETRIES" in str(err.value)


@pytest.mark.parametrize("raw", ["abc", "1,5", ""])
def test_invalid_float_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(RATIO=raw)
    assert "RATIO" in str(err.value)


@pytest.mark.parametrize("raw", ["1", "true", "True", "TRUE", "yes", "YES", "on", " On ", "true\n"])
def test_bool_true(raw: str) -> None:
    assert _load(ENABLED=raw).enabled is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "off", "OFF", " false "])
def test_bool_false(raw: str) -> None:
    assert _load(ENABLED=raw).enabled is False


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled", "t"])
def test_invalid_bool_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(ENABLED=raw)
    assert "ENABLED" in str(err.value)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("PROJ", ("PROJ",)),
        ("PROJ,OPS", ("PROJ", "OPS")),
        (" PROJ , OPS ,, ", ("PROJ", "OPS")),
        ("", ()),
        (",", ()),
    ],
)
def test_tuple_is_a_comma_list(raw: str, value: tuple[str, ...]) -> None:
    assert _load(PROJECT_KEYS=raw).keys == value


@dataclass(frozen=True)
class Numbers:
    ports: tuple[int, ...] = env("PORTS", default=())


def test_tuple_items_are_converted_to_the_declared_type() -> None:
    assert load_config(Numbers, {"PORTS": "80, 443"}).ports == (80, 443)


def test_optional_fields() -> None:
    assert _load(CHANNEL="#builds").channel == "#builds"
    assert _load(CHANNEL="").channel is None
    assert _load().channel is None
    assert _load(LIMIT="10").limit == 10
    assert _load(LIMIT="").limit is None
    with pytest.raises(ConfigError, match="LIMIT"):
        _load(LIMIT="ten")


@dataclass(frozen=True)
class OldStyle:
    channel: Optional[str] = env("CHANNEL", default=None)  # noqa: UP045 - the older spelling must work too


def test_optional_old_spelling() -> None:
    assert load_config(OldStyle, {"CHANNEL": "#x"}).channel == "#x"
    assert load_config(OldStyle, {"CHANNEL": ""}).channel is None


@pytest.mark.parametrize("missing", ["ARCHIVE_BUCKET", "API_TOKEN"])
def test_missing_required_variable_is_named(missing: str) -> None:
    environ = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(ConfigError) as err:
        load_config(Config, environ)
    assert missing in str(err.value)


@pytest.mark.parametrize("missing", ["ARCHIVE_BUCKET", "API_TOKEN"])
def test_empty_required_variable_counts_as_missing(missing: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(Config, {**REQUIRED, missing: ""})
    assert missing in str(err.value)


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RETRIES", "9")
    monkeypatch.delenv("ENABLED", raising=False)
    config = load_config(Config)
    assert config.bucket == "my-bucket" and config.retries == 9 and config.enabled is False


def test_field_without_env_uses_its_upper_case_name() -> None:
    @dataclass(frozen=True)
    class Plain:
        region: str = "us-central1"
        project: str = dataclasses.field(default="p")

    assert load_config(Plain, {"REGION": "europe-west1"}) == Plain(region="europe-west1", project="p")


def test_secret_is_not_in_repr_or_errors() -> None:
    config = _load(WEBHOOK_URL="https://hooks.example.com/services/T0/B0/XYZsecret")
    text = repr(config) + str(config)
    assert "tok-0123456789" not in text
    assert "XYZsecret" not in text
    assert "my-bucket" in text  # other fields still show


def test_invalid_secret_value_is_not_in_the_error() -> None:
    @dataclass(frozen=True)
    class SecretNumber:
        pin: int = env("PIN", secret=True)

    with pytest.raises(ConfigError) as err:
        load_config(SecretNumber, {"PIN": "hunter2-not-a-number"})
    assert "PIN" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_secret_values() -> None:
    assert secret_values(_load()) == ["tok-0123456789"]  # empty secrets are left out
    webhook = "https://hooks.example.com/services/T0/B0/XYZsecret"
    assert sorted(secret_values(_load(WEBHOOK_URL=webhook))) == sorted(["tok-0123456789", webhook])
    assert secret_values({"token": "x"}) == []


def test_post_init_validation_becomes_config_error() -> None:
    @dataclass(frozen=True)
    class Validated:
        retries: int = env("RETRIES", default=3)

        def __post_init__(self) -> None:
            if self.retries < 0:
                raise ValueError("RETRIES must not be negative")

    assert load_config(Validated, {"RETRIES": "2"}).retries == 2
    with pytest.raises(ConfigError, match="RETRIES must not be negative"):
        load_config(Validated, {"RETRIES": "-2"})


def test_unsupported_type_is_a_programming_error() -> None:
    @dataclass(frozen=True)
    class Weird:
        items: list[str] = env("ITEMS", default=None)  # noqa: RUF009

    with pytest.raises(TypeError, match="ITEMS"):
        load_config(Weird, {"ITEMS": "a,b"})


def test_env_metadata() -> None:
    field: Any = {f.name: f for f in dataclasses.fields(Config)}["token"]
    assert field.metadata["env"] == "API_TOKEN"
    assert field.metadata["secret"] is True
    assert field.repr is False
    plain: Any = {f.name: f for f in dataclasses.fields(Config)}["bucket"]
    assert plain.repr is True and plain.metadata["secret"] is False
