"""buildkite_events.state on the Firestore emulator: ordered records, every call bounded by the
delivery's budget when Firestore cannot be reached, the REST client against what Google's client
library reads and writes, Firestore's answers as error kinds, and google-auth in production."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from buildkite_events.budget import budget
from buildkite_events.errors import ConfigError, TransientError
from buildkite_events.state import DEFAULT_COLLECTION, Record, Records, document
from tests.support import unreachable_endpoint
from tools.local.emulators import Service
from tools.local.faultproxy import FaultProxy

KEY = "my-great-org/my-pipeline|5a741616cdf07dc87c5adafe784321eeeb639e33|buildkite/my-pipeline"


@pytest.fixture
def records(firestore: Any) -> Records:
    return Records("test-records")


def stored(firestore: Any, key: str = KEY, kind: str = "test-records") -> dict[str, Any] | None:
    snapshot = document(kind, key, firestore).get()
    return snapshot.to_dict() if snapshot.exists else None


def test_a_first_value_is_reserved_then_confirmed(records: Records, firestore: Any) -> None:
    reservation = records.reserve(KEY, (2041, 1.0), {"state": "pending"})
    assert reservation.verdict == "reserved" and not reservation.record.confirmed
    assert records.confirm(reservation.record) is None
    again = records.reserve(KEY, (2041, 1.0), {"state": "pending"})
    assert again.verdict == "confirmed" and again.record.version == reservation.record.version
    doc = stored(firestore)
    assert doc is not None
    assert (doc["kind"], doc["key"], doc["order"], doc["value"]) == (
        "test-records",
        KEY,
        [2041, 1.0],
        {"state": "pending"},
    )
    assert doc["confirmed"] == doc["version"] == reservation.record.version
    assert doc["expire_at"] > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)  # the collection's TTL policy
    assert document("test-records", KEY, firestore).id.startswith("test-records:")


def test_a_reserved_value_not_yet_confirmed_is_offered_again(records: Records) -> None:
    first = records.reserve(KEY, (2041, 1.0), {"state": "pending"})
    again = records.reserve(KEY, (2041, 1.0), {"state": "pending"})  # the side effect may not have happened
    assert again.verdict == "reserved" and again.record == first.record


def test_an_older_order_is_stale_and_the_newer_record_is_returned(records: Records) -> None:
    newer = records.reserve(KEY, (2042, 5.0, 4), {"state": "failure"}).record
    stale = records.reserve(KEY, (2042, 4.0, 9), {"state": "pending"})  # higher rank, earlier moment
    assert stale.verdict == "stale" and stale.record == newer
    assert records.reserve(KEY, (2041, 9.0, 9), {"state": "success"}).verdict == "stale"  # an older build
    assert records.reserve(KEY, (2042, 5.0, 4), {"state": "error"}).verdict == "stale"  # the same order
    assert records.get(KEY) == newer


def test_confirming_after_a_newer_reservation_returns_the_newer_one(records: Records) -> None:
    older = records.reserve(KEY, (1, 1.0), {"state": "pending"}).record
    newer = records.reserve(KEY, (1, 2.0), {"state": "success"}).record
    assert records.confirm(older) == newer  # the caller repairs: newer must end on top
    assert records.confirm(newer) is None
    held = records.get(KEY)
    assert held is not None and held.confirmed and held.value == {"state": "success"}


def test_a_value_may_be_made_from_the_record_held(records: Records) -> None:
    """Per-branch records: a failure streak counts on from what is held."""

    def streak(held: Record | None) -> dict[str, Any]:
        return {"verdict": "failed", "streak": (held.value["streak"] if held else 0) + 1}

    for number in (10, 11, 12):
        records.reserve("my-pipeline@main", (number, float(number)), streak)
    held = records.get("my-pipeline@main")
    assert held is not None and held.value == {"verdict": "failed", "streak": 3} and held.order == (12, 12.0)


def test_racing_reservations_keep_the_newest(records: Records) -> None:
    orders = list(range(12))
    barrier = threading.Barrier(len(orders))
    errors: list[BaseException] = []

    def race(order: int) -> None:
        barrier.wait()
        for _ in range(20):  # a TransientError ("kept changing") is retried by the handler
            try:
                records.reserve(KEY, (7, float(order)), {"order": order})
                return
            except TransientError:
                time.sleep(0.05)
            except BaseException as err:
                errors.append(err)
                return

    threads = [threading.Thread(target=race, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    held = records.get(KEY)
    assert held is not None and held.value == {"order": max(orders)}


def test_a_document_this_code_did_not_write_is_replaced(records: Records, firestore: Any) -> None:
    document("test-records", KEY, firestore).set({"scope": "github-status", "state": "success"})  # an old format
    assert records.get(KEY) is None
    assert records.reserve(KEY, (1, 1.0), {"state": "pending"}).verdict == "reserved"


def test_records_and_claims_share_the_collection_but_not_documents(firestore: Any) -> None:
    from buildkite_events.idempotency import IdempotencyStore

    Records("same-name").reserve(KEY, (1,), {"a": 1})
    claim = IdempotencyStore(scope="same-name-claims").claim(KEY)
    ids = {doc.id for doc in firestore.collection(DEFAULT_COLLECTION).stream()}
    assert ids == {document("same-name", KEY, firestore).id, claim.doc_id}


def test_kinds_must_be_able_to_name_documents() -> None:
    for kind in ("", "a/b", "-leading", "x" * 101):
        with pytest.raises(ValueError):
            Records(kind)


# -- Firestore unreachable: every call ends within the delivery's budget ------------------------


@pytest.fixture(params=["closed-port", "silent-server"])
def unreachable(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, gcp_project: str) -> Iterator[str]:
    with unreachable_endpoint(request.param) as host:
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)
        yield request.param


def test_a_call_to_an_unreachable_firestore_ends_within_the_budget(unreachable: str) -> None:
    started = time.monotonic()
    with budget(3.0), pytest.raises(TransientError, match="Firestore"):
        Records("test-records").reserve(KEY, (1,), {"a": 1})
    # The library alone would retry UNAVAILABLE for up to 60 s; our budget was 3 s, and one call
    # may take at least MIN_RPC_SECONDS. Bound generously: the point is that it returned.
    assert time.monotonic() - started < 30


# -- Firestore's REST API: what Google's client library reads, and how answers map ---------------


VALUES: dict[str, Any] = {
    "text": "naïve ✓ <!channel>",
    "big": 2**62,
    "negative": -3,
    "ratio": 1.5,
    "whole": 2.0,
    "yes": True,
    "nothing": None,
    "list": [1, "a", {"inner": [2, None]}],  # Firestore keeps no array directly in an array
    "map": {"x": {"y": 1}, "key with spaces": "ok"},
    "bytes": b"\x00\xff",
    "at": dt.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC),
}


def test_values_read_the_same_through_googles_client(firestore: Any) -> None:
    ours = document("test-values", KEY)
    ours.create(VALUES)
    theirs = document("test-values", KEY, firestore).get()
    assert theirs.to_dict() == VALUES
    assert ours.get().to_dict() == VALUES
    assert ours.get().update_time == theirs.update_time  # the same moment, to the microsecond


def test_what_googles_client_wrote_reads_the_same(firestore: Any) -> None:
    document("test-values", KEY, firestore).set(VALUES)
    assert document("test-values", KEY).get().to_dict() == VALUES
    assert document("test-values", "nothing here").get().to_dict() is None


def test_numbers_json_has_no_words_for(firestore: Any) -> None:
    document("test-values", KEY).create({"up": float("inf"), "down": float("-inf"), "nan": float("nan")})
    stored = document("test-values", KEY, firestore).get().to_dict()
    assert stored["up"] == float("inf") and stored["down"] == float("-inf") and stored["nan"] != stored["nan"]


def test_server_timestamps_increments_and_preconditions(firestore: Any) -> None:
    from buildkite_events.state import SERVER_TIMESTAMP, Increment, client, won

    ref = document("test-values", KEY)
    before = dt.datetime.now(dt.UTC)
    ref.create({"n": 1, "at": SERVER_TIMESTAMP})
    snapshot = ref.get()
    assert snapshot.to_dict()["at"] >= before - dt.timedelta(seconds=5)  # the emulator's clock, not ours
    assert won(
        lambda: ref.update({"n": Increment(2)}, option=client().write_option(last_update_time=snapshot.update_time))
    )
    assert ref.get().to_dict()["n"] == 3
    stale = client().write_option(last_update_time=snapshot.update_time)
    assert not won(lambda: ref.update({"n": 0}, option=stale))  # changed since that read
    assert not won(lambda: ref.delete(option=stale))
    assert not won(lambda: ref.create({"n": 0}))  # exists
    assert not won(lambda: document("test-values", "absent").update({"n": 0}))  # nothing to update
    assert ref.get().to_dict()["n"] == 3


@pytest.fixture
def proxied(firestore: Any, firestore_emulator: Service, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy between buildkite_events.state and the emulator."""
    with FaultProxy(firestore_emulator.url) as proxy:
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", proxy.host)
        yield proxy


def test_a_claim_nobody_touched_is_completed_in_one_write(proxied: FaultProxy, firestore: Any) -> None:
    from buildkite_events.idempotency import IdempotencyStore

    store = IdempotencyStore(scope="test-claims")
    store.complete(store.claim(KEY), ts="1")
    assert [seen.path.rsplit(":", 1)[-1] for seen in proxied.seen] == ["commit", "commit"]  # create, then done
    assert store.claim(KEY).state == "done"


def test_a_reservation_nobody_touched_is_confirmed_without_a_read(proxied: FaultProxy) -> None:
    records = Records("test-records")
    assert records.confirm(records.reserve(KEY, (1,), {"a": 1}).record) is None
    assert [seen.path.rsplit(":", 1)[-1] for seen in proxied.seen] == ["batchGet", "commit", "commit"]
    held = records.get(KEY)
    assert held is not None and held.confirmed


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ({"kind": "status", "status": 503}, TransientError),
        ({"kind": "status", "status": 429}, TransientError),
        ({"kind": "status", "status": 403}, ConfigError),  # a role missing
        ({"kind": "status", "status": 404}, ConfigError),  # no database
        ({"kind": "status", "status": 200, "body": b"<html>a proxy's page</html>"}, ValueError),  # a bug, not retried
        ({"kind": "drop"}, TransientError),
        ({"kind": "lost"}, TransientError),
    ],
)
def test_firestore_answers_become_error_kinds(proxied: FaultProxy, fault: dict[str, Any], kind: type) -> None:
    proxied.fail(r":batchGet$", **fault)
    with pytest.raises(kind):
        Records("test-records").get(KEY)
    assert Records("test-records").get(KEY) is None  # the next call, on a new connection, works


def test_firestores_own_error_status_wins_over_the_http_code(proxied: FaultProxy) -> None:
    body = b'{"error": {"code": 400, "message": "Datastore mode", "status": "FAILED_PRECONDITION"}}'
    proxied.fail(r":batchGet$", status=400, body=body)
    with pytest.raises(ConfigError, match="FAILED_PRECONDITION: HTTP 400 Datastore mode"):
        Records("test-records").get(KEY)


def test_a_connection_the_server_closed_while_idle_is_replaced(
    firestore: Any, firestore_emulator: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Google's front ends close idle keep-alive connections without a word; the next call must not fail."""
    with _one_answer_per_connection(firestore_emulator.host) as host:
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)
        records = Records("test-records")
        assert records.get(KEY) is None
        time.sleep(0.2)  # the relay has hung up meanwhile
        assert records.get(KEY) is None


@contextlib.contextmanager
def _one_answer_per_connection(upstream: str) -> Iterator[str]:
    """A relay to ``upstream`` that answers one request per connection, then closes it unannounced."""
    import http.client
    import socketserver

    class Relay(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += self.rfile.read(1)
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ")
            headers = dict(line.split(": ", 1) for line in lines[1:] if line)
            body = self.rfile.read(int(headers.get("Content-Length", 0)))
            conn = http.client.HTTPConnection(upstream, timeout=30)
            conn.request(method, path, body=body, headers={"Authorization": headers.get("Authorization", "")})
            answer = conn.getresponse()
            payload = answer.read()
            self.wfile.write(b"HTTP/1.1 %d OK\r\nContent-Length: %d\r\n\r\n%s" % (answer.status, len(payload), payload))
            self.wfile.flush()  # then the socket closes, with no Connection: close said

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Relay)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- production: google-auth's credentials, no emulator -----------------------------------------


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch, gcp_project: str) -> Iterator[None]:
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    yield


def test_without_credentials_state_is_a_configuration_error(
    production: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    with pytest.raises(ConfigError, match="no usable Google credentials"):
        Records("test-records").get(KEY)


def test_credentials_the_token_service_refuses_are_a_configuration_error(
    production: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A service account key revoked: Google's token endpoint answers invalid_grant (here a stand-in's)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tools.local.standin import Reply, StandIn

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with StandIn() as tokens:
        tokens.route("POST", "/token", lambda _: Reply(400, {"error": "invalid_grant", "error_description": "revoked"}))
        account = {
            "type": "service_account",
            "project_id": "buildkite-fanout-test",
            "private_key_id": "1",
            "private_key": pem.decode(),
            "client_email": "state@buildkite-fanout-test.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": tokens.url + "/token",
        }
        (tmp_path / "key.json").write_text(json.dumps(account))
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
        with pytest.raises(ConfigError, match="invalid_grant"):
            Records("test-records").get(KEY)
        (request,) = tokens.recorded("/token")
    assert b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in request.body
