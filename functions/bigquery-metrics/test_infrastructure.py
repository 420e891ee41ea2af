"""Failures of the machine told apart from failures of the code, and agent health from events_raw:
queries/build_health.sql, flaky_steps.sql, infrastructure_failures.sql and agent_health.sql on a
hand-made history, answers worked out by hand below. Every event is stored twice (a redelivery
past the claim): the views must hide that.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from buildkite_events import parse_delivery
from tests.support import envelope
from tools.bigquery import bigquery_client, insert_rows, metrics_rows, run_query
from tools.local.emulators import Service

SINCE, UNTIL = datetime.fromisoformat("2025-06-01T00:00:00+00:00"), datetime.fromisoformat("2025-06-08T00:00:00+00:00")
_ids = itertools.count(1)


def t(text: str) -> datetime:
    return datetime.fromisoformat(f"2025-{text}:00+00:00")


def job(build: int, step: str, state: str, finished: str, queue: str = "default", **fields: Any) -> dict[str, Any]:
    done = t(finished)
    body = {
        "id": f"job-{next(_ids)}",
        "type": "script",
        "name": step,
        "step_key": step,
        "state": state,
        "exit_status": {"passed": 0, "failed": 1}.get(state),
        "signal": None,
        "signal_reason": None,
        "agent_query_rules": [f"queue={queue}"],
        "runnable_at": (done - timedelta(minutes=5)).isoformat(),
        "started_at": (done - timedelta(minutes=4)).isoformat(),
        "finished_at": done.isoformat(),
    } | fields
    return {
        "event": "job.finished",
        "job": body,
        "build": {"id": f"b{build}", "number": build, "branch": "main"},
        "pipeline": {"slug": "svc", "default_branch": "main"},
    }


def build(number: int, state: str, finished: str) -> dict[str, Any]:
    done = t(finished)
    return {
        "event": "build.finished",
        "build": {
            "id": f"b{number}",
            "number": number,
            "state": state,
            "branch": "main",
            "scheduled_at": (done - timedelta(minutes=30)).isoformat(),
            "started_at": (done - timedelta(minutes=29)).isoformat(),
            "finished_at": done.isoformat(),
        },
        "pipeline": {"slug": "svc", "default_branch": "main"},
    }


LOST: dict[str, Any] = {"exit_status": -1}  # Buildkite lost contact with the agent
STOPPED: dict[str, Any] = {"exit_status": 143, "signal": "SIGTERM", "signal_reason": "agent_stop"}

# Pipeline "svc", builds on main in the week from 06-01:
#   b1 failed: test lost its agent, was retried, lost it again          -> failed by the machine
#   b2 failed: test's agent was stopped, the retry failed in the code   -> failed by the code
#   b3 passed: test lost its agent, the retry passed                    -> an infrastructure failure retried away
#   b4 failed: test failed then passed (flaky); lint failed in the code -> failed by the code
#   b5 failed: the docker image job expired with no agent to take it    -> failed by the machine
HISTORY = [
    job(1, "test", "failed", "06-02T10:00", **LOST),
    job(1, "test", "failed", "06-02T10:10", **LOST),
    build(1, "failed", "06-02T10:11"),
    job(2, "test", "failed", "06-02T11:00", **STOPPED),
    job(2, "test", "failed", "06-02T11:10"),
    build(2, "failed", "06-02T11:11"),
    job(3, "test", "failed", "06-03T10:00", **LOST),
    job(3, "test", "passed", "06-03T10:10"),
    build(3, "passed", "06-03T10:11"),
    job(4, "test", "failed", "06-04T10:00"),
    job(4, "test", "passed", "06-04T10:10"),
    job(4, "lint", "failed", "06-04T10:05"),
    build(4, "failed", "06-04T10:11"),
    job(
        5,
        "image",
        "expired",
        "06-05T10:00",
        queue="docker",
        started_at=None,
        finished_at=None,
        expired_at="2025-06-05T10:00:00Z",
    ),
    build(5, "failed", "06-05T10:01"),
]


def agent(event: str, name: str, queue: str, when: str, state: str, stamp: str) -> tuple[dict[str, Any], str]:
    body = {"id": f"agent-{name}", "name": name, "connection_state": state, "meta_data": [f"queue={queue}", "os=linux"]}
    return {"event": event, "agent": body | {stamp: t(when).isoformat()}}, t(when).isoformat()


# Agent events on 06-02 and 06-03. The registrations refused carry no agent (no queue), and no
# time of their own: they happened when they were published.
AGENT_EVENTS = [
    agent("agent.connected", "a", "default", "06-02T08:00", "connected", "connected_at"),
    agent("agent.lost", "a", "default", "06-02T12:00", "lost", "lost_at"),
    agent("agent.connected", "b", "default", "06-02T08:00", "connected", "connected_at"),
    agent("agent.disconnected", "b", "default", "06-02T20:00", "disconnected", "disconnected_at"),
    agent("agent.stopping", "c", "default", "06-02T13:00", "stopping", "stopped_at"),
    agent("agent.stopped", "c", "default", "06-02T13:05", "stopped", "stopped_at"),
    agent("agent.blocked", "d", "docker", "06-02T09:00", "connected", "connected_at"),
    ({"event": "cluster_token.registration_blocked", "blocked_ip": "203.0.113.7"}, "2025-06-02T09:30:00Z"),
    ({"event": "cluster_token.registration_blocked", "blocked_ip": "203.0.113.8"}, "2025-06-02T09:31:00Z"),
    agent("agent.connected", "a2", "default", "06-03T08:00", "connected", "connected_at"),
]


def delivered(bodies: Iterable[tuple[Mapping[str, Any], str]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Rows the function writes for each body published at its time; each written twice."""
    rows_for = metrics_rows().rows_for
    tables: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for index, (body, published) in enumerate(bodies):
        event = parse_delivery(envelope(body, message_id=str(index), publish_time=published))
        for table, row in rows_for(event, now=datetime.fromisoformat(published.replace("Z", "+00:00"))).tables.items():
            tables.setdefault(table, []).extend([(event.key_hash, row), (event.key_hash, row)])
    return tables


class Dataset:
    def __init__(self, full_id: str, url: str) -> None:
        self.project, self.dataset = full_id.split(".")
        self.client = bigquery_client(self.project, url)

    def ask(self, name: str) -> list[dict[str, Any]]:
        return run_query(self.client, name, project=self.project, dataset=self.dataset, since=SINCE, until=UNTIL)


@pytest.fixture
def history(bigquery_dataset: str, bigquery_emulator: Service) -> Dataset:
    bq = Dataset(bigquery_dataset, bigquery_emulator.url)
    bodies = [(body, "2025-06-08T00:00:00Z") for body in HISTORY] + AGENT_EVENTS
    for table, rows in delivered(bodies).items():
        insert_rows(bq.client, f"{bigquery_dataset}.{table}", rows)
    return bq


def test_build_health_tells_failures_of_the_machine_from_failures_of_the_code(history: Dataset) -> None:
    (row,) = history.ask("build_health")
    assert (row["builds"], row["passed"], row["failed"], row["failure_rate"]) == (5, 1, 4, 0.8)
    assert (
        row["infrastructure_failed"] == 2
    )  # b1 (agent lost twice) and b5 (expired): not b2, whose retry failed in the code


def test_a_failure_of_the_machine_retried_away_is_not_a_flaky_step(history: Dataset) -> None:
    (test,) = history.ask("flaky_steps")
    # test ran in b1-b4; only b4 failed in the code and then passed. b3's failure was a lost agent.
    assert (test["step"], test["builds"], test["flaky_builds"], test["retries"]) == ("test", 4, 1, 1)


def test_infrastructure_failures_per_queue(history: Dataset) -> None:
    default, docker = history.ask("infrastructure_failures")
    # default: 9 jobs; 7 did not pass; 4 of those were the machine: 3 lost agents, 1 stopped one;
    # b3's lost agent was retried and passed.
    assert (default["queue"], default["jobs"], default["failed"], default["infrastructure"]) == ("default", 9, 7, 4)
    assert (default["agent_lost"], default["agent_stopped"], default["recovered_by_retry"]) == (3, 1, 1)
    assert default["infrastructure_share"] == pytest.approx(4 / 7)
    assert (docker["queue"], docker["jobs"], docker["infrastructure"], docker["infrastructure_share"]) == (
        "docker",
        1,
        1,
        1.0,
    )


def test_agent_health_per_queue_and_day_from_every_agent_event(history: Dataset) -> None:
    rows = [
        (r["day"], r["queue"], r["connected"], r["disconnected"], r["stopped"], r["lost"], r["blocked"])
        for r in history.ask("agent_health")
    ]
    assert rows == [
        (date(2025, 6, 2), "(registration)", 0, 0, 0, 0, 2),
        (date(2025, 6, 2), "default", 2, 1, 1, 1, 0),  # c stopping and stopped: one agent
        (date(2025, 6, 2), "docker", 0, 0, 0, 0, 1),
        (date(2025, 6, 3), "default", 1, 0, 0, 0, 0),
    ]
