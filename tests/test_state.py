"""buildkite_events.state: ordered records on the Firestore emulator, and every call bounded
by the delivery's budget when Firestore cannot be reached."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from buildkite_events.budget import budget
from buildkite_events.errors import TransientError
from buildkite_events.state import DEFAULT_COLLECTION, Record, Records, document
from tests.support import unreachable_endpoint

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
