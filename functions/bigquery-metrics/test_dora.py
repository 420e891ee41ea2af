"""The DORA four keys (queries/dora_*.sql over the deployments view) on hand-made histories, numbers
worked out by hand below; and the two ways fourkeys gets them wrong, which these must not.

Deploy pipelines are configuration: the dataset is made with deploy_pipelines = ["*-deploy"],
rendered into the view as Terraform renders it.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from tools.bigquery import bigquery_client, create_dataset, deploy_pipelines_regex, render, run_query
from tools.local.emulators import Service
from tools.ops.report.seed import seed, seed_rows

SINCE, UNTIL = datetime.fromisoformat("2025-06-01T00:00:00+00:00"), datetime.fromisoformat("2025-06-15T00:00:00+00:00")
HOUR = 3600.0
_ids = itertools.count(1)


def t(text: str) -> datetime:
    return datetime.fromisoformat(f"2025-{text}:00+00:00")


def sha(name: str) -> str:
    """A full commit SHA per name; "HEAD" stays what a UI build says."""
    return name if name == "HEAD" else hashlib.sha1(name.encode()).hexdigest()  # noqa: S324 - not security


def build(
    pipeline: str, number: int, commit: str, state: str, finished: str, *, minutes: float = 10, **extra: Any
) -> dict[str, Any]:
    """A build.finished webhook body; it was created ``minutes`` before it finished."""
    done = t(finished)
    created = done - timedelta(minutes=minutes)
    body = {
        "id": f"{pipeline}-{number}-{next(_ids)}",
        "number": number,
        "state": state,
        "blocked": False,
        "branch": "main",
        "commit": sha(commit),
        "source": "trigger_job",
        "created_at": created.isoformat(),
        "scheduled_at": created.isoformat(),
        "started_at": (created + timedelta(seconds=5)).isoformat(),
        "finished_at": done.isoformat(),
    } | extra
    return {"event": "build.finished", "build": body, "pipeline": {"slug": pipeline, "default_branch": "main"}}


# --- the history -----------------------------------------------------------------------
#
# The window is 2025-06-01 to 2025-06-15: two whole weeks, counted back from its end
# (week 1: 06-01..06-07, week 0: 06-08..06-14). Commits a..g are first built on "shop" (a
# pull request or the main branch) at the times below; "shop-deploy" deploys them:
#
#   #0  z  passed 05-31 10:00   before the window
#   #1  a  passed 06-01 12:00   a first built 06-01 08:00 (and again at 11:00): lead time 4 h
#   #2  b  passed 06-02 10:00   b first built 09:00: 1 h
#   #3  c  FAILED 06-03 10:00   incident 1 starts
#   #4  c  FAILED 06-03 10:30   the same incident: counted once
#   #5  c  passed 06-03 11:00   incident 1 restored after 1 h; c first built 09:00: 2 h
#   #6  d  passed 06-05 12:00   d first built 10:00: 2 h ... and taken back out by #7: a failed change,
#                               incident 2 starts
#   #7  c  passed 06-05 12:30   the rollback: restores incident 2 after 30 min; no lead time (c was out before)
#   #8  e  passed 06-08 11:00   e first built 10:00: 1 h
#   #9  f  passed 06-09 13:00   f first built 12:00: 1 h
#   #10 g  FAILED 06-10 10:00   incident 3 starts, and is still open at the window's end (4 d 14 h)
#   #11 g  canceled 06-10 10:30  not an attempt
#   #12 g  FAILED 06-14 09:00   still incident 3
#   #13 h  blocked 06-12        waiting for approval: not an attempt
#
# "api-deploy" deploys i (first built 06-04 09:30) at 06-04 10:00, j (first built 06-09 10:00)
# at 06-11 10:00, and a UI build of "HEAD" at 06-12 10:00. "docs-deploy-preview" and
# "shop-deploy-canary" are not deploy pipelines: *-deploy is anchored.

FIRST_BUILDS = [
    build("shop", 1, "a", "passed", "06-01T08:10"),
    build("shop", 2, "a", "passed", "06-01T11:10"),
    build("shop", 3, "b", "passed", "06-02T09:10"),
    build("shop", 4, "c", "failed", "06-03T09:10"),
    build("shop", 5, "d", "passed", "06-05T10:10"),
    build("shop", 6, "e", "passed", "06-08T10:10"),
    build("shop", 7, "f", "passed", "06-09T12:10"),
    build("shop", 8, "g", "passed", "06-10T09:10"),
    build("api", 1, "i", "passed", "06-04T09:40"),
    build("api", 2, "j", "passed", "06-09T10:10"),
]
DEPLOYS = [
    build("shop-deploy", 0, "z", "passed", "05-31T10:00"),
    build("shop-deploy", 1, "a", "passed", "06-01T12:00"),
    build("shop-deploy", 2, "b", "passed", "06-02T10:00"),
    build("shop-deploy", 3, "c", "failed", "06-03T10:00"),
    build("shop-deploy", 4, "c", "failed", "06-03T10:30"),
    build("shop-deploy", 5, "c", "passed", "06-03T11:00"),
    build("shop-deploy", 6, "d", "passed", "06-05T12:00"),
    build("shop-deploy", 7, "c", "passed", "06-05T12:30", source="ui"),
    build("shop-deploy", 8, "e", "passed", "06-08T11:00"),
    build("shop-deploy", 9, "f", "passed", "06-09T13:00"),
    build("shop-deploy", 10, "g", "failed", "06-10T10:00"),
    build("shop-deploy", 11, "g", "canceled", "06-10T10:30"),
    build("shop-deploy", 12, "g", "failed", "06-14T09:00"),
    build("shop-deploy", 13, "h", "passed", "06-12T10:00", blocked=True, blocked_state="passed"),
    build("api-deploy", 1, "i", "passed", "06-04T10:00"),
    build("api-deploy", 2, "j", "passed", "06-11T10:00"),
    build("api-deploy", 3, "HEAD", "passed", "06-12T10:00", source="ui"),
    build("docs-deploy-preview", 1, "a", "failed", "06-02T10:00"),
    build("shop-deploy-canary", 1, "a", "failed", "06-02T10:00"),
]


class Dora:
    def __init__(self, client: Any, project: str, dataset: str) -> None:
        self.client, self.project, self.dataset = client, project, dataset

    def ask(self, name: str, since: datetime = SINCE, until: datetime = UNTIL) -> dict[str, dict[str, Any]]:
        rows = run_query(self.client, name, project=self.project, dataset=self.dataset, since=since, until=until)
        return {row["pipeline"]: row for row in rows}

    def deployments(self) -> list[dict[str, Any]]:
        from tools.bigquery import select

        sql = "SELECT * FROM `${project}.${bigquery_dataset}.deployments` ORDER BY pipeline_slug, finished_at"
        return select(self.client, render(sql, self.project, self.dataset))


@pytest.fixture
def dora_dataset(bigquery_emulator: Service, gcp_project: str) -> Iterator[Dora]:
    """A dataset made as Terraform makes it with deploy_pipelines = ["*-deploy"]."""
    import uuid

    client = bigquery_client(gcp_project, bigquery_emulator.url)
    dataset = f"dora_{uuid.uuid4().hex[:12]}"
    create_dataset(client, gcp_project, dataset, ["*-deploy"])
    yield Dora(client, gcp_project, dataset)
    client.delete_dataset(f"{gcp_project}.{dataset}", delete_contents=True, not_found_ok=True, timeout=30)


@pytest.fixture
def dora(dora_dataset: Dora) -> Dora:
    seed(dora_dataset.client, dora_dataset.project, dora_dataset.dataset, seed_rows(FIRST_BUILDS + DEPLOYS))
    return dora_dataset


def test_the_deployments_view_takes_the_configured_pipelines_and_flags_each_attempt(dora: Dora) -> None:
    rows = dora.deployments()
    assert {row["pipeline_slug"] for row in rows} == {"shop-deploy", "api-deploy"}  # the globs are anchored
    shop = {row["number"]: row for row in rows if row["pipeline_slug"] == "shop-deploy"}
    assert sorted(shop) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]  # canceled #11, blocked #13: no verdict
    assert [n for n, row in shop.items() if row["rolled_back"]] == [6]
    assert sorted(n for n, row in shop.items() if row["failed_change"]) == [3, 4, 6, 10, 12]
    assert shop[1]["first_built_at"] == t("06-01T08:00")  # its first build, not the later main build
    assert shop[1]["lead_time_seconds"] == pytest.approx(4 * HOUR)
    assert shop[7]["lead_time_seconds"] is None  # a rollback brings no new change


def test_deployment_frequency(dora: Dora) -> None:
    rows = dora.ask("dora_deployment_frequency")
    assert list(rows) == ["(all)", "api-deploy", "shop-deploy"]
    shop, api, everything = rows["shop-deploy"], rows["api-deploy"], rows["(all)"]
    # shop: 11 attempts, 7 passed (#1 #2 #5 #6 #7 #8 #9) on 6 days; weeks: 5 (06-01..07) and 2: median 3.5.
    assert (shop["attempts"], shop["deployments"], shop["deployment_days"]) == (11, 7, 6)
    assert (shop["deployments_per_week"], shop["median_weekly"], shop["band"]) == (pytest.approx(3.5), 3.5, "high")
    # api: 06-04, then 06-11 and 06-12: weeks 1 and 2.
    assert (api["deployments"], api["median_weekly"], api["band"]) == (3, 1.5, "high")
    assert (everything["attempts"], everything["deployments"], everything["deployment_days"]) == (14, 10, 9)
    assert (everything["median_weekly"], everything["deployments_per_week"]) == (5.0, pytest.approx(5.0))


@pytest.mark.parametrize(
    ("days", "window_days", "expected"),
    [
        ([d for d in range(14) for _ in (0, 1)], 14, "elite"),  # twice a day: 14 a week
        (list(range(14)), 14, "elite"),  # daily: 7 a week
        ([0, 3, 7, 10], 14, "high"),  # twice a week
        ([0, 1, 2, 3, 4, 5, 6, 6, 6, 6], 28, "medium"),  # ten in one week, none in three: the median week is empty
        ([0], 56, "low"),  # once in eight weeks
    ],
    ids=["twice-daily", "daily", "twice-weekly", "one-busy-week", "once-in-two-months"],
)
def test_deployment_frequency_bands(dora_dataset: Dora, days: list[int], window_days: int, expected: str) -> None:
    until = SINCE + timedelta(days=window_days)
    at = [(SINCE + timedelta(days=day, hours=12)).strftime("%m-%dT%H:%M") for day in days]
    bodies = [build("app-deploy", n, str(n % 10), "passed", when) for n, when in enumerate(at, start=1)]
    seed(dora_dataset.client, dora_dataset.project, dora_dataset.dataset, seed_rows(bodies))
    assert dora_dataset.ask("dora_deployment_frequency", until=until)["app-deploy"]["band"] == expected


def test_lead_time_for_changes(dora: Dora) -> None:
    rows = dora.ask("dora_lead_time")
    shop, api, everything = rows["shop-deploy"], rows["api-deploy"], rows["(all)"]
    # shop: 4 h, 1 h, 2 h, 2 h, 1 h, 1 h (the rollback #7 is not measured): median 1.5 h.
    assert (shop["deployments"], shop["measured"]) == (7, 6)
    assert shop["median_lead_time_seconds"] == pytest.approx(1.5 * HOUR)
    assert shop["p90_lead_time_seconds"] == pytest.approx(3 * HOUR)  # between 2 h and 4 h: 2 + 0.5 x 2
    assert shop["band"] == "high"
    # api: 30 min and 48 h; the UI build of HEAD names no commit.
    assert (api["deployments"], api["measured"]) == (3, 2)
    assert api["median_lead_time_seconds"] == pytest.approx((0.5 + 48) / 2 * HOUR)
    assert (everything["measured"], everything["median_lead_time_seconds"]) == (8, pytest.approx(1.5 * HOUR))


def test_change_failure_rate_counts_each_attempt_once_over_every_attempt(dora: Dora) -> None:
    rows = dora.ask("dora_change_failure_rate")
    shop, api, everything = rows["shop-deploy"], rows["api-deploy"], rows["(all)"]
    # shop: 4 failed attempts (#3 #4 #10 #12) and 1 rolled back (#6) of 11 attempts.
    assert (shop["attempts"], shop["failed_deployments"], shop["rolled_back"]) == (11, 4, 1)
    assert shop["change_failure_rate"] == pytest.approx(5 / 11)
    assert shop["band"] == "low"  # above 45 %
    # fourkeys divides failures by successful deployments only: 5 / 7, and a rate can pass 100 %.
    assert shop["change_failure_rate"] != pytest.approx(5 / 7)
    assert (api["change_failure_rate"], api["band"]) == (0.0, "elite")
    assert everything["change_failure_rate"] == pytest.approx(5 / 14)
    assert everything["band"] == "medium"


def test_time_to_restore_counts_an_incident_once_however_many_failures_it_has(dora: Dora) -> None:
    rows = dora.ask("dora_time_to_restore")
    assert set(rows) == {"(all)", "shop-deploy"}  # api never failed
    shop = rows["shop-deploy"]
    # Three incidents, not five failed changes: #3+#4 (1 h), #6 (30 min), #10+#12 (open at the
    # window's end: 06-10 10:00 to 06-15 00:00, 110 h, which the median and mean include).
    assert (shop["incidents"], shop["restored"], shop["still_failing"]) == (3, 2, True)
    assert shop["median_time_to_restore_seconds"] == pytest.approx(HOUR)
    assert shop["mean_time_to_restore_seconds"] == pytest.approx((HOUR + HOUR / 2 + 110 * HOUR) / 3)
    assert shop["longest_time_to_restore_seconds"] == pytest.approx(110 * HOUR)
    assert shop["band"] == "high"  # an hour is not under an hour
    assert rows["(all)"]["incidents"] == 3


def test_an_incident_keeps_its_real_start_across_the_window_edge(dora: Dora) -> None:
    # From 06-03 10:30: incident 1 began at 10:00, before this window, so it is not this window's.
    rows = dora.ask("dora_time_to_restore", since=t("06-03T10:15"))
    assert rows["shop-deploy"]["incidents"] == 2
    # Ending at 06-03 10:45: incident 1 is still open then; 45 minutes so far.
    rows = dora.ask("dora_time_to_restore", until=t("06-03T10:45"))
    assert (rows["shop-deploy"]["restored"], rows["shop-deploy"]["still_failing"]) == (0, True)
    assert rows["shop-deploy"]["median_time_to_restore_seconds"] == pytest.approx(0.75 * HOUR)
    assert rows["shop-deploy"]["band"] == "elite"


def test_no_deploy_pipelines_means_no_deployments(dora: Dora) -> None:
    """The same history in a dataset made without deploy_pipelines: every key is empty."""
    import uuid

    dataset = f"dora_{uuid.uuid4().hex[:12]}"
    create_dataset(dora.client, dora.project, dataset)
    try:
        seed(dora.client, dora.project, dataset, seed_rows(FIRST_BUILDS + DEPLOYS))
        empty = Dora(dora.client, dora.project, dataset)
        assert empty.deployments() == []
        assert all(empty.ask(name) == {} for name in ("dora_deployment_frequency", "dora_change_failure_rate"))
    finally:
        dora.client.delete_dataset(f"{dora.project}.{dataset}", delete_contents=True, not_found_ok=True, timeout=30)


@pytest.mark.parametrize(
    ("globs", "pattern"),
    [
        ([], "^$"),
        (["*-deploy"], "^(.*-deploy)$"),
        (["deploy-?", "release"], "^(deploy-.|release)$"),
    ],
)
def test_deploy_pipelines_become_one_anchored_pattern_as_in_terraform(globs: list[str], pattern: str) -> None:
    assert deploy_pipelines_regex(globs) == pattern


@pytest.mark.parametrize("glob", ["Deploy", "deploy.*", "a/b", "deploy|x", ""])
def test_a_glob_that_is_not_a_slug_is_refused(glob: str) -> None:
    with pytest.raises(ValueError, match="slug characters"):
        deploy_pipelines_regex([glob])
