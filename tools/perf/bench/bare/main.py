"""The baseline: functions-framework with nothing of ours (same signatures as our functions)."""

from typing import Any

import flask
import functions_framework


@functions_framework.http
def echo(request: flask.Request) -> flask.Response:
    return flask.Response(request.get_data(), status=200, mimetype="application/json")


@functions_framework.cloud_event
def noop(event: Any) -> None:
    return None
