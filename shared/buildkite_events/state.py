"""Our own state in Firestore: one client, one error mapping, one collection, one time budget.

Two kinds of document share the collection named by ``STATE_COLLECTION`` (a function's
manifest sets it from ``${state_collection}``, which Terraform fills in from
``var.state_collection``). Each carries ``expire_at`` for the collection's TTL policy.

- Claims (``buildkite_events.idempotency``): one per function and event, so that a side
  effect happens once. A manifest asks for them with ``state: [idempotency]``.
- Ordered records (``Records`` below): the newest value per key, by an order the caller
  gives (a build number, then the build's own timestamps), with reserve/confirm around a
  side effect. A manifest that uses them says ``state: [..., records]``.

Firestore is reached through its REST API (``buildkite_events.firestore``), not through
google-cloud-firestore: that client costs every cold start ~0.3 s of imports and a gRPC
channel, for the few calls made here.

Every call is bounded by the delivery's budget (``buildkite_events.budget``): no retry
inside a call (the handler retries a ``TransientError`` within its budget) and no call longer
than the budget has left. Writes that depend on a read carry the read's update time as a
precondition rather than running in a transaction.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

from .budget import remaining
from .errors import ConfigError, FanoutError, TransientError
from .firestore import RPC_SECONDS, SERVER_TIMESTAMP, Client, FirestoreError, Increment

__all__ = [
    "DEFAULT_COLLECTION",
    "SERVER_TIMESTAMP",
    "FirestoreError",
    "Increment",
    "Record",
    "Records",
    "Reservation",
    "call_options",
    "client",
    "translated",
]

log = logging.getLogger(__name__)

COLLECTION_VARIABLE = "STATE_COLLECTION"
DEFAULT_COLLECTION = "buildkite-fanout-idempotency"  # terraform/variables.tf: state_collection
MIN_RPC_SECONDS = 2.0  # the least a call gets, even with the budget spent (RPC_SECONDS: the most)
MAX_CONFLICTS = 5  # conditional writes that lost a race, re-read and retried in one call
MAX_STORED_KEY = 1024  # a key is kept for people reading the collection, not for lookups
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_COLLECTION = re.compile(r"^[A-Za-z0-9_.-]{1,1500}$")

_clients: dict[tuple[str | None, str | None], Client] = {}
_clients_lock = threading.Lock()


def collection_name() -> str:
    name = os.environ.get(COLLECTION_VARIABLE, "").strip() or DEFAULT_COLLECTION
    if not _COLLECTION.match(name) or name.startswith("__"):
        raise ConfigError(f"{COLLECTION_VARIABLE} must be a top-level collection id (letters, digits, _ . or -)")
    return name


def client() -> Client:
    """The process's Firestore client for its project and endpoint. Making it costs nothing:
    its connection (and google-auth, in production) comes with the first call."""
    where = (os.environ.get("GOOGLE_CLOUD_PROJECT") or None, os.environ.get("FIRESTORE_EMULATOR_HOST") or None)
    with _clients_lock:
        made = _clients.get(where)
        if made is None:
            made = _clients[where] = Client(*where)
    return made


def call_options() -> dict[str, Any]:
    """Keyword arguments for one Firestore call: a timeout of what the delivery's budget has
    left (within ``MIN_RPC_SECONDS`` and ``RPC_SECONDS``)."""
    left = remaining()
    return {"timeout": RPC_SECONDS if left is None else min(RPC_SECONDS, max(MIN_RPC_SECONDS, left))}


def check_kind(kind: str) -> str:
    """A kind of state (a function's claims, a kind of record) becomes part of document ids."""
    if not _ID.match(kind):
        raise ValueError(f"a kind of state must match {_ID.pattern}, got {kind!r}")
    return kind


def document(kind: str, key: str, firestore_client: Any = None) -> Any:
    """The document for ``key`` among ``kind``'s: keys may be long or hold "/", ids may not."""
    check_kind(kind)
    if not key:
        raise ValueError("a state key must not be empty")
    doc_id = f"{kind}:{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:40]}"
    return (firestore_client or client()).collection(collection_name()).document(doc_id)


def expire_at(ttl: dt.timedelta) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + ttl


def unchanged_since(snapshot: Any, firestore_client: Any = None) -> dict[str, Any]:
    """``option=`` for a write that must fail if the document changed after ``snapshot``."""
    return {"option": (firestore_client or client()).write_option(last_update_time=snapshot.update_time)}


_LOST_RACE = frozenset({"ALREADY_EXISTS", "FAILED_PRECONDITION", "NOT_FOUND"})
_CONFIG = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED", "NOT_FOUND", "FAILED_PRECONDITION"})
_TRANSIENT = frozenset({"ABORTED", "DEADLINE_EXCEEDED", "UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED", "UNKNOWN"})


def won(write: Callable[[], Any]) -> bool:
    """Run one conditional write; False when another writer came first (a create of a document
    that exists by now, an update of one changed or deleted since it was read)."""
    try:
        write()
    except FirestoreError as err:
        if err.status in _LOST_RACE:
            return False
        raise
    return True


def written(write: Callable[[], Any]) -> dt.datetime | None:
    """Like ``won``, but when ``write`` (a create or an update of ours) stored its document: a
    later write conditional on that time changes the document only if nobody did since."""
    times: list[dt.datetime] = []
    return times[0] if won(lambda: times.append(write())) else None


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Firestore's failures as the handler's error kinds (buildkite_events.errors). NOT_FOUND
    (no database) and FAILED_PRECONDITION (a database in Datastore mode) outside ``won``
    are configuration; anything not named here (INVALID_ARGUMENT...) is a bug, and stays one."""
    try:
        yield
    except FanoutError:
        raise
    except FirestoreError as err:
        what = f"Firestore {action} failed: {str(err)[:300]}"
        if err.status in _CONFIG:
            raise ConfigError(what) from err
        if err.status in _TRANSIENT:
            raise TransientError(what) from err
        raise


# -- ordered records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """The value held for ``key``, and where it stands: ``order`` (compared as a tuple: a build
    number, then the build's own timestamps...), ``version`` (one per reservation) and whether
    its side effect was ``confirmed``."""

    key: str
    order: tuple[Any, ...]
    value: dict[str, Any]
    version: str
    confirmed: bool
    written: dt.datetime | None = field(default=None, compare=False, repr=False)  # its document's update time


class Reservation(NamedTuple):
    """``reserved``: act on ``record.value`` (it is the newest), then ``confirm``. ``confirmed``:
    this value is already held and was acted on. ``stale``: ``record`` is newer than what was
    offered; do nothing."""

    verdict: Literal["reserved", "confirmed", "stale"]
    record: Record


class Records:
    """The newest value per key among ``kind``'s records, with reserve/confirm around a side effect::

        reservation = records.reserve(key, (build.number, build_time), {"state": "failure"})
        if reservation.verdict == "reserved":
            act_on(reservation.record.value)
            newer = records.confirm(reservation.record)  # a newer value reserved meanwhile, or None

    ``value`` may be a function of the record held so far (a failure streak, say). Per-build
    records key by build id; per-branch ones by pipeline and branch. They expire after
    ``ttl_days``.
    """

    def __init__(self, kind: str, *, ttl_days: int = 30, firestore_client: Any = None) -> None:
        self.kind = check_kind(kind)
        self.ttl = dt.timedelta(days=ttl_days)
        self._client = firestore_client

    def get(self, key: str) -> Record | None:
        with translated(f"read of a {self.kind} record"):
            return self._record(key, self._ref(key).get(**call_options()))

    def reserve(
        self,
        key: str,
        order: Sequence[Any],
        value: Mapping[str, Any] | Callable[[Record | None], Mapping[str, Any]],
    ) -> Reservation:
        """Hold ``value`` for ``key`` unless a record of a later ``order`` is held already."""
        wanted_order = tuple(order)
        ref = self._ref(key)
        with translated(f"reservation of a {self.kind} record"):
            for _ in range(MAX_CONFLICTS):
                snapshot = ref.get(**call_options())
                held = self._record(key, snapshot)
                wanted = dict(value(held) if callable(value) else value)
                if held is not None and held.value == wanted:
                    return Reservation("confirmed" if held.confirmed else "reserved", held)
                if held is not None and not wanted_order > held.order:
                    return Reservation("stale", held)
                record = Record(key, wanted_order, wanted, uuid.uuid4().hex, confirmed=False)
                at = self._write(ref, snapshot.update_time, record)
                if at is not None:
                    return Reservation("reserved", replace(record, written=at))
        raise TransientError(f"{self.kind} record kept changing while being reserved; will try again")

    def confirm(self, record: Record) -> Record | None:
        """Record that ``record``'s side effect happened; return a newer record reserved since, if any."""
        ref = self._ref(record.key)
        with translated(f"confirmation of a {self.kind} record"):
            if record.written is not None and self._write(ref, record.written, replace(record, confirmed=True)):
                return None  # nobody wrote to it since the reservation: one conditional write
            for _ in range(MAX_CONFLICTS):
                snapshot = ref.get(**call_options())
                held = self._record(record.key, snapshot)
                if held is not None and held.version != record.version:
                    return held
                if held is not None and held.confirmed:
                    return None
                if self._write(ref, snapshot.update_time, replace(record, confirmed=True)):
                    return None
        raise TransientError(f"{self.kind} record kept changing while being confirmed; will try again")

    def _ref(self, key: str) -> Any:
        return document(self.kind, key, self._client)

    def _record(self, key: str, snapshot: Any) -> Record | None:
        if not snapshot.exists:
            return None
        data = snapshot.to_dict() or {}
        try:
            version, confirmed = str(data["version"]), data.get("confirmed") == data["version"]
            return Record(key, tuple(data["order"]), dict(data["value"]), version, confirmed, snapshot.update_time)
        except (KeyError, TypeError, ValueError):
            log.warning("record %s is not one this code wrote; replacing it", snapshot.id)
            return None

    def _write(self, ref: Any, update_time: dt.datetime | None, record: Record) -> dt.datetime | None:
        """Write ``record`` if the document is as last written at ``update_time`` (None: there is
        none); when it was written, or None if another writer came first."""
        fields = {
            "kind": self.kind,
            "key": record.key[:MAX_STORED_KEY],
            "order": list(record.order),
            "value": record.value,
            "version": record.version,
            "confirmed": record.version if record.confirmed else None,
            "updated_at": SERVER_TIMESTAMP,
            "expire_at": expire_at(self.ttl),
        }
        if update_time is not None:  # every field is written: an update replaces the whole record
            option = (self._client or client()).write_option(last_update_time=update_time)
            return written(lambda: ref.update(fields, option=option, **call_options()))
        return written(lambda: ref.create(fields, **call_options()))
