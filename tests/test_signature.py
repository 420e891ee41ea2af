"""Webhook authentication: X-Buildkite-Token and X-Buildkite-Signature (HMAC-SHA256)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest

from buildkite_events import signature as sig
from buildkite_events.signature import (
    MAX_HEADER_LENGTH,
    AuthenticationFailed,
    authenticate,
    parse_signature_header,
    sign,
    verify_signature,
    verify_token,
)
from tests.support import FIXTURES

VECTORS: list[dict[str, Any]] = json.loads((FIXTURES / "signatures" / "vectors.json").read_text())
TOLERANCE = 300


def _body(vector: dict[str, Any]) -> bytes:
    body = (FIXTURES / vector["body_file"]).read_bytes()
    assert len(body) == vector["body_bytes"]
    assert hashlib.sha256(body).hexdigest() == vector["body_sha256"]
    return body


def _parts(header: str) -> tuple[str, str]:
    fields = dict(part.split("=", 1) for part in header.split(","))
    return fields["timestamp"], fields["signature"]


@pytest.fixture(params=VECTORS, ids=[v["name"] for v in VECTORS])
def vector(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(request.param)


def _check(vector: dict[str, Any], header: str, *, body: bytes | None = None, now: float | None = None) -> None:
    verify_signature(
        _body(vector) if body is None else body,
        header,
        vector["token"],
        tolerance_seconds=TOLERANCE,
        now=vector["timestamp"] if now is None else now,
    )


# --- the vectors ------------------------------------------------------------------------------


def test_vectors_are_there() -> None:
    assert len(VECTORS) == 2


def test_vector_verifies(vector: dict[str, Any]) -> None:
    _check(vector, vector["expected_header"])
    assert authenticate(
        _body(vector),
        token_header=None,
        signature_header=vector["expected_header"],
        token=vector["token"],
        require_signature=True,
        tolerance_seconds=TOLERANCE,
        now=vector["timestamp"],
    ) == ("signature", "current")


def test_sign_reproduces_the_vector(vector: dict[str, Any]) -> None:
    assert sign(_body(vector), vector["token"], vector["timestamp"]) == vector["expected_header"]


def test_parse_header_of_the_vector(vector: dict[str, Any]) -> None:
    timestamp, signature = _parts(vector["expected_header"])
    assert parse_signature_header(vector["expected_header"]) == (int(timestamp), signature)


@pytest.mark.parametrize(
    "reshape",
    [
        lambda t, s: f"signature={s},timestamp={t}",
        lambda t, s: f" timestamp = {t} , signature = {s} ",
        lambda t, s: f"timestamp={t},\tsignature={s}\n",
        lambda t, s: f"Timestamp={t},Signature={s}",
        lambda t, s: f"timestamp={t},signature={s.upper()}",
        lambda t, s: f"version=1,signature={s},timestamp={t}",
        lambda t, s: f"timestamp={t},signature={s},",
    ],
    ids=["reordered", "spaces", "tab-newline", "capitalised-names", "upper-hex", "extra-field", "trailing-comma"],
)
def test_header_order_and_whitespace_do_not_matter(vector: dict[str, Any], reshape: Callable[[str, str], str]) -> None:
    _check(vector, reshape(*_parts(vector["expected_header"])))


# --- what must fail ---------------------------------------------------------------------------


def test_one_changed_body_byte_fails(vector: dict[str, Any]) -> None:
    body = bytearray(_body(vector))
    for index in (0, len(body) // 2, len(body) - 1):
        changed = bytearray(body)
        changed[index] ^= 0x01
        with pytest.raises(AuthenticationFailed, match="mismatch"):
            _check(vector, vector["expected_header"], body=bytes(changed))
    with pytest.raises(AuthenticationFailed):
        _check(vector, vector["expected_header"], body=bytes(body) + b"\n")  # a trailing newline matters


def test_reformatted_json_body_fails(vector: dict[str, Any]) -> None:
    pretty = json.dumps(json.loads(_body(vector)), indent=2).encode()
    with pytest.raises(AuthenticationFailed):
        _check(vector, vector["expected_header"], body=pretty)


def test_wrong_token_fails(vector: dict[str, Any]) -> None:
    with pytest.raises(AuthenticationFailed, match="mismatch"):
        verify_signature(
            _body(vector),
            vector["expected_header"],
            vector["token"][:-1] + "x",
            tolerance_seconds=TOLERANCE,
            now=vector["timestamp"],
        )


def test_signature_of_another_timestamp_fails(vector: dict[str, Any]) -> None:
    _, signature = _parts(vector["expected_header"])
    ts = vector["timestamp"] + 1
    with pytest.raises(AuthenticationFailed, match="mismatch"):
        _check(vector, f"timestamp={ts},signature={signature}", now=ts)


@pytest.mark.parametrize("offset", [TOLERANCE + 1, -(TOLERANCE + 1), 86_400, -86_400, 10**9])
def test_stale_and_future_timestamps_are_refused(vector: dict[str, Any], offset: int) -> None:
    with pytest.raises(AuthenticationFailed, match="tolerance"):
        _check(vector, vector["expected_header"], now=vector["timestamp"] + offset)


@pytest.mark.parametrize("offset", [0, TOLERANCE, -TOLERANCE, 0.5, -299.9])
def test_timestamps_inside_the_window_are_accepted(vector: dict[str, Any], offset: float) -> None:
    _check(vector, vector["expected_header"], now=vector["timestamp"] + offset)


def test_a_fresh_signature_verifies_against_the_real_clock() -> None:
    import time

    now = int(time.time())
    header = sign(b"{}", "tok", now)
    verify_signature(b"{}", header, "tok", tolerance_seconds=60)
    with pytest.raises(AuthenticationFailed):
        verify_signature(b"{}", sign(b"{}", "tok", now - 3600), "tok", tolerance_seconds=60)


GOOD_SIG = "a" * 64


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "timestamp=1642080837",
        f"signature={GOOD_SIG}",
        f"timestamp=,signature={GOOD_SIG}",
        "timestamp=1642080837,signature=",
        f"timestamp=abc,signature={GOOD_SIG}",
        f"timestamp=-1642080837,signature={GOOD_SIG}",
        f"timestamp=1642080837.5,signature={GOOD_SIG}",
        f"timestamp=１６４２０８０８３７,signature={GOOD_SIG}",  # full-width digits
        f"timestamp=1642080837,signature={'g' * 64}",
        f"timestamp=1642080837,signature={'a' * 63}",
        f"timestamp=1642080837,signature={'a' * 65}",
        f"timestamp=1642080837,signature={'a' * 128}",
        f"timestamp=1642080837,signature=0x{'a' * 62}",
        f"timestamp=1642080837,signature={'é' * 64}",
        f"timestamp=1642080837;signature={GOOD_SIG}",
        f"timestamp 1642080837,signature {GOOD_SIG}",
        f"timestamp={'9' * 13},signature={GOOD_SIG}",
        f"timestamp={'9' * 5000},signature={GOOD_SIG}",
        f"timestamp=1642080837,signature={GOOD_SIG}," + "x=y," * 200,
        "=" * 10_000,
        "," * 10_000,
    ],
)
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(AuthenticationFailed) as err:
        parse_signature_header(header)
    assert str(err.value)
    with pytest.raises(AuthenticationFailed):
        verify_signature(b"{}", header, "tok", tolerance_seconds=10**12, now=1642080837)


def test_header_length_limit() -> None:
    header = sign(b"{}", "tok", 1642080837)
    padded = header + " " * (MAX_HEADER_LENGTH - len(header))
    assert len(padded) == MAX_HEADER_LENGTH
    verify_signature(b"{}", padded, "tok", tolerance_seconds=1, now=1642080837)
    with pytest.raises(AuthenticationFailed, match="too long"):
        parse_signature_header(padded + " ")


# --- token ------------------------------------------------------------------------------------


def test_token_matches() -> None:
    verify_token("29b1ff5779c76bd48ba6705eb99ff970", "29b1ff5779c76bd48ba6705eb99ff970")


@pytest.mark.parametrize(
    "header",
    [
        "29b1ff5779c76bd48ba6705eb99ff97",
        "29b1ff5779c76bd48ba6705eb99ff9700",
        "29B1FF5779C76BD48BA6705EB99FF970",
        " 29b1ff5779c76bd48ba6705eb99ff970",
        "",
        "tökén",
        "\ud800",
        "x" * 100_000,
    ],
)
def test_token_mismatch(header: str) -> None:
    with pytest.raises(AuthenticationFailed, match="mismatch"):
        verify_token(header, "29b1ff5779c76bd48ba6705eb99ff970")


def test_non_ascii_token_can_match() -> None:
    verify_token("tökén-ünïcødé", "tökén-ünïcødé")


# --- authenticate -----------------------------------------------------------------------------


def _auth(**kwargs: Any) -> tuple[str, str]:
    params: dict[str, Any] = {
        "token_header": None,
        "signature_header": None,
        "token": "secret-token",
        "require_signature": False,
        "tolerance_seconds": TOLERANCE,
        "now": 1_700_000_000,
    }
    params.update(kwargs)
    return authenticate(b'{"event":"ping"}', **params)


def test_token_auth() -> None:
    assert _auth(token_header="secret-token") == ("token", "current")
    with pytest.raises(AuthenticationFailed):
        _auth(token_header="wrong")


def test_require_signature_refuses_token_auth() -> None:
    with pytest.raises(AuthenticationFailed, match="signature required"):
        _auth(token_header="secret-token", require_signature=True)


def test_signature_auth() -> None:
    header = sign(b'{"event":"ping"}', "secret-token", 1_700_000_000)
    assert _auth(signature_header=header) == ("signature", "current")
    assert _auth(signature_header=header, require_signature=True) == ("signature", "current")


def test_a_bad_signature_is_not_rescued_by_a_good_token() -> None:
    bad = sign(b'{"event":"ping"}', "other-token", 1_700_000_000)
    with pytest.raises(AuthenticationFailed):
        _auth(signature_header=bad, token_header="secret-token")


def test_no_credentials_at_all() -> None:
    with pytest.raises(AuthenticationFailed):
        _auth()
    with pytest.raises(AuthenticationFailed):
        _auth(token_header="", signature_header="")


@pytest.fixture
def comparisons(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Every call to hmac.compare_digest, as it happens."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(sig.hmac, "compare_digest", spy)
    return calls


def test_comparisons_go_through_compare_digest(comparisons: list[tuple[Any, Any]]) -> None:
    calls = comparisons
    header = sign(b"{}", "tok", 1_700_000_000)
    verify_signature(b"{}", header, "tok", tolerance_seconds=1, now=1_700_000_000)
    assert len(calls) == 1
    with pytest.raises(AuthenticationFailed):
        verify_token("nope", "tok")
    verify_token("tok", "tok")
    assert len(calls) == 3


# --- token rotation: a previous token, accepted while configured -------------------------------


def _sent_with(method: str, token: str) -> dict[str, str]:
    if method == "token":
        return {"token_header": token}
    return {"signature_header": sign(b'{"event":"ping"}', token, 1_700_000_000)}


@pytest.mark.parametrize("method", ["token", "signature"])
def test_the_previous_token_is_accepted_only_while_configured(method: str) -> None:
    sent = _sent_with(method, "old-token")
    assert _auth(**sent, previous_token="old-token") == (method, "previous")
    with pytest.raises(AuthenticationFailed, match="mismatch"):
        _auth(**sent)  # rotation finished: the old token is gone
    with pytest.raises(AuthenticationFailed, match="mismatch"):
        _auth(**sent, previous_token="")


@pytest.mark.parametrize("method", ["token", "signature"])
def test_the_current_token_still_matches_during_a_rotation(method: str) -> None:
    assert _auth(**_sent_with(method, "secret-token"), previous_token="old-token") == (method, "current")


def test_every_token_is_compared_whichever_matches(comparisons: list[tuple[Any, Any]]) -> None:
    """Constant time across tokens: a match on the first does not skip the second."""
    calls = comparisons
    assert _auth(token_header="secret-token", previous_token="old-token") == ("token", "current")
    assert len(calls) == 2
    calls.clear()
    header = sign(b'{"event":"ping"}', "old-token", 1_700_000_000)
    assert _auth(signature_header=header, previous_token="old-token") == ("signature", "previous")
    assert len(calls) == 2
