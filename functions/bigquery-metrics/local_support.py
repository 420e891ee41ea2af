"""bigquery-metrics on the local stack (not shipped; see tools/manifests.py): how the fault lanes see
its side effect, and what ``make demo`` shows of the dataset."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.lanes import Lane, Lanes
    from tools.local.stack import LocalStack

FIXTURE = "build.finished.failed"
SIDE_EFFECT = r"/insertAll$"
TIMEOUT_VARIABLE = "BIGQUERY_TIMEOUT_SECONDS"


def side_effects(lanes: Lanes, lane: Lane) -> int:
    """Rows in the builds and jobs tables of the lanes' dataset."""
    from tools.bigquery import bigquery_client

    project = lanes.bigquery_dataset.split(".")[0]
    client = bigquery_client(project, lanes.services["bigquery"].url)
    total = 0
    for table in ("builds", "jobs"):
        sql = f"SELECT COUNT(*) AS n FROM `{lanes.bigquery_dataset}.{table}`"  # noqa: S608 - names the test made
        total += next(iter(client.query(sql, job_retry=None, timeout=30).result(timeout=60)))["n"]
    return total


def demo_report(stack: LocalStack) -> list[str]:
    from tools.bigquery import bigquery_client, demo_lines
    from tools.local.stack import BIGQUERY_DATASET, PROJECT

    return demo_lines(bigquery_client(PROJECT, stack.services["bigquery"].url), PROJECT, BIGQUERY_DATASET)
