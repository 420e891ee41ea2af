"""Our own state in Firestore: one client, one error mapping, one collection, one time budget.

Two kinds of document share the collection named by ``STATE_COLLECTION`` (a function's
manifest sets it from ``${state_collection}``, which Terraform fills in from
``var.state_collection``). Each carries ``expire_at`` for the collection's TTL policy.

- Claims (``buildkite_events.idempotency``): one per function and event, so that a side
  effect happens once. A manifest asks for them with ``state: [idempotency]``.
- Ordered records (``Records`` below): the newest value per key, by an order the caller
  gives (a build number, then the build's own timestamps), with reserve/confirm around a
  side effect. A manifest that uses them says ``state: [..., records]``.

Firestore is reached through its REST API (``documents:batchGet`` and ``documents:commit``)
on one keep-alive connection per thread, not through google-cloud-firestore: that client
costs every cold start ~0.3 s of imports and a gRPC channel, for the few calls made here.
``client()`` has the shape of the library's client for what this package uses
(``collection().document()``, ``get``, ``create``, ``update``, ``delete``, ``write_option``).
On the emulator (``FIRESTORE_EMULATOR_HOST``) requests carry ``Authorization: Bearer owner``;
in production a token of the default credentials (scope datastore), from google-auth,
imported on the first call.

Every call is bounded by the delivery's budget (``buildkite_events.budget``): no retry
inside a call (the handler retries a ``TransientError`` within its budget) and no call longer
than the budget has left. Writes that depend on a read carry the read's update time as a
precondition rather than running in a transaction.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import json
import logging
import math
import os
import re
import select
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

from .budget import remaining
from .errors import ConfigError, FanoutError, TransientError

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
RPC_SECONDS = 10.0  # one Firestore call at most...
MIN_RPC_SECONDS = 2.0  # ...and at least, even with the budget spent (recording a side effect that happened)
MAX_CONFLICTS = 5  # conditional writes that lost a race, re-read and retried in one call
MAX_STORED_KEY = 1024  # a key is kept for people reading the collection, not for lookups
ENDPOINT = "https://firestore.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/datastore"
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


class FirestoreError(Exception):
    """Firestore's answer to a call that failed, by its canonical ``status`` (ALREADY_EXISTS...);
    UNAVAILABLE also for a call that got no answer, UNAUTHENTICATED for credentials that fail."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


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


# -- the REST client ----------------------------------------------------------------------------


class Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


SERVER_TIMESTAMP = Sentinel("SERVER_TIMESTAMP")
"""A field value: the time Firestore commits the write."""


class Increment(NamedTuple):  # NamedTuples and plain classes here: a dataclass costs a cold start ~1 ms
    """A field value: the field's number plus ``value`` (0 if it had none)."""

    value: int


class ServerTime(dt.datetime):
    """A time Firestore gave, keeping its exact text for preconditions (it may hold nanoseconds)."""

    text: str

    @classmethod
    def parse(cls, text: str) -> ServerTime:
        seconds, _, fraction = text.rstrip("Z").partition(".")
        at = cls.fromisoformat(f"{seconds}.{(fraction + '000000')[:6]}+00:00")
        at.text = text
        return at


class Precondition(NamedTuple):
    update_time: dt.datetime

    def as_json(self) -> dict[str, Any]:
        return {"updateTime": getattr(self.update_time, "text", None) or _timestamp(self.update_time)}


class Snapshot:
    """A document as one read saw it (the library's DocumentSnapshot, for what is used here)."""

    __slots__ = ("create_time", "data", "exists", "id", "read_time", "update_time")

    def __init__(
        self,
        doc_id: str,
        read_time: ServerTime,
        document: Mapping[str, Any] | None = None,  # Firestore's Document; None: there is none
    ) -> None:
        self.id, self.read_time, self.exists = doc_id, read_time, document is not None
        self.data = _decode_fields((document or {}).get("fields") or {})
        self.update_time = ServerTime.parse(document["updateTime"]) if document else None
        self.create_time = ServerTime.parse(document["createTime"]) if document else None

    def to_dict(self) -> dict[str, Any] | None:
        return dict(self.data) if self.exists else None


class Client:
    """Firestore's REST API for one project (None: the credentials') and endpoint (None: Google's),
    one keep-alive connection per thread."""

    def __init__(self, project: str | None, emulator: str | None) -> None:
        self.project, self.emulator = project, emulator
        self.host = emulator or ENDPOINT.removeprefix("https://")
        self._credentials: Any = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def collection(self, name: str) -> Collection:
        return Collection(self, name)

    def write_option(self, *, last_update_time: dt.datetime) -> Precondition:
        return Precondition(last_update_time)

    def database(self) -> str:
        if not self.project and not self.emulator:
            self._authorization(RPC_SECONDS)  # the credentials name the project
        if not self.project:
            raise ConfigError("GOOGLE_CLOUD_PROJECT is not set (and no credentials name a project)")
        return f"projects/{self.project}/databases/(default)"

    def call(self, verb: str, body: dict[str, Any], timeout: float) -> Any:
        """POST ``<database>/documents:<verb>``; Firestore's JSON answer, or a FirestoreError."""
        path = f"/v1/{self.database()}/documents:{verb}"
        headers = {"Content-Type": "application/json", "Authorization": self._authorization(timeout)}
        try:
            conn = self._connection(timeout)
            conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
            response = conn.getresponse()
            status, payload = response.status, response.read()
        except (OSError, http.client.HTTPException) as err:
            self._reset()
            raise FirestoreError("UNAVAILABLE", f"{type(err).__name__}: {err}") from None
        if status == 200:
            return json.loads(payload)
        reason, message = _HTTP_STATUS.get(status, "UNKNOWN"), payload[:200].decode("utf-8", "replace")
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):  # else a proxy's page
            error = json.loads(payload)["error"]
            reason, message = str(error.get("status") or reason), str(error.get("message", ""))
        raise FirestoreError(reason, f"HTTP {status} {message}")

    def commit(self, write: dict[str, Any], timeout: float) -> ServerTime:
        answer = self.call("commit", {"writes": [write]}, timeout)
        return ServerTime.parse(answer["writeResults"][0].get("updateTime") or answer["commitTime"])

    def _reset(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and _dropped(conn):  # the server closed it while idle
            self._reset()
            conn = None
        if conn is None:
            cls = http.client.HTTPConnection if self.emulator else http.client.HTTPSConnection
            conn = cls(self.host, timeout=timeout)
            conn.connect()
            # A request goes out in two writes (headers, body): without this, Nagle's algorithm
            # holds the second until the server's delayed ACK of the first, for every call.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.conn = conn
        conn.sock.settimeout(timeout)
        return conn

    def _authorization(self, timeout: float) -> str:
        """The emulator takes the owner; Google takes a token of the default credentials (google-auth,
        imported on the first call), refreshed within ``timeout``."""
        if self.emulator:
            return "Bearer owner"
        import google.auth
        from google.auth import exceptions
        from google.auth.transport.requests import Request

        try:
            with self._lock:
                if self._credentials is None:
                    self._credentials, project = google.auth.default(scopes=[SCOPE])
                    self.project = self.project or project
                if not self._credentials.valid:
                    self._credentials.refresh(_bounded(Request(), timeout))
        except exceptions.DefaultCredentialsError as err:
            raise FirestoreError("UNAUTHENTICATED", f"no usable Google credentials: {err}") from None
        except exceptions.RefreshError as err:
            raise FirestoreError("UNAVAILABLE" if err.retryable else "UNAUTHENTICATED", str(err)[:300]) from None
        except (exceptions.GoogleAuthError, OSError) as err:  # the token service unreachable
            raise FirestoreError("UNAVAILABLE", f"{type(err).__name__}: {str(err)[:300]}") from None
        return f"Bearer {self._credentials.token}"


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection the server has closed reads as ready (EOF)."""
    return conn.sock is not None and bool(select.select([conn.sock], [], [], 0)[0])


def _bounded(transport: Callable[..., Any], limit: float) -> Callable[..., Any]:
    """A google-auth transport whose requests never wait longer than ``limit`` seconds."""

    def call(*args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        return transport(*args, timeout=limit if timeout is None else min(timeout, limit), **kwargs)

    return call


_HTTP_STATUS = {  # for an answer without Firestore's error body (a proxy's page)
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "UNAVAILABLE",
}


class Collection:
    __slots__ = ("client", "name")

    def __init__(self, client: Client, name: str) -> None:
        self.client, self.name = client, name

    def document(self, doc_id: str) -> DocumentReference:
        return DocumentReference(self.client, self.name, doc_id)


class DocumentReference:
    """One document (the library's DocumentReference, for what is used here). Every call takes
    ``timeout`` (``call_options()``) and raises FirestoreError."""

    __slots__ = ("client", "collection", "id")

    def __init__(self, client: Client, collection: str, doc_id: str) -> None:
        self.client, self.collection, self.id = client, collection, doc_id

    def name(self) -> str:
        return f"{self.client.database()}/documents/{self.collection}/{self.id}"

    def get(self, *, timeout: float = RPC_SECONDS) -> Snapshot:
        (found,) = self.client.call("batchGet", {"documents": [self.name()]}, timeout)
        return Snapshot(self.id, ServerTime.parse(found["readTime"]), found.get("found"))

    def create(self, fields: Mapping[str, Any], *, timeout: float = RPC_SECONDS) -> ServerTime:
        """Write a new document; ALREADY_EXISTS if there is one."""
        return self.client.commit({**self._write(fields), "currentDocument": {"exists": False}}, timeout)

    def update(
        self, fields: Mapping[str, Any], option: Precondition | None = None, *, timeout: float = RPC_SECONDS
    ) -> ServerTime:
        """Set ``fields`` (top-level names) of an existing document; FAILED_PRECONDITION if it changed
        since ``option``'s read, NOT_FOUND if there is none."""
        current = option.as_json() if option else {"exists": True}
        mask = [_field_path(name) for name, value in fields.items() if not isinstance(value, Sentinel | Increment)]
        write = {**self._write(fields), "updateMask": {"fieldPaths": mask}, "currentDocument": current}
        return self.client.commit(write, timeout)

    def delete(self, option: Precondition | None = None, *, timeout: float = RPC_SECONDS) -> None:
        write: dict[str, Any] = {"delete": self.name()}
        if option:
            write["currentDocument"] = option.as_json()
        self.client.commit(write, timeout)

    def _write(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        plain = {k: v for k, v in fields.items() if not isinstance(v, Sentinel | Increment)}
        transforms = [_transform(k, v) for k, v in fields.items() if isinstance(v, Sentinel | Increment)]
        write: dict[str, Any] = {"update": {"name": self.name(), "fields": _encode_fields(plain)}}
        if transforms:
            write["updateTransforms"] = transforms
        return write


def _transform(name: str, value: Sentinel | Increment) -> dict[str, Any]:
    if isinstance(value, Increment):
        return {"fieldPath": _field_path(name), "increment": _encode(value.value)}
    if value is SERVER_TIMESTAMP:
        return {"fieldPath": _field_path(name), "setToServerValue": "REQUEST_TIME"}
    raise TypeError(f"cannot store {value!r}")


def _field_path(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return name
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _timestamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_NOT_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # JSON has no such numbers


def _encode_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): _encode(v) for k, v in values.items()}


def _encode(value: Any) -> dict[str, Any]:
    """A Python value as a Firestore ``Value`` (REST JSON)."""
    if value is None:
        return {"nullValue": None}
    if isinstance(value, bool):
        return {"booleanValue": value}
    if isinstance(value, int):
        return {"integerValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value if math.isfinite(value) else _NOT_FINITE[str(value)]}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dt.datetime):  # expire_at: a timestamp, for the TTL policy
        return {"timestampValue": _timestamp(value if value.tzinfo else value.replace(tzinfo=dt.UTC))}
    if isinstance(value, Mapping):
        return {"mapValue": {"fields": _encode_fields(value)}}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_encode(item) for item in value]}}
    raise TypeError(f"cannot store a {type(value).__name__} in Firestore")


def _decode_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _decode(v) for k, v in fields.items()}


def _decode(value: Mapping[str, Any]) -> Any:
    (kind, inner), *_ = value.items()
    if kind == "integerValue":
        return int(inner)
    if kind == "doubleValue":
        return float(inner)
    if kind == "timestampValue":
        return ServerTime.parse(inner)
    if kind == "mapValue":
        return _decode_fields(inner.get("fields") or {})
    if kind == "arrayValue":
        return [_decode(item) for item in inner.get("values") or ()]
    if kind == "bytesValue":
        return base64.b64decode(inner)
    return inner  # nullValue (None), booleanValue, stringValue; references and geo points as given


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
