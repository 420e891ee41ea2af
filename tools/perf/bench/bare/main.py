"""The baseline: functions-framework with nothing of ours (same signatures as our functions).

``echo`` and ``noop`` answer at once; ``publish`` and ``arrive`` are the two ends of the bare
chain ``make bench`` times beside ours (tools/perf/bench/e2e.py). Their imports stay inside
them, so that the cold-start baseline loads nothing more than functions-framework and, when
``BARE_CLIENT_LIBRARY`` names one, the integration's own client library (its manifest's
``local.client_library``): what any implementation of that integration loads.
"""

import importlib
import os
import threading
from typing import Any

import flask
import functions_framework

_local = threading.local()

if os.environ.get("BARE_CLIENT_LIBRARY"):
    importlib.import_module(os.environ["BARE_CLIENT_LIBRARY"])


@functions_framework.http
def echo(request: flask.Request) -> flask.Response:
    return flask.Response(request.get_data(), status=200, mimetype="application/json")


@functions_framework.cloud_event
def noop(event: Any) -> None:
    return None


@functions_framework.http
def publish(request: flask.Request) -> flask.Response:
    """A bare ingress: the body as it came, published to BARE_TOPIC over the emulator's REST
    API on a keep-alive connection (as ours does), with no check and no attributes."""
    import base64
    import http.client
    import json

    if getattr(_local, "conn", None) is None:
        _local.conn = http.client.HTTPConnection(os.environ["PUBSUB_EMULATOR_HOST"], timeout=10)
    body = json.dumps({"messages": [{"data": base64.b64encode(request.get_data()).decode()}]})
    _local.conn.request("POST", f"/v1/{os.environ['BARE_TOPIC']}:publish", body=body)
    response = _local.conn.getresponse()
    return flask.Response(response.read(), status=response.status, mimetype="application/json")


@functions_framework.cloud_event
def arrive(event: Any) -> None:
    """A bare push target: tell RECORD_URL that the message arrived, with its data."""
    import base64
    import urllib.request

    data = base64.b64decode(event.data["message"]["data"])
    request = urllib.request.Request(os.environ["RECORD_URL"], data=data, method="POST")
    urllib.request.urlopen(request, timeout=10).close()


@functions_framework.cloud_event
def decode(event: Any) -> None:
    """The least a Pub/Sub function does per event: its message's data, decoded and parsed."""
    import base64
    import json

    json.loads(base64.b64decode(event.data["message"]["data"]))
