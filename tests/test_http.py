"""buildkite_events.http: one Retry-After parser, one mapping from HTTP answers to error kinds."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from buildkite_events.errors import ConfigError, FanoutError, InvalidEvent, TransientError
from buildkite_events.http import MAX_RETRY_AFTER, json_object, raise_for, retry_after

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "30"}, 30.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"RETRY-AFTER": " 0 "}, 0.0),
        ({"retry-after": ["7"]}, 7.0),  # slack-sdk keeps header values in lists
        ({"Retry-After": "-1"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "NaN"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "-inf"}, None),
        ({"Retry-After": "1e400"}, None),  # infinite once read
        ({"Retry-After": "1e12"}, MAX_RETRY_AFTER),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": []}, None),
        ({"Retry-After": "Tue, 01 Dec 2026 12:00:30 GMT"}, 30.0),
        ({"Retry-After": "Tue, 01 Dec 2026 11:00:00 GMT"}, 0.0),  # a date in the past: now
        ({"Retry-After": "Wed, 01 Dec 2027 12:00:00 GMT"}, MAX_RETRY_AFTER),
        ({"Retry-After": "Tue, 99 Foo 2026 12:00:30 GMT"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after(headers: Any, expected: float | None) -> None:
    assert retry_after(headers, now=NOW) == expected


def test_retry_after_reads_requests_headers() -> None:
    response = requests.Response()
    response.headers.update({"Retry-After": "12"})
    assert retry_after(response.headers) == 12.0
    when = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert retry_after({"Retry-After": when}, now=NOW) == 90.0


@given(st.text(max_size=40))
def test_retry_after_is_none_or_a_usable_wait(value: str) -> None:
    """Whatever a server sends, the result can go to time.sleep() and be compared with a budget."""
    wait = retry_after({"Retry-After": value}, now=NOW)
    assert wait is None or (math.isfinite(wait) and 0 <= wait <= MAX_RETRY_AFTER)


def _raised(status: int, **kwargs: Any) -> FanoutError | None:
    try:
        raise_for(status, "the API", **kwargs)
    except FanoutError as err:
        return err
    return None


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_success_returns(status: int) -> None:
    assert _raised(status) is None


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_transient_answers(status: int) -> None:
    err = _raised(status, headers={"Retry-After": "3"}, detail="(busy)")
    assert isinstance(err, TransientError)
    assert (err.status, err.retry_after) == (status, 3.0)
    assert str(err) == f"the API answered {status} (busy) (Retry-After 3s)"


def test_a_transient_answer_without_a_usable_hint_leaves_the_wait_to_the_handler() -> None:
    err = _raised(503, headers={"Retry-After": "-1"})
    assert isinstance(err, TransientError) and err.retry_after is None
    assert str(err) == "the API answered 503"


@pytest.mark.parametrize("status", [301, 302, 400, 401, 403, 404, 405, 409, 410, 413, 422])
def test_other_refusals_are_config_errors_with_the_fix(status: int) -> None:
    err = _raised(status, fix="check THE_URL")
    assert isinstance(err, ConfigError) and err.status == status
    assert str(err) == f"the API answered {status}: check THE_URL"


def test_special_cases_per_integration() -> None:
    special: dict[str, Any] = {
        "config": {404: "no such repository for these credentials", range(300, 400): "a redirect"},
        "invalid": {422: "unknown commit", range(400, 500): "refused"},
        "transient": {409},
    }
    kinds = {status: type(_raised(status, **special)) for status in (302, 400, 404, 409, 422, 429, 500)}
    assert kinds == {
        302: ConfigError,
        400: InvalidEvent,  # the range
        404: ConfigError,  # config before invalid
        409: TransientError,
        422: InvalidEvent,
        429: TransientError,  # transient answers come first
        500: TransientError,
    }
    assert str(_raised(404, **special)) == "the API answered 404: no such repository for these credentials"
    assert str(_raised(422, **special)) == "the API answered 422: unknown commit"


def test_a_forbidden_answer_that_means_slow_down_can_be_made_transient() -> None:
    assert isinstance(_raised(403, transient={403}, config={403: "no permission"}), TransientError)
    assert isinstance(_raised(403, config={403: "no permission"}), ConfigError)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"id": 7}', {"id": 7}),
        (b"[1, 2]", {}),  # JSON, but not an object
        (b"<html>502 Bad Gateway</html>", {}),  # a proxy's page
        (b"", {}),
    ],
)
def test_json_object_reads_only_an_object(body: bytes, expected: dict[str, Any]) -> None:
    response = requests.Response()
    response._content, response.status_code = body, 200
    assert json_object(response) == expected
