"""Exactly-once side effects on top of at-least-once Pub/Sub delivery.

A handler claims a key before its side effect and completes the claim after it::

    claim = store.claim(event_key)          # TransientError if another delivery holds it
    if claim.state == "done":
        return                              # already posted / commented / archived
    try:
        post_the_message()
    except BaseException:
        store.release(claim)                # let the redelivery try again at once
        raise
    store.complete(claim, ts=response_ts)

One document per (scope, key) in the state collection (buildkite_events.state). ``create()``
is the lock: Firestore refuses a second create of the same id, so of two racing deliveries
exactly one acquires. A claim is a lease: if its holder dies (instance killed, timeout) the
lease runs out and the next delivery takes it over. Lease age is measured on the server's
clock (document update time vs. the read's time), so instance clock skew cannot cut a live
lease short. Every write after a read is conditional on the document being unchanged.
A claim remembers when it wrote its document, so that ``complete`` and ``release`` of a
claim nobody touched since are one conditional write, without a read first.

``complete`` records "done" even when the caller's lease was lost in the meantime: once
the side effect has happened, remembering that is what keeps later deliveries from
repeating it, whoever owns the lease. ``release`` on the other hand only deletes a
pending claim its caller still owns, and never a done one.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import TransientError
from .state import (
    MAX_CONFLICTS,
    MAX_STORED_KEY,
    SERVER_TIMESTAMP,
    Increment,
    call_options,
    check_kind,
    client,
    document,
    expire_at,
    translated,
    unchanged_since,
    won,
    written,
)

__all__ = ["Claim", "IdempotencyStore"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    key: str
    scope: str
    doc_id: str
    token: str
    state: Literal["acquired", "done"]  # done = the side effect already happened: skip it
    written: dt.datetime | None = field(default=None, compare=False)  # when acquiring wrote the document


class IdempotencyStore:
    def __init__(
        self, *, scope: str, lease_seconds: float = 120, ttl_days: int = 30, firestore_client: Any = None
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.scope = check_kind(scope)
        self.lease_seconds = float(lease_seconds)
        self.ttl = dt.timedelta(days=ttl_days)
        self._client = firestore_client

    def claim(self, key: str) -> Claim:
        """Acquire the key, learn it is done, or raise TransientError while another holds it."""
        ref = self._ref(key)
        token = uuid.uuid4().hex
        with translated("claim"):
            at = written(lambda: ref.create(self._pending(key, token), **call_options()))
            if at is not None:
                return Claim(key, self.scope, ref.id, token, "acquired", at)
            for _ in range(MAX_CONFLICTS):
                found = self._claim_existing(ref, key, token)
                if found is not None:
                    return Claim(key, self.scope, ref.id, token, *found)
        raise TransientError(f"{ref.id} kept changing while being claimed; will try again")

    def complete(self, claim: Claim, **details: str | int | None) -> None:
        """Record that the side effect happened, so later deliveries skip it."""
        if claim.state == "done":
            return
        ref = self._ref(claim.key)
        with translated("complete"):
            unchanged = self._unchanged(claim.written)  # still as acquiring left it: pending, ours
            if unchanged and won(lambda: ref.update(self._done(claim, details), **unchanged, **call_options())):
                return
            for _ in range(MAX_CONFLICTS):
                snapshot = ref.get(**call_options())
                data = (snapshot.to_dict() or {}) if snapshot.exists else {}
                if data.get("state") == "done":
                    log.info("idempotency record %s was already done; keeping the first", ref.id)
                    return
                if data and data.get("owner") != claim.token:
                    # Our lease ran out while the side effect ran. It did happen, so record it
                    # anyway: that is what stops yet another repeat.
                    log.warning("idempotency lease on %s was lost before completion; recording done", ref.id)
                if self._record_done(ref, snapshot, claim, details):
                    return
        raise TransientError(f"{ref.id} kept changing while being completed")

    def release(self, claim: Claim) -> None:
        """After a failed attempt: drop our pending claim so the retry can claim at once."""
        if claim.state == "done":
            return
        ref = self._ref(claim.key)
        with translated("release"):
            unchanged = self._unchanged(claim.written)  # ours only if nobody wrote to it since we acquired it
            if unchanged:
                if not won(lambda: ref.delete(**unchanged, **call_options())):
                    log.info("idempotency record %s is no longer ours to release", ref.id)
                return
            snapshot = ref.get(**call_options())
            data = (snapshot.to_dict() or {}) if snapshot.exists else {}
            mine = data.get("state") == "pending" and data.get("owner") == claim.token
            if not (mine and won(lambda: ref.delete(**unchanged_since(snapshot, self._client), **call_options()))):
                log.info("idempotency record %s is no longer ours to release", ref.id)

    # -- plumbing -------------------------------------------------------------------------

    def _claim_existing(
        self, ref: Any, key: str, token: str
    ) -> tuple[Literal["acquired", "done"], dt.datetime | None] | None:
        """One read and at most one conditional write: the state and, if acquired, when it was
        written; None if another writer came first."""
        snapshot = ref.get(**call_options())
        if not snapshot.exists:  # released between our create() and this read
            at = written(lambda: ref.create(self._pending(key, token), **call_options()))
            return None if at is None else ("acquired", at)
        data = snapshot.to_dict() or {}
        if data.get("state") == "done":
            return "done", None
        lease = float(data.get("lease_seconds") or self.lease_seconds)
        now = snapshot.read_time or dt.datetime.now(dt.UTC)
        # Every write to a pending document (create or takeover) restarts its lease.
        left = (snapshot.update_time + dt.timedelta(seconds=lease) - now).total_seconds()
        if left > 0:
            raise TransientError(f"{ref.id} is being processed by another delivery", retry_after=round(left, 3))
        takeover = {
            "owner": token,
            "previous_owner": data.get("owner"),
            "lease_seconds": self.lease_seconds,
            "attempts": Increment(1),
            "claimed_at": SERVER_TIMESTAMP,
        }
        at = written(lambda: ref.update(takeover, **unchanged_since(snapshot, self._client), **call_options()))
        if at is None:
            return None
        log.warning("idempotency lease on %s expired %.1fs ago; took it over", ref.id, -left)
        return "acquired", at

    def _record_done(self, ref: Any, snapshot: Any, claim: Claim, details: dict[str, Any]) -> bool:
        done = self._done(claim, details)
        if snapshot.exists:
            return won(lambda: ref.update(done, **unchanged_since(snapshot, self._client), **call_options()))
        return won(lambda: ref.create({**self._base(claim.key), **done}, **call_options()))

    def _ref(self, key: str) -> Any:
        return document(self.scope, key, self._client)

    def _unchanged(self, written: dt.datetime | None) -> dict[str, Any]:
        """``option=`` for a write that must fail if the document changed since ``written`` (none: {})."""
        return {} if written is None else {"option": (self._client or client()).write_option(last_update_time=written)}

    def _base(self, key: str) -> dict[str, Any]:
        return {"scope": self.scope, "key": key[:MAX_STORED_KEY]}

    def _pending(self, key: str, token: str) -> dict[str, Any]:
        return {
            **self._base(key),
            "state": "pending",
            "owner": token,
            "lease_seconds": self.lease_seconds,
            "attempts": 1,
            "claimed_at": SERVER_TIMESTAMP,
            # A claim whose holder vanished without release still gets cleaned up.
            "expire_at": expire_at(self.ttl),
        }

    def _done(self, claim: Claim, details: dict[str, Any]) -> dict[str, Any]:
        return {
            "state": "done",
            "completed_by": claim.token,
            "completed_at": SERVER_TIMESTAMP,
            "expire_at": expire_at(self.ttl),
            "details": details,
        }
