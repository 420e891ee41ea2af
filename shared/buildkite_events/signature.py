"""Buildkite webhook authentication: ``X-Buildkite-Token`` or ``X-Buildkite-Signature``.

The signature header is ``timestamp=<unix seconds>,signature=<hex>``: HMAC-SHA256, keyed
with the webhook token, over ``"<timestamp>." + raw body``. Both checks run on raw bytes,
before any JSON parsing, and compare in constant time.

During a token rotation a second, previous token is accepted too, for plain tokens and
signatures alike; every configured token is compared whichever matches, and the answer
says which one did, so the operator sees when the previous one stops being used.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import NamedTuple

MAX_HEADER_LENGTH = 512


class AuthenticationFailed(Exception):
    """Why a request was refused (for logs only; the client always gets the same answer)."""


def _digest(body: bytes, token: str, timestamp: int) -> str:
    return hmac.new(token.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, token: str, timestamp: int) -> str:
    """The header value Buildkite would send for ``body`` at ``timestamp``."""
    return f"timestamp={timestamp},signature={_digest(body, token, timestamp)}"


def parse_signature_header(header: str) -> tuple[int, str]:
    """Order-independent: split on ``,``, then on the first ``=``, trim."""
    if len(header) > MAX_HEADER_LENGTH:
        raise AuthenticationFailed("signature header too long")
    fields: dict[str, str] = {}
    for part in header.split(","):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    timestamp, signature = fields.get("timestamp", ""), fields.get("signature", "")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise AuthenticationFailed("signature header has no valid timestamp")
    if len(signature) != 64 or not all(c in "0123456789abcdefABCDEF" for c in signature):
        raise AuthenticationFailed("signature header has no valid signature")
    return int(timestamp), signature.lower()


def verify_signature(body: bytes, header: str, token: str, *, tolerance_seconds: int, now: float | None = None) -> None:
    """Raise ``AuthenticationFailed`` unless ``header`` signs ``body`` within the time window."""
    _signed_with(body, header, {"current": token}, tolerance_seconds=tolerance_seconds, now=now)


def verify_token(header: str, token: str) -> None:
    _token_of(header, {"current": token})


class Authenticated(NamedTuple):
    method: str  # "signature" or "token"
    token: str  # which token matched: "current" or "previous"


def authenticate(
    body: bytes,
    *,
    token_header: str | None,
    signature_header: str | None,
    token: str,
    previous_token: str | None = None,
    require_signature: bool,
    tolerance_seconds: int,
    now: float | None = None,
) -> Authenticated:
    """Return how the request authenticated and with which token, else raise ``AuthenticationFailed``."""
    tokens = {"current": token, **({"previous": previous_token} if previous_token else {})}
    if signature_header:
        return Authenticated(
            "signature", _signed_with(body, signature_header, tokens, tolerance_seconds=tolerance_seconds, now=now)
        )
    if require_signature:
        raise AuthenticationFailed("signature required but none sent")
    if token_header:
        return Authenticated("token", _token_of(token_header, tokens))
    raise AuthenticationFailed("no X-Buildkite-Token or X-Buildkite-Signature header")


def _signed_with(body: bytes, header: str, tokens: dict[str, str], *, tolerance_seconds: int, now: float | None) -> str:
    timestamp, signature = parse_signature_header(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise AuthenticationFailed("signature timestamp outside the tolerance window")
    return _first_match(
        tokens, lambda token: hmac.compare_digest(_digest(body, token, timestamp), signature), "signature"
    )


def _token_of(header: str, tokens: dict[str, str]) -> str:
    sent = header.encode("utf-8", "replace")
    return _first_match(tokens, lambda token: hmac.compare_digest(sent, token.encode()), "token")


def _first_match(tokens: dict[str, str], matches: Callable[[str], bool], what: str) -> str:
    # Every token is compared (a list, not any()): the time taken does not say which one matched.
    matched = [name for name, token in tokens.items() if matches(token)]
    if not matched:
        raise AuthenticationFailed(f"{what} mismatch")
    return matched[0]
