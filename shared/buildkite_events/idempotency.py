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

One Firestore document per (scope, key). ``create()`` is the lock: Firestore refuses a
second create of the same id, so of two racing deliveries exactly one acquires. A claim
is a lease: if its holder dies (instance killed, timeout) the lease runs out and the
next delivery takes it over inside a transaction. Lease age is measured on the server's
clock (document update time vs. the transaction's read time), so instance clock skew
cannot cut a live lease short.

``complete`` records "done" even when the caller's lease was lost in the meantime: once
the side effect has happened, remembering that is what keeps later deliveries from
repeating it, whoever owns the lease. ``release`` on the other hand only deletes a
pending claim its caller still owns, and never a done one.

Give the collection a Firestore TTL policy on ``expire_at`` so old records disappear.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from buildkite_events.errors import ConfigError, FanoutError, TransientError

__all__ = ["Claim", "IdempotencyStore"]

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "buildkite-fanout-idempotency"
_SCOPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_MAX_STORED_KEY = 1024  # the key is kept for people reading the collection, not for lookups


@dataclass(frozen=True)
class Claim:
    key: str
    scope: str
    doc_id: str
    token: str
    state: Literal["acquired", "done"]  # done = the side effect already happened: skip it


class IdempotencyStore:
    def __init__(
        self,
        *,
        scope: str,
        collection: str = DEFAULT_COLLECTION,
        lease_seconds: float = 120,
        ttl_days: int = 30,
        client: Any | None = None,
        project: str | None = None,
        rpc_timeout: float = 10.0,
    ) -> None:
        if not _SCOPE_RE.match(scope):
            raise ValueError(f"scope must match {_SCOPE_RE.pattern}, got {scope!r}")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.scope = scope
        self.collection = collection
        self.lease_seconds = float(lease_seconds)
        self.ttl = dt.timedelta(days=ttl_days)
        self.rpc_timeout = rpc_timeout
        self._project = project
        self._client = client
        self._client_lock = threading.Lock()

    # -- public API -------------------------------------------------------------------

    def doc_id(self, key: str) -> str:
        # Keys may be long or contain "/", which Firestore ids cannot.
        return f"{self.scope}:{hashlib.sha256(key.encode()).hexdigest()[:40]}"

    def claim(self, key: str) -> Claim:
        """Acquire the key, learn it is done, or raise TransientError while another holds it."""
        if not key:
            raise ValueError("idempotency key must not be empty")
        from google.api_core.exceptions import AlreadyExists

        doc_id = self.doc_id(key)
        token = uuid.uuid4().hex
        ref = self._ref(doc_id)
        with self._translated("claim"):
            try:
                ref.create(self._pending_doc(key, token), timeout=self.rpc_timeout)
                return Claim(key, self.scope, doc_id, token, "acquired")
            except AlreadyExists:
                pass
            state = self._run_in_transaction(self._claim_existing, ref, key, token)
        return Claim(key, self.scope, doc_id, token, state)

    def complete(self, claim: Claim, **details: str | int | None) -> None:
        """Record that the side effect happened, so later deliveries skip it."""
        if claim.state == "done":
            return
        with self._translated("complete"):
            self._run_in_transaction(self._complete, self._ref(claim.doc_id), claim, details)

    def release(self, claim: Claim) -> None:
        """After a failed attempt: drop our pending claim so the retry can claim at once."""
        if claim.state == "done":
            return
        with self._translated("release"):
            self._run_in_transaction(self._release, self._ref(claim.doc_id), claim)

    # -- transaction bodies (may run more than once on contention) ---------------------

    def _claim_existing(self, txn: Any, ref: Any, key: str, token: str) -> str:
        snap = ref.get(transaction=txn, timeout=self.rpc_timeout)
        if not snap.exists:  # released between our create() and this read
            txn.create(ref, self._pending_doc(key, token))
            return "acquired"
        data = snap.to_dict() or {}
        if data.get("state") == "done":
            return "done"
        lease = float(data.get("lease_seconds") or self.lease_seconds)
        now = snap.read_time or dt.datetime.now(dt.UTC)
        # Every write to a pending doc (create or takeover) restarts its lease.
        remaining = (snap.update_time + dt.timedelta(seconds=lease) - now).total_seconds()
        if remaining > 0:
            raise TransientError(
                f"{ref.id} is being processed by another delivery",
                retry_after=round(remaining, 3),
            )
        from google.cloud import firestore

        log.warning("idempotency lease on %s expired %.1fs ago; taking it over", ref.id, -remaining)
        txn.update(
            ref,
            {
                "owner": token,
                "previous_owner": data.get("owner"),
                "lease_seconds": self.lease_seconds,
                "attempts": firestore.Increment(1),
                "claimed_at": firestore.SERVER_TIMESTAMP,
            },
        )
        return "acquired"

    def _complete(self, txn: Any, ref: Any, claim: Claim, details: dict[str, Any]) -> None:
        snap = ref.get(transaction=txn, timeout=self.rpc_timeout)
        data = (snap.to_dict() or {}) if snap.exists else {}
        if data.get("state") == "done":
            log.info("idempotency record %s was already done; keeping the first", ref.id)
            return
        from google.cloud import firestore

        done = {
            "state": "done",
            "completed_by": claim.token,
            "completed_at": firestore.SERVER_TIMESTAMP,
            "expire_at": self._expire_at(),
            "details": details,
        }
        if data.get("owner") == claim.token:
            txn.update(ref, done)
            return
        # Our lease ran out (or the doc vanished) while the side effect ran. It did
        # happen, so record it anyway: that is what stops yet another repeat.
        log.warning("idempotency lease on %s was lost before completion; recording done", ref.id)
        txn.set(ref, {**self._base_doc(claim.key), **done, "owner": data.get("owner")})

    def _release(self, txn: Any, ref: Any, claim: Claim) -> None:
        snap = ref.get(transaction=txn, timeout=self.rpc_timeout)
        if not snap.exists:
            return
        data = snap.to_dict() or {}
        if data.get("state") == "pending" and data.get("owner") == claim.token:
            txn.delete(ref)
        else:
            log.info("idempotency record %s is no longer ours to release", ref.id)

    # -- plumbing -----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        # Created on first use, not at import or construction: cold starts stay cheap
        # for deliveries that never reach a side effect.
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    from google.cloud import firestore

                    with self._translated("connect"):
                        self._client = firestore.Client(project=self._project)
        return self._client

    def _ref(self, doc_id: str) -> Any:
        return self.client.collection(self.collection).document(doc_id)

    def _run_in_transaction(self, body: Any, *args: Any) -> Any:
        from google.cloud import firestore

        return firestore.transactional(body)(self.client.transaction(), *args)

    def _base_doc(self, key: str) -> dict[str, Any]:
        return {"scope": self.scope, "key": key[:_MAX_STORED_KEY]}

    def _pending_doc(self, key: str, token: str) -> dict[str, Any]:
        from google.cloud import firestore

        return {
            **self._base_doc(key),
            "state": "pending",
            "owner": token,
            "lease_seconds": self.lease_seconds,
            "attempts": 1,
            "claimed_at": firestore.SERVER_TIMESTAMP,
            # A claim whose holder vanished without release still gets cleaned up.
            "expire_at": self._expire_at(),
        }

    def _expire_at(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.ttl

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Map Firestore failures onto the project's error kinds (see buildkite_events.errors)."""
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import DefaultCredentialsError

        what = f"Firestore {action} in {self.collection!r}"
        try:
            yield
        except FanoutError:
            raise
        except (
            gexc.PermissionDenied,
            gexc.Unauthenticated,
            gexc.NotFound,  # database missing or collection path invalid
            gexc.FailedPrecondition,  # e.g. a Datastore-mode database
            DefaultCredentialsError,
        ) as err:
            raise ConfigError(f"{what} failed: {type(err).__name__}: {err}") from err
        except (
            gexc.Aborted,
            gexc.DeadlineExceeded,
            gexc.ServiceUnavailable,
            gexc.InternalServerError,
            gexc.TooManyRequests,
            gexc.RetryError,
        ) as err:
            raise TransientError(f"{what} failed: {type(err).__name__}: {err}") from err
        except ValueError as err:
            # The transaction helper wraps "Aborted too many times" in a ValueError.
            if isinstance(err.__cause__, gexc.Aborted):
                raise TransientError(f"{what} kept conflicting: {err}") from err
            raise
