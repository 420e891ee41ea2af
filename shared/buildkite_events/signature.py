"""Buildkite webhook authentication: ``X-Buildkite-Token`` or ``X-Buildkite-Signature``.

The signature header is ``timestamp=<unix seconds>,signature=<hex>``: HMAC-SHA256, keyed
with the webhook token, over ``"<timestamp>." + raw body``. Both checks run on raw bytes,
before any JSON parsing, and compare in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time

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
    timestamp, signature = parse_signature_header(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise AuthenticationFailed("signature timestamp outside the tolerance window")
    if not hmac.compare_digest(_digest(body, token, timestamp), signature):
        raise AuthenticationFailed("signature mismatch")


def verify_token(header: str, token: str) -> None:
    if not hmac.compare_digest(header.encode("utf-8", "replace"), token.encode()):
        raise AuthenticationFailed("token mismatch")


def authenticate(
    body: bytes,
    *,
    token_header: str | None,
    signature_header: str | None,
    token: str,
    require_signature: bool,
    tolerance_seconds: int,
    now: float | None = None,
) -> str:
    """Return the method that succeeded ("signature" or "token"), else raise."""
    if signature_header:
        verify_signature(body, signature_header, token, tolerance_seconds=tolerance_seconds, now=now)
        return "signature"
    if require_signature:
        raise AuthenticationFailed("signature required but none sent")
    if token_header:
        verify_token(token_header, token)
        return "token"
    raise AuthenticationFailed("no X-Buildkite-Token or X-Buildkite-Signature header")
