"""Shared plumbing for the buildkite-fanout functions: parse any delivery into a typed
``BuildkiteEvent``, the ack/nack contract (``pubsub_handler``), typed config from the
environment, structured logs, Pub/Sub filters, HTTP answers as error kinds, chat text, and
state in Firestore (claims, ordered records, and what a build and its branch remember)."""

from .config import env, load_config
from .errors import ConfigError, FanoutError, InvalidEvent, Skip, TransientError
from .event import Agent, Build, BuildkiteEvent, Job, Person, Pipeline, PullRequest
from .handler import Nack, pubsub_handler
from .parse import parse_delivery

__all__ = [
    "Agent",
    "Build",
    "BuildkiteEvent",
    "ConfigError",
    "FanoutError",
    "InvalidEvent",
    "Job",
    "Nack",
    "Person",
    "Pipeline",
    "PullRequest",
    "Skip",
    "TransientError",
    "env",
    "load_config",
    "parse_delivery",
    "pubsub_handler",
]
