"""A repeatable synthetic Buildkite history, for ``make report`` without a project and for the tests.

Webhook bodies, as Buildkite sends them, for three pipelines and two deploy pipelines over a
number of days, plus the agents that ran them: default branches go red and recover, feature
branches fail more often, some steps are flaky, some agents are lost mid-job (the job fails
with exit status -1 and is retried), some builds are canceled, skipped or wait on a block step,
deployments follow passed main builds, and now and then one fails or is rolled back. ``seed.py``
turns the bodies into rows with bigquery-metrics' own row builders.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from buildkite_events.timeutil import isoformat

HISTORY_END = datetime(2025, 6, 13, tzinfo=UTC)  # the day after the fixtures' builds
HISTORY_DAYS = 28
DEPLOY_PIPELINES = ("*-deploy",)  # the deploy_pipelines setting that fits this history
_ORG = "example-org"


@dataclass(frozen=True)
class Step:
    key: str
    name: str
    minutes: float  # typical run time
    queue: str = "default"
    flake: float = 0.0  # chance a run fails and then passes on its automatic retry
    parallelism: int = 1
    slowdown: float = 0.0  # run time grows by this fraction per day of history


@dataclass(frozen=True)
class PipelineSpec:
    slug: str
    name: str
    default_branch: str
    builds_per_day: int
    steps: tuple[Step, ...]
    block_chance: float = 0.0  # main builds that stop at a block step ("Release?")
    deploys_to: str | None = None  # the deploy pipeline a passed main build triggers


PIPELINES = (
    PipelineSpec(
        "web-app",
        "Web App",
        "main",
        8,
        (
            Step("lint", ":eslint: Lint", 1.0),
            Step("unit", ":jest: Unit tests", 4.0),
            Step("integration", ":cypress: Integration", 9.0, flake=0.12),
            Step("e2e", ":playwright: End to end", 12.0, slowdown=0.03),
        ),
        block_chance=0.3,
        deploys_to="web-app-deploy",
    ),
    PipelineSpec(
        "api",
        "API",
        "main",
        7,
        (
            Step("lint", ":golang: Vet", 1.5),
            Step("test", ":golang: Test", 6.0, parallelism=2, flake=0.05),
            Step("image", ":docker: Build image", 3.0, queue="docker"),
        ),
        deploys_to="api-deploy",
    ),
    PipelineSpec(
        "mobile",
        "Mobile",
        "develop",
        4,
        (
            Step("lint", ":swift: Lint", 1.0, queue="macos"),
            Step("ios", ":apple: iOS tests", 18.0, queue="macos", flake=0.08),
            Step("android", ":android: Android tests", 14.0),
        ),
    ),
)
DEPLOY_STEPS = (Step("deploy", ":rocket: Deploy", 3.0, queue="deploy"), Step("smoke", ":fire: Smoke test", 1.0))
_QUEUE_WAIT = {"default": 20.0, "docker": 45.0, "macos": 240.0, "deploy": 10.0}  # mean seconds waiting for an agent
_AGENTS = {"default": 6, "docker": 4, "macos": 2, "deploy": 1}  # agents per queue each day
_LOST = {"default": 0.004, "docker": 0.04, "macos": 0.01, "deploy": 0.0}  # chance an agent is lost mid-job
_FEATURE_BRANCHES = ("feature/login", "feature/search", "fix/flaky-cache", "chore/deps", "feature/payments")
_PEOPLE = ("Alice Nguyen", "Bob Okafor", "Chen Wei", "Dana Schmidt", "Eve Martins")
_TITLES = ("Fix pagination", "Bump dependencies", "Add search filters", "Refactor session store", "Tidy logging")


def synthetic_history(*, seed: int = 7, days: int = HISTORY_DAYS, end: datetime = HISTORY_END) -> list[dict[str, Any]]:
    """Webhook bodies (job.finished, build.finished, build.skipped, agent.*) in the order they happened.

    Deterministic for a seed.
    """
    return _World(random.Random(seed), end - timedelta(days=days), days).run()  # noqa: S311 - made-up data


@dataclass
class _World:
    rng: random.Random
    start: datetime
    days: int
    events: list[tuple[datetime, int, dict[str, Any]]] = field(default_factory=list)
    numbers: dict[str, int] = field(default_factory=dict)
    branch_commits: dict[str, list[str]] = field(default_factory=dict)  # pushed to feature branches, not yet merged
    deployed: dict[str, list[str]] = field(default_factory=dict)  # per deploy pipeline, commits in order
    agents: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # (queue, slot) -> today's agent
    red: dict[str, bool] = field(default_factory=dict)  # is the pipeline's default branch failing?

    def run(self) -> list[dict[str, Any]]:
        for day in range(self.days):
            self._agents_start_day(day)
            for spec in PIPELINES:
                for offset in sorted(self.rng.uniform(0, 86_000) for _ in range(spec.builds_per_day)):
                    scheduled = self.start + timedelta(days=day, seconds=offset)
                    self.red[spec.slug] = self._one_build(spec, day, scheduled, self.red.get(spec.slug, False))
            self._agents_end_day(day)
        self.events.sort(key=lambda item: (item[0], item[1]))
        return [body for _, _, body in self.events]

    def emit(self, when: datetime, body: dict[str, Any]) -> None:
        self.events.append((when, len(self.events), body))

    # --- builds ------------------------------------------------------------------------

    def _one_build(self, spec: PipelineSpec, day: int, scheduled: datetime, red: bool) -> bool:
        """Simulate one build; return whether the default branch is red after it."""
        rng = self.rng
        on_default = rng.random() < 0.6
        if on_default:
            fails = rng.random() < (0.35 if red else 0.08)
            red = fails
            pending = self.branch_commits.get(spec.slug) or []
            commit = pending.pop(0) if pending and rng.random() < 0.6 else self._sha()  # fast-forward merges
            branch = spec.default_branch
        else:
            fails = rng.random() < 0.15
            branch, commit = rng.choice(_FEATURE_BRANCHES), self._sha()
            self.branch_commits.setdefault(spec.slug, []).append(commit)
        build = self._build_body(spec, branch, commit, scheduled, source="webhook")
        if not on_default and rng.random() < 0.03:  # superseded before it started
            build |= {"state": "skipped", "finished_at": isoformat(scheduled + timedelta(seconds=rng.uniform(5, 60)))}
            self.emit(scheduled, _envelope("build.skipped", spec, build))
            return red
        failing_step = rng.randrange(len(spec.steps)) if fails else -1
        canceled = rng.random() < 0.03
        state, finished = self._run_steps(spec, build, spec.steps, scheduled, day, failing_step, canceled)
        build |= {"state": state, "finished_at": isoformat(finished)}
        if state == "canceled":
            build["cancel_reason"] = "superseded by a newer commit"
        if not (state == "passed" and on_default and spec.deploys_to):
            self.emit(finished, _envelope("build.finished", spec, build))
            return red
        if rng.random() < spec.block_chance:  # waits at "Release?"; half are released later, half never
            self.emit(
                finished, _envelope("build.finished", spec, {**build, "blocked": True, "blocked_state": "passed"})
            )
            if rng.random() < 0.5:
                return red
            finished += timedelta(minutes=rng.uniform(5, 240))  # someone clicks "Release"
            build = {**build, "finished_at": isoformat(finished)}
        self.emit(finished, _envelope("build.finished", spec, build))
        self._deploy(spec.deploys_to, commit, finished + timedelta(seconds=rng.uniform(5, 30)), day, "trigger_job")
        return red

    def _deploy(self, slug: str, commit: str, scheduled: datetime, day: int, source: str) -> None:
        rng = self.rng
        spec = PipelineSpec(slug, slug.replace("-", " ").title(), "main", 0, DEPLOY_STEPS)
        build = self._build_body(spec, "main", commit, scheduled, source=source)
        failing = 0 if rng.random() < 0.07 else -1
        state, finished = self._run_steps(spec, build, DEPLOY_STEPS, scheduled, day, failing, False)
        self.emit(
            finished, _envelope("build.finished", spec, build | {"state": state, "finished_at": isoformat(finished)})
        )
        history = self.deployed.setdefault(slug, [])
        if state != "passed":
            return
        history.append(commit)
        previous = [c for c in history[:-1] if c != commit]
        if source != "ui" and previous and rng.random() < 0.04:  # it went wrong in production: put back the last one
            self._deploy(slug, previous[-1], finished + timedelta(minutes=rng.uniform(10, 90)), day, "ui")

    def _run_steps(
        self,
        spec: PipelineSpec,
        build: dict[str, Any],
        steps: tuple[Step, ...],
        scheduled: datetime,
        day: int,
        failing_step: int,
        canceled: bool,
    ) -> tuple[str, datetime]:
        """Emit each job; return the build's state and when it finished (setting its started_at)."""
        rng = self.rng
        clock, state = scheduled, "passed"
        for index, step in enumerate(steps):
            step_end = clock
            for shard in range(step.parallelism):
                attempts = ["passed"]
                if index == failing_step:
                    attempts = ["failed"]
                elif rng.random() < step.flake:
                    attempts = ["failed", "passed"]
                if rng.random() < _LOST[step.queue]:  # the agent vanished: retried automatically (exit_status -1)
                    attempts = ["lost", *attempts] if rng.random() < 0.7 else ["lost", "lost"]
                if canceled and index == len(steps) // 2:
                    attempts = ["canceled"]
                runnable, previous_id = clock, None
                for attempt, outcome in enumerate(attempts):
                    started = runnable + timedelta(seconds=rng.expovariate(1 / _QUEUE_WAIT[step.queue]))
                    build["started_at"] = build["started_at"] or isoformat(started)
                    minutes = step.minutes * (1 + step.slowdown * day) * rng.lognormvariate(0, 0.15)
                    seconds = minutes * 60 * (rng.uniform(0.2, 0.6) if outcome != "passed" else 1)
                    finished, agent = started + timedelta(seconds=seconds), self._agent(step.queue)
                    retried = attempt < len(attempts) - 1  # the payload may already say it was retried
                    times = (runnable, started, finished)
                    job = _job_body(
                        self._uuid(), step, outcome, times, (shard, attempt, previous_id, retried), build, agent
                    )
                    self.emit(finished, _envelope("job.finished", spec, build, job))
                    if outcome == "lost":
                        self._agent_lost(step.queue, agent, finished)
                    previous_id, runnable = job["id"], finished + timedelta(seconds=1)
                step_end = max(step_end, runnable)
                if attempts[-1] != "passed":
                    state = "canceled" if attempts[-1] == "canceled" else "failed"
            clock = step_end
            if state != "passed":
                break
        return state, clock

    def _build_body(
        self, spec: PipelineSpec, branch: str, commit: str, scheduled: datetime, *, source: str
    ) -> dict[str, Any]:
        number = self.numbers[spec.slug] = self.numbers.get(spec.slug, 1000) + 1
        person = self.rng.choice(_PEOPLE)
        email = person.split()[0].lower() + "@example.com"
        api = f"https://api.buildkite.com/v2/organizations/{_ORG}/pipelines/{spec.slug}/builds/{number}"
        pull_request = None
        if branch != spec.default_branch:
            pull_request = {"id": str(self.rng.randint(100, 999)), "base": spec.default_branch, "repository": None}
        return {
            "id": self._uuid(),
            "url": api,
            "web_url": f"https://buildkite.com/{_ORG}/{spec.slug}/builds/{number}",
            "number": number,
            "state": "scheduled",
            "blocked": False,
            "blocked_state": "",
            "message": f"{self.rng.choice(_TITLES)}\n\nSigned-off-by: {person} <{email}>",
            "commit": commit,
            "branch": branch,
            "tag": None,
            "source": source,
            "author": {"name": person, "email": email},
            "creator": None,
            "pull_request": pull_request,
            "rebuilt_from": None,
            "cancel_reason": None,
            "created_at": isoformat(scheduled),
            "scheduled_at": isoformat(scheduled),
            "started_at": None,
            "finished_at": None,
        }

    # --- agents ------------------------------------------------------------------------

    def _agents_start_day(self, day: int) -> None:
        """Each morning every queue scales up to its agents; each night they shut down cleanly."""
        for queue, count in _AGENTS.items():
            for slot in range(count):
                self._connect(queue, slot, self.start + timedelta(days=day, seconds=self.rng.uniform(0, 300)))

    def _agents_end_day(self, day: int) -> None:
        for (queue, _), agent in sorted(self.agents.items()):
            when = self.start + timedelta(days=day + 1, seconds=-self.rng.uniform(60, 600))
            if queue != "deploy" and self.rng.random() < 0.15:  # scaled in early: told to stop
                self.emit(when, _agent_event("agent.stopped", agent, when, "stopped_at"))
            else:
                self.emit(when, _agent_event("agent.disconnected", agent, when, "disconnected_at"))

    def _connect(self, queue: str, slot: int, when: datetime) -> None:
        name = f"{queue}-{when:%m%d}-{slot}-{self.rng.randrange(16**4):04x}"
        agent = {"id": self._uuid(), "name": name, "queue": queue, "connected_at": isoformat(when)}
        self.agents[queue, slot] = agent
        self.emit(when, _agent_event("agent.connected", agent, when, "connected_at"))

    def _agent(self, queue: str) -> dict[str, Any]:
        return self.agents[queue, self.rng.randrange(_AGENTS[queue])]

    def _agent_lost(self, queue: str, agent: dict[str, Any], when: datetime) -> None:
        lost_at = when + timedelta(minutes=3)  # no heartbeat for three minutes
        self.emit(lost_at, _agent_event("agent.lost", agent, lost_at, "lost_at"))
        slot = next(s for (q, s), a in self.agents.items() if q == queue and a is agent)
        self._connect(queue, slot, lost_at + timedelta(minutes=2))  # the autoscaler replaces it

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _sha(self) -> str:
        return f"{self.rng.getrandbits(160):040x}"


def _job_body(
    job_id: str,
    step: Step,
    outcome: str,
    times: tuple[datetime, datetime, datetime],  # runnable, started, finished
    attempt_of: tuple[int, int, str | None, bool],  # shard, attempt, the job it retries, retried since
    build: Mapping[str, Any],
    agent: Mapping[str, Any],
) -> dict[str, Any]:
    runnable, started, finished = times
    shard, attempt, retry_of, retried = attempt_of
    lost = outcome == "lost"
    return {
        "id": job_id,
        "type": "script",
        "name": step.name,
        "step_key": step.key,
        "agent_query_rules": [f"queue={step.queue}"],
        "state": "failed" if lost else outcome,
        "web_url": f"{build['web_url']}#{job_id}",
        "soft_failed": False,
        "exit_status": {"passed": 0, "failed": 1, "lost": -1, "canceled": 143}.get(outcome),
        "signal": "SIGTERM" if outcome == "canceled" else None,
        "signal_reason": "cancel" if outcome == "canceled" else None,
        "agent": {"id": agent["id"], "name": agent["name"], "meta_data": [f"queue={step.queue}"]},
        "created_at": build["scheduled_at"],
        "scheduled_at": build["scheduled_at"],
        "runnable_at": isoformat(runnable),
        "started_at": isoformat(started),
        "finished_at": isoformat(finished),
        "retried": retried,
        "retries_count": attempt or None,
        "retry_type": "automatic" if attempt else None,
        "retry_source": {"job_id": retry_of, "retry_type": "automatic", "retried_by": None} if retry_of else None,
        "parallel_group_index": shard if step.parallelism > 1 else None,
        "parallel_group_total": step.parallelism if step.parallelism > 1 else None,
    }


def _envelope(
    event: str, spec: PipelineSpec, build: Mapping[str, Any], job: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"event": event, "build": dict(build)}
    if job is not None:
        body["job"] = dict(job)
    body["pipeline"] = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, spec.slug)),
        "url": f"https://api.buildkite.com/v2/organizations/{_ORG}/pipelines/{spec.slug}",
        "web_url": f"https://buildkite.com/{_ORG}/{spec.slug}",
        "name": spec.name,
        "slug": spec.slug,
        "default_branch": spec.default_branch,
    }
    body["sender"] = {"id": "00000000-0000-4000-8000-000000000000", "name": "Buildkite"}
    return body


def _agent_event(event: str, agent: Mapping[str, Any], when: datetime, stamp: str) -> dict[str, Any]:
    state = {"agent.connected": "connected", "agent.disconnected": "disconnected"}.get(event, event.split(".")[1])
    body = {
        "id": agent["id"],
        "url": f"https://api.buildkite.com/v2/organizations/{_ORG}/agents/{agent['id']}",
        "name": agent["name"],
        "connection_state": state,
        "hostname": agent["name"],
        "version": "3.98.1",
        "meta_data": [f"queue={agent['queue']}", "os=linux"],
        "connected_at": agent["connected_at"],
        "disconnected_at": None,
        "lost_at": None,
        "stopped_at": None,
    }
    body[stamp] = isoformat(when)
    return {
        "event": event,
        "agent": body,
        "sender": {"id": "00000000-0000-4000-8000-000000000000", "name": "Buildkite"},
    }
