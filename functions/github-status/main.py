"""github-status: Buildkite builds on GitHub, as commit statuses and as check runs.

``GITHUB_REPORT`` chooses ``statuses`` (the default), ``checks`` or ``both``.

- Commit statuses (github_statuses): one per build event under ``buildkite/<pipeline>``, never
  letting a late event undo a newer one. A token or a GitHub App may set them.
- Check runs (github_checks): one per build, created on its first event and updated as it goes,
  its summary naming the failed jobs. Only a GitHub App may write them (github_app): its
  installation is configured, or looked up per repository.

The failed jobs come from ``job.finished`` events, which this function receives itself and
keeps in the shared per-build record (buildkite_events.builds), whichever other functions run.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import functions_framework
from github_api import GitHub, Target, target_of, web_host
from github_statuses import STATES, Status, publish, status_for

from buildkite_events import BuildkiteEvent, InvalidEvent, Skip, env, pubsub_handler
from buildkite_events.state import Records

if TYPE_CHECKING:  # check runs, the App and the build records load only when GITHUB_REPORT asks for them
    from github_checks import CheckRuns

REPORTS = {"statuses": ("statuses",), "checks": ("checks",), "both": ("statuses", "checks")}


@dataclass(frozen=True)
class Config:
    api_url: str = env("GITHUB_API_URL", default="https://api.github.com")
    token: str = env("GITHUB_TOKEN", default="", secret=True)
    app_id: str = env("GITHUB_APP_ID", default="")
    app_private_key: str = env("GITHUB_APP_PRIVATE_KEY", default="", secret=True)
    installation_id: str = env("GITHUB_APP_INSTALLATION_ID", default="")
    report: str = env("GITHUB_REPORT", default="statuses")
    context: str = env("GITHUB_STATUS_CONTEXT", default="buildkite/{pipeline}")
    blocked_state: str = env("GITHUB_BLOCKED_STATE", default="pending")
    timeout_seconds: float = env("GITHUB_TIMEOUT_SECONDS", default=10.0)

    def __post_init__(self) -> None:
        if not self.api_url.startswith(("https://", "http://")):
            raise ValueError("GITHUB_API_URL must be an http(s) URL, e.g. https://api.github.com")
        host = (urlsplit(self.api_url).hostname or "").lower()
        if host == "github.com" or (host.endswith(".ghe.com") and not host.startswith("api.")):
            raise ValueError(f"GITHUB_API_URL: the API of {host} is https://api.{host}")
        if self.report not in REPORTS:
            raise ValueError(f"GITHUB_REPORT must be one of {', '.join(REPORTS)}")
        if self.blocked_state not in STATES:
            raise ValueError(f"GITHUB_BLOCKED_STATE must be one of {', '.join(STATES)}")
        if self.app_id.strip() or self.app_private_key.strip():
            needed = {"GITHUB_APP_ID": self.app_id, "GITHUB_APP_PRIVATE_KEY": self.app_private_key}
            missing = [name for name, value in needed.items() if not value.strip()]
            if missing:
                raise ValueError(f"GitHub App authentication also needs {', '.join(missing)}")
        elif self.installation_id.strip():
            raise ValueError("GITHUB_APP_INSTALLATION_ID is set: set GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY too")
        elif "checks" in self.reports:
            raise ValueError(
                f"GITHUB_REPORT={self.report} needs GitHub App authentication (GITHUB_APP_ID and "
                "GITHUB_APP_PRIVATE_KEY): GitHub lets only Apps write check runs; a GITHUB_TOKEN can set "
                "commit statuses only (GITHUB_REPORT=statuses)"
            )
        elif not self.token.strip():
            raise ValueError("set GITHUB_TOKEN, or GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY")
        if not 0 < self.timeout_seconds <= 60:
            raise ValueError("GITHUB_TIMEOUT_SECONDS must be more than 0 and at most 60")
        if self.installation_id.strip() and not self.installation_id.strip().isdigit():
            raise ValueError("GITHUB_APP_INSTALLATION_ID must be a number (or empty: found per repository)")
        try:
            self.context.format(pipeline="p", organization="o")
        except (KeyError, IndexError, ValueError):
            raise ValueError("GITHUB_STATUS_CONTEXT may only use {pipeline} and {organization}") from None

    @property
    def uses_app(self) -> bool:
        return bool(self.app_id.strip())

    @property
    def host(self) -> str:
        """The web host whose repositories this API serves (github.com, <sub>.ghe.com, or the GHES host)."""
        return web_host(self.api_url)

    @property
    def reports(self) -> tuple[str, ...]:
        return REPORTS.get(self.report, ())


def reported(event: BuildkiteEvent, config: Config) -> None:
    """Before the event is claimed: job events feed check runs only, so with statuses alone
    they are turned away without a Firestore call."""
    if event.kind == "job" and "checks" not in config.reports:
        raise Skip(f"job events feed check runs only; GITHUB_REPORT={config.report}")


@functions_framework.cloud_event
@pubsub_handler(Config, before_claim=reported)
def update_github_status(event: BuildkiteEvent, config: Config) -> str:
    if event.kind == "job":
        return record_job(event, config)
    target = target_of(event, config.host, status_context(event, config))
    done: list[str] = []
    skipped: list[str] = []
    invalid: list[InvalidEvent] = []
    for report in config.reports:
        try:
            if report == "statuses":
                done.append(publish(plan_status(event, config, target), _github(config), _records()))
            else:
                from github_checks import plan_check

                done.append(_check_runs(config).publish(plan_check(event, target)))
        except Skip as why:
            skipped.append(str(why))
        except InvalidEvent as why:  # the other report may still go through (e.g. 1,000 statuses already)
            invalid.append(why)
    if done:
        return "; ".join(done + [str(why) for why in invalid] + skipped)
    if invalid:
        raise invalid[0]
    raise Skip("; ".join(skipped))


def record_job(event: BuildkiteEvent, config: Config) -> str:
    """Keep a finished job in the build's record; if that changed its failed jobs, show them on the check run."""
    if event.event_type != "job.finished":
        raise Skip(f"{event.event_type} changes no failed jobs")
    from github_checks import plan_check

    from buildkite_events.builds import affects_failed_jobs, remember_job

    if not affects_failed_jobs(event):
        raise Skip("the job neither failed nor was retried: the failed jobs stay as they are")
    target = target_of(event, config.host, status_context(event, config))
    note = remember_job(event)  # the record is shared: another function may have kept the job already
    return f"{note}; {_check_runs(config).publish(plan_check(event, target), refresh=True)}"


def plan_status(event: BuildkiteEvent, config: Config, target: Target | None = None) -> Status:
    """The commit status this build event asks for; ``Skip`` says why it asks for none."""
    target = target or target_of(event, config.host, status_context(event, config))
    return status_for(event, target, config.blocked_state)


def status_context(event: BuildkiteEvent, config: Config) -> str:
    return config.context.format(pipeline=event.pipeline_slug or "pipeline", organization=event.organization or "")


@cache
def _github(config: Config) -> GitHub:
    app = None
    if config.uses_app:
        from github_app import App

        app = App(config.app_id.strip(), config.app_private_key, config.installation_id.strip())
    return GitHub(config.api_url, token=config.token, app=app, timeout=config.timeout_seconds)


@cache
def _records() -> Records:
    return Records("github-status.status")  # one per repository, commit and context


@cache
def _check_runs(config: Config) -> CheckRuns:
    from github_checks import CheckRuns

    return CheckRuns(_github(config))
