"""Dead-letter queues: what each function gave up on, and replaying it to that function only.

    python -m tools.ops.dlq list [FUNCTION ...] [--project P] [--logs DIR | --no-logs] [--json]
    python -m tools.ops.dlq replay FUNCTION [--project P] [--limit N] [--dry-run]

Works against real Pub/Sub (project from ``--project``, ``PROJECT``, ``GOOGLE_CLOUD_PROJECT``
or gcloud's default) and against the emulator (``PUBSUB_EMULATOR_HOST``; the local stack's
project by default), on any project with the topology Terraform creates.

``list`` only looks: every message it pulls is handed back (deadline 0) when it is done.
It shows what the message carries (the event, the delivery count and the source
subscription from the ``CloudPubSubDeadLetterSource*`` attributes) and the function's last
error from its logs (``logs``). ``replay`` sends each message to that function only,
through the function's replay topic (``replay``).

Modules: ``queues`` (finding the queues, leasing messages), ``logs``, ``listing``,
``replay``, ``cli``.
"""

from .cli import main
from .listing import Listing, list_queues, render
from .logs import cloud_log_lines, errors_from_lines, local_log_lines
from .queues import (
    DELIVERY_COUNT,
    SOURCE_PROJECT,
    SOURCE_PUBLISH_TIME,
    SOURCE_SUBSCRIPTION,
    DeadLetter,
    DlqError,
    Queue,
    discover,
    resolve_project,
)
from .replay import ReplayReport, ensure_route, render_replay, replay

__all__ = [
    "DELIVERY_COUNT",
    "SOURCE_PROJECT",
    "SOURCE_PUBLISH_TIME",
    "SOURCE_SUBSCRIPTION",
    "DeadLetter",
    "DlqError",
    "Listing",
    "Queue",
    "ReplayReport",
    "cloud_log_lines",
    "discover",
    "ensure_route",
    "errors_from_lines",
    "list_queues",
    "local_log_lines",
    "main",
    "render",
    "render_replay",
    "replay",
    "resolve_project",
]
