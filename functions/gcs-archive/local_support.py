"""gcs-archive on the local stack (not shipped; see tools/manifests.py): how the fault lanes see its
side effect, and what ``make demo`` says about the bucket."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.lanes import Lane, Lanes
    from tools.local.stack import LocalStack

FIXTURE = "build.finished.failed"
SIDE_EFFECT = r"^/upload/storage/v1/b/"
TIMEOUT_HOLD = 21.0  # past the storage client's own per-request timeout


def side_effects(lanes: Lanes, lane: Lane) -> int:
    """Successful uploads through the lane's proxy, not objects: an overwrite would count twice."""
    return len(lane.proxy.forwarded(SIDE_EFFECT, "POST"))


def demo_report(stack: LocalStack) -> list[str]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from tools.local.stack import ARCHIVE_BUCKET, PROJECT

    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
    return [f"bucket gs://{ARCHIVE_BUCKET} holds {len(list(client.list_blobs(ARCHIVE_BUCKET)))} objects"]
