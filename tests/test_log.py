"""Structured JSON logs: shape, context, redaction (trace fields: test_tracing.py)."""

from __future__ import annotations

import base64
import calendar
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import pytest

from buildkite_events import ConfigError
from buildkite_events import log as log_module
from buildkite_events.log import (
    REDACTED,
    JsonFormatter,
    configure_logging,
    log,
    log_context,
    logger,
    redact,
    register_secrets,
)
from tests.support import log_lines

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(autouse=True)
def fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(log_module, "_secrets", [])
    monkeypatch.setattr(log_module, "_base64_secrets", [])
    yield


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    configure_logging()
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    capsys.readouterr()

    def read() -> list[dict[str, Any]]:
        return log_lines(capsys.readouterr().out)

    yield read
    logger.setLevel(previous)


def test_one_json_line_per_record(lines: Any) -> None:
    before = time.time()
    log(logging.INFO, "hello", outcome="done", count=3)
    log(logging.WARNING, "careful")
    log(logging.ERROR, "broken")
    log(logging.DEBUG, "detail")
    out = lines()
    assert [line["message"] for line in out] == ["hello", "careful", "broken", "detail"]
    assert [line["severity"] for line in out] == ["INFO", "WARNING", "ERROR", "DEBUG"]
    first = out[0]
    assert first["outcome"] == "done" and first["count"] == 3
    assert TIME.match(first["time"])
    stamp = calendar.timegm(time.strptime(first["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert before - 2 <= stamp <= time.time() + 1


def test_configure_logging_is_idempotent(lines: Any) -> None:
    configure_logging()
    configure_logging()
    json_handlers = [h for h in logger.handlers if isinstance(h.formatter, JsonFormatter)]
    assert len(json_handlers) == 1
    log(logging.INFO, "once")
    assert [line["message"] for line in lines()] == ["once"]


@pytest.mark.parametrize("level", ["debug", "Warning", "ERROR"])
def test_log_level_from_the_environment(monkeypatch: pytest.MonkeyPatch, level: str) -> None:
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setattr(logger, "propagate", logger.propagate)
    monkeypatch.setenv("LOG_LEVEL", level)
    configure_logging()
    assert logger.level == logging.getLevelName(level.upper())


@pytest.mark.parametrize("level", ["verbose", "10", ""])
def test_unknown_log_level_is_a_config_error_or_ignored(monkeypatch: pytest.MonkeyPatch, level: str) -> None:
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setattr(logger, "propagate", logger.propagate)
    monkeypatch.setenv("LOG_LEVEL", level)
    try:
        configure_logging()
    except ConfigError as err:
        assert "LOG_LEVEL" in str(err)
    else:
        assert logger.level in (logging.INFO, logging.DEBUG, logging.WARNING)


def test_percent_signs_in_messages_are_literal(lines: Any) -> None:
    log(logging.INFO, "100% done %s %(x)s")
    assert lines()[0]["message"] == "100% done %s %(x)s"


def test_non_json_values_are_stringified(lines: Any) -> None:
    log(logging.INFO, "odd", when=time.gmtime(0), obj=object(), text="ünïcødé")
    line = lines()[0]
    assert line["text"] == "ünïcødé"
    assert isinstance(line["obj"], str)


def test_context_is_added_to_every_line_inside_the_block(lines: Any) -> None:
    with log_context(function="slack-notify", event_type="build.finished", skipped=None):
        log(logging.INFO, "one")
        with log_context(build_number=2042, function="overridden"):
            log(logging.INFO, "two", extra_field="x")
        log(logging.INFO, "three")
    log(logging.INFO, "outside")
    one, two, three, outside = lines()
    assert one["function"] == "slack-notify" and one["event_type"] == "build.finished"
    assert "skipped" not in one  # None values are left out
    assert two["function"] == "overridden" and two["build_number"] == 2042 and two["extra_field"] == "x"
    assert three["function"] == "slack-notify" and "build_number" not in three
    assert "function" not in outside and "event_type" not in outside


def test_context_is_restored_after_an_exception(lines: Any) -> None:
    with pytest.raises(RuntimeError), log_context(function="f"):
        raise RuntimeError("x")
    log(logging.INFO, "after")
    assert "function" not in lines()[0]


def test_exception_is_summarised(lines: Any) -> None:
    try:
        raise ValueError("bad value 42")
    except ValueError:
        logger.exception("it failed")
    line = lines()[0]
    assert line["severity"] == "ERROR"
    assert line["error"] == "ValueError: bad value 42"


# --- redaction --------------------------------------------------------------------------------


def test_registered_secret_is_redacted_everywhere(lines: Any) -> None:
    token = "xoxb-1234567890-abcdef"
    register_secrets([token])
    with log_context(header=f"Bearer {token}"):
        log(logging.INFO, f"token is {token}", field=token, nested={"t": [token]})
    raw_line = json.dumps(lines()[0])
    assert token not in raw_line
    assert raw_line.count(REDACTED) == 4


def test_secret_url_path_and_query_in_an_exception_are_redacted(lines: Any) -> None:
    url = (
        "https://prod-12.westus.logic.azure.com:443/workflows/0a1b2c/triggers/manual/paths/invoke"
        "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=S3CR3T-SIG-value"
    )
    slack = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
    register_secrets([url, slack])
    path_query = url.split(":443", 1)[1]
    try:
        raise ConnectionError(
            f"HTTPSConnectionPool(host='prod-12.westus.logic.azure.com', port=443): Max retries exceeded "
            f"with url: {path_query} (Caused by NewConnectionError('failed'))"
        )
    except ConnectionError:
        logger.exception("teams post failed")
    try:
        raise RuntimeError("404 Client Error for url: /services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX")
    except RuntimeError:
        logger.exception("slack post failed")
    log(logging.INFO, "query only", query=url.split("?", 1)[1])
    out = json.dumps(lines())
    assert "S3CR3T-SIG-value" not in out
    assert "XXXXXXXXXXXXXXXXXXXXXXXX" not in out
    assert "prod-12.westus.logic.azure.com" in out  # the host is not a secret
    assert out.count(REDACTED) >= 3


def test_longest_secret_wins() -> None:
    register_secrets(["https://example.com/hook/abcdef123", "abcdef"])
    assert redact("see https://example.com/hook/abcdef123 and abcdef") == f"see {REDACTED} and {REDACTED}"


def test_short_secrets_are_not_registered() -> None:
    register_secrets(["abc", "", "12345"])
    assert redact("abc 12345") == "abc 12345"


def test_register_is_idempotent() -> None:
    register_secrets(["secret-value"])
    register_secrets(["secret-value"])
    assert log_module._secrets.count("secret-value") == 1


@pytest.mark.parametrize(
    "secret",
    [
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----\n",
        'pass"word-123',
        "back\\slash-123",
    ],
    ids=["pem-newlines", "quote", "backslash"],
)
def test_secrets_with_json_escaped_characters_are_redacted(lines: Any, secret: str) -> None:
    register_secrets([secret])
    log(logging.ERROR, f"could not load key {secret}")
    assert secret not in lines()[0]["message"]


# --- every form a secret takes on its way into a log line ------------------------------------

TEAMS_URL = (
    "https://prod-12.westus.logic.azure.com:443/workflows/0a1b2c/triggers/manual/paths/invoke"
    "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=Ab%2Bcd_S3CR3T-sig%3D"
)


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(lambda s: quote(s, safe=""), id="url-encoded"),
        pytest.param(quote_plus, id="form-encoded"),
        pytest.param(
            lambda s: f"Authorization: Basic {base64.b64encode(f'bot@example.com:{s}'.encode()).decode()}", id="basic"
        ),
        pytest.param(lambda s: f"Basic {base64.b64encode(f'x:{s}'.encode()).decode()}", id="basic-other-user"),
        pytest.param(lambda s: f"Basic {base64.b64encode(f'ab:{s}'.encode()).decode()}", id="basic-third-alignment"),
        pytest.param(lambda s: base64.b64encode(s.encode()).decode(), id="base64"),
        pytest.param(lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="), id="base64-urlsafe"),
        pytest.param(lambda s: json.dumps({"auth": base64.b64encode(s.encode()).decode()}), id="base64-in-json"),
    ],
)
def test_encoded_forms_of_a_secret_are_redacted(lines: Any, form: Any) -> None:
    secret = "tok/en+with=odd&chars-9f3k2m"
    register_secrets([secret])
    log(logging.WARNING, f"request failed: {form(secret)}", header=form(secret))
    out = json.dumps(lines())
    assert form(secret) not in out
    assert out.count(REDACTED) == 2


def test_a_percent_encoded_secret_is_redacted_decoded_too(lines: Any) -> None:
    register_secrets([TEAMS_URL])
    log(logging.INFO, "decoded", url=unquote(TEAMS_URL), sig="Ab+cd_S3CR3T-sig=")
    out = json.dumps(lines())
    assert "S3CR3T" not in out


def test_the_sig_of_a_teams_workflows_url_is_redacted_on_its_own(lines: Any) -> None:
    register_secrets([TEAMS_URL])
    log(logging.ERROR, "retrying with sig=Ab%2Bcd_S3CR3T-sig%3D after 429", extra="Ab%2Bcd_S3CR3T-sig%3D")
    out = json.dumps(lines())
    assert "S3CR3T" not in out
    assert "retrying with sig=" in out  # only the value goes


def test_base64_redaction_does_not_eat_innocent_words(lines: Any) -> None:
    register_secrets(["a-webhook-token-1234"])
    log(logging.INFO, "Basic dXNlcjpvdGhlci10b2tlbg== and c29tZXRoaW5nIGVsc2U= stay")
    assert lines()[0]["message"] == "Basic dXNlcjpvdGhlci10b2tlbg== and c29tZXRoaW5nIGVsc2U= stay"


def test_a_secret_with_a_trailing_newline_is_redacted_without_it(lines: Any) -> None:
    register_secrets(["stored-with-echo-77\n"])
    log(logging.INFO, "token stored-with-echo-77 used")
    assert "stored-with-echo-77" not in lines()[0]["message"]
