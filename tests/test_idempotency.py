"""IdempotencyStore against the real Firestore emulator."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from buildkite_events.errors import TransientError
from buildkite_events.idempotency import Claim, IdempotencyStore
from buildkite_events.state import DEFAULT_COLLECTION

KEY = "build.finished/acme/pipeline-with/slashes/1234/" + "x" * 2000


@pytest.fixture
def make_store(firestore: Any, gcp_project: str) -> Any:
    def make(scope: str = "slack-notify", **kwargs: Any) -> IdempotencyStore:
        return IdempotencyStore(scope=scope, **kwargs)  # the project: GOOGLE_CLOUD_PROJECT

    return make


def doc(firestore: Any, claim: Claim) -> dict[str, Any] | None:
    snap = firestore.collection(DEFAULT_COLLECTION).document(claim.doc_id).get()
    return snap.to_dict() if snap.exists else None


def test_first_claim_acquires(make_store: Any, firestore: Any) -> None:
    claim = make_store().claim(KEY)
    assert claim.state == "acquired"
    assert claim.doc_id.startswith("slack-notify:") and len(claim.doc_id) == len("slack-notify:") + 40
    stored = doc(firestore, claim)
    assert stored is not None
    assert stored["state"] == "pending" and stored["owner"] == claim.token
    assert stored["expire_at"] is not None


def test_claim_after_complete_is_done(make_store: Any, firestore: Any) -> None:
    store = make_store()
    first = store.claim(KEY)
    store.complete(first, ts="1700000000.1234", status=200, skipped=None)
    second = store.claim(KEY)
    assert second.state == "done"
    stored = doc(firestore, first)
    assert stored is not None
    assert stored["state"] == "done"
    assert stored["details"] == {"ts": "1700000000.1234", "status": 200, "skipped": None}
    store.complete(second)  # completing a "done" claim is a no-op
    store.release(second)  # and so is releasing it
    assert doc(firestore, first) == stored


def test_claim_while_pending_raises_transient(make_store: Any) -> None:
    store = make_store(lease_seconds=60)
    store.claim(KEY)
    with pytest.raises(TransientError, match="being processed by another delivery") as excinfo:
        make_store(lease_seconds=60).claim(KEY)  # another instance, same scope
    assert excinfo.value.retry_after is not None
    assert 0 < excinfo.value.retry_after <= 60


def test_expired_lease_is_taken_over(make_store: Any, firestore: Any) -> None:
    store = make_store(lease_seconds=0.5)
    first = store.claim(KEY)
    time.sleep(0.8)
    second = store.claim(KEY)
    assert second.state == "acquired"
    assert second.token != first.token
    stored = doc(firestore, second)
    assert stored is not None
    assert stored["owner"] == second.token
    assert stored["previous_owner"] == first.token
    assert stored["attempts"] == 2
    # The takeover restarted the lease: a third delivery has to wait.
    with pytest.raises(TransientError):
        store.claim(KEY)


def test_release_allows_a_new_claim_at_once(make_store: Any, firestore: Any) -> None:
    store = make_store(lease_seconds=60)
    first = store.claim(KEY)
    store.release(first)
    assert doc(firestore, first) is None
    assert store.claim(KEY).state == "acquired"


def test_stale_release_does_not_drop_the_new_owners_claim(make_store: Any, firestore: Any) -> None:
    store = make_store(lease_seconds=0.5)
    stale = store.claim(KEY)
    time.sleep(0.8)
    current = store.claim(KEY)
    store.release(stale)
    stored = doc(firestore, current)
    assert stored is not None and stored["owner"] == current.token


def test_stale_complete_never_rewrites_a_done_record(make_store: Any, firestore: Any) -> None:
    store = make_store(lease_seconds=0.5)
    stale = store.claim(KEY)
    time.sleep(0.8)
    current = store.claim(KEY)
    store.complete(current, ts="new")
    store.complete(stale, ts="old")
    stored = doc(firestore, current)
    assert stored is not None
    assert stored["completed_by"] == current.token
    assert stored["details"] == {"ts": "new"}


def test_stale_complete_still_records_that_the_side_effect_happened(make_store: Any, firestore: Any) -> None:
    # The slow first holder did post after all. Recording that keeps the next
    # redelivery from posting a third time, even if the new holder gives up.
    store = make_store(lease_seconds=0.5)
    stale = store.claim(KEY)
    time.sleep(0.8)
    current = store.claim(KEY)
    store.complete(stale, ts="old")
    store.release(current)  # the new holder failed: it must not erase the done record
    stored = doc(firestore, stale)
    assert stored is not None and stored["state"] == "done" and stored["details"] == {"ts": "old"}
    store.complete(current, ts="new")  # nor overwrite it
    assert doc(firestore, stale) == stored
    assert store.claim(KEY).state == "done"


def test_ten_threads_racing_one_key_acquire_once(make_store: Any) -> None:
    stores = [make_store(lease_seconds=60) for _ in range(10)]
    barrier = threading.Barrier(len(stores))
    results: list[str] = []
    lock = threading.Lock()

    def race(store: IdempotencyStore) -> None:
        barrier.wait()
        outcome: str
        try:
            outcome = store.claim(KEY).state
        except TransientError:
            outcome = "busy"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == ["acquired"] + ["busy"] * 9


def test_scopes_are_independent(make_store: Any) -> None:
    slack, teams = make_store("slack-notify"), make_store("teams-notify")
    s = slack.claim(KEY)
    t = teams.claim(KEY)
    assert s.state == t.state == "acquired"
    assert s.doc_id != t.doc_id
    slack.complete(s)
    assert slack.claim(KEY).state == "done"
    with pytest.raises(TransientError):
        teams.claim(KEY)


def test_rejects_scopes_that_cannot_be_document_ids() -> None:
    with pytest.raises(ValueError):
        IdempotencyStore(scope="a/b")
    with pytest.raises(ValueError):
        IdempotencyStore(scope="")


def test_the_client_is_made_on_first_use_and_shared(make_store: Any) -> None:
    from buildkite_events import state

    state._clients.clear()
    store: IdempotencyStore = make_store()  # making a store connects to nothing
    assert state._clients == {}
    store.claim("k1")
    (client,) = state._clients.values()
    make_store("teams-notify").claim("k2")
    assert list(state._clients.values()) == [client]  # one client per project and endpoint


def test_claims_live_in_the_collection_state_collection_names(
    make_store: Any, firestore: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_COLLECTION", "fanout-state-elsewhere")
    claim = make_store().claim(KEY)
    assert firestore.collection("fanout-state-elsewhere").document(claim.doc_id).get().exists
    assert doc(firestore, claim) is None  # not in the default collection


def test_a_collection_name_firestore_cannot_use_is_a_config_error(
    make_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from buildkite_events.errors import ConfigError

    monkeypatch.setenv("STATE_COLLECTION", "a/b")
    with pytest.raises(ConfigError, match="STATE_COLLECTION"):
        make_store().claim(KEY)
