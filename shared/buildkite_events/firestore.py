"""Firestore's REST API, as much of it as our state needs: ``documents:batchGet`` and
``documents:commit`` (create with ``exists: false``, update with an ``updateTime``
precondition, server timestamps and increments as field transforms), on one keep-alive
``http.client`` connection per thread.

``Client`` has the shape of google-cloud-firestore's client for what ``state`` uses
(``collection().document()``, ``get``, ``create``, ``update``, ``delete``, ``write_option``);
that library costs every cold start ~0.3 s of imports and a gRPC channel for these few calls.
On the emulator (``FIRESTORE_EMULATOR_HOST``) requests carry ``Authorization: Bearer owner``;
in production a token of the default credentials (scope datastore), from google-auth,
imported on the first call. A failed call is a ``FirestoreError`` with Firestore's canonical
status; ``state`` maps those onto the handler's error kinds.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import json
import math
import re
import select
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .errors import ConfigError

__all__ = ["SERVER_TIMESTAMP", "Client", "FirestoreError", "Increment", "Precondition", "ServerTime", "Snapshot"]

RPC_SECONDS = 10.0  # one Firestore call at most
ENDPOINT = "https://firestore.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/datastore"


class FirestoreError(Exception):
    """Firestore's answer to a call that failed, by its canonical ``status`` (ALREADY_EXISTS...);
    UNAVAILABLE also for a call that got no answer, UNAUTHENTICATED for credentials that fail."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


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
