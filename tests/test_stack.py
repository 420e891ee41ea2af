"""End to end on the emulators: webhook → ingress → Pub/Sub push → every function → effects.

The same stack `make demo` runs. Also the unhappy path: a function that cannot succeed
sends its messages to its dead-letter queue after max_delivery_attempts, none lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools.local import stack as local


def _archive_names() -> list[str]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project=local.PROJECT, credentials=AnonymousCredentials())
    return [blob.name for blob in client.list_blobs(local.ARCHIVE_BUCKET)]


def test_the_demo_flow_delivers_every_webhook_to_every_function(tmp_path: Path) -> None:
    with local.local_stack(tmp_path) as stack:
        webhooks = local.sample_webhooks()
        answers = [stack.post_webhook(body, event, signed=i % 2 == 0) for i, (event, body) in enumerate(webhooks)]
        assert [status for status, _ in answers] == [200] * len(webhooks)
        assert local.wait_settled(stack, len(webhooks))

        for name in stack.wiring:
            lines = stack.outcomes(name)
            assert {line["outcome"] for line in lines} <= {"done", "skipped", "duplicate", "filtered"}, (name, lines)
            assert stack.dead_lettered[name] == 0
        archive = stack.outcomes("gcs-archive")
        assert len({line["message_id"] for line in archive}) == len(webhooks)
        names = _archive_names()
        assert len(names) == len(webhooks)
        of_2042 = [body for _, body in webhooks if (json.loads(body).get("build") or {}).get("number") == 2042]
        assert sum("/my-pipeline/2025/06/12/2042/" in name for name in names) == len(of_2042)

        # The same webhook posted again: the same event, nothing new archived.
        event, body = webhooks[0]
        assert stack.post_webhook(body, event)[0] == 200
        assert local.wait_settled(stack, len(webhooks) + 1)
        assert len(_archive_names()) == len(webhooks)

        report = local.report(
            stack, [(event, status) for (event, _), (status, _) in zip(webhooks, answers, strict=True)]
        )
        assert f"ingress: {len(webhooks)} webhooks posted" in report
        assert f"bucket gs://{local.ARCHIVE_BUCKET} holds {len(webhooks)} objects" in report


def test_a_function_that_cannot_succeed_dead_letters_without_losing_anything(tmp_path: Path) -> None:
    # One message: with several failing at once the emulator's push backoff stalls them (see README).
    with local.local_stack(tmp_path, max_backoff_seconds=1, extra_env={"ARCHIVE_BUCKET": "no-such-bucket"}) as stack:
        sent = local.sample_webhooks()[:1]
        for event, body in sent:
            assert stack.post_webhook(body, event)[0] == 200
        assert local.wait_settled(stack, len(sent), timeout=120)
        assert stack.dead_lettered["gcs-archive"] == len(sent)
        attempts = [line for line in stack.outcomes("gcs-archive") if line["outcome"] == "config_error"]
        max_attempts = stack.manifests["gcs-archive"].delivery.max_delivery_attempts
        assert len(attempts) == len(sent) * max_attempts
        assert all("no-such-bucket" in line["message"] for line in attempts)


def test_messages_from_mcncl_buildkite_pubsub_are_handled(tmp_path: Path) -> None:
    with local.local_stack(tmp_path) as stack:
        for path in sorted((local.FIXTURES / "pubsub").glob("mcncl.*.json")):
            sample: dict[str, Any] = json.loads(path.read_text())
            local.publish_raw(local.PROJECT, local.TOPIC, sample["data"].encode(), sample["attributes"])
        assert local.wait_settled(stack, 2)
        assert [line["outcome"] for line in stack.outcomes("gcs-archive")] == ["done", "done"]
