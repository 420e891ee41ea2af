"""Extract the schemas github-status's tests need from GitHub's OpenAPI description into github-api.schema.json.

    npm pack @octokit/openapi@23.0.2 && tar xzf octokit-openapi-23.0.2.tgz
    python functions/github-status/testdata/extract_openapi.py package/generated/api.github.com.deref.json

OpenAPI 3.0's ``nullable: true`` becomes a JSON Schema type list (``["string", "null"]``) and
examples are dropped, so ``jsonschema`` can validate with the 2020-12 draft. Nothing else changes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("github-api.schema.json")
# name: (path, method, response status); the request body's schema too for the calls we make with one
OPERATIONS = {
    "create_status": ("/repos/{owner}/{repo}/statuses/{sha}", "post", "201"),
    "list_statuses": ("/repos/{owner}/{repo}/commits/{ref}/statuses", "get", "200"),
    "installation_token": ("/app/installations/{installation_id}/access_tokens", "post", "201"),
    "repo_installation": ("/repos/{owner}/{repo}/installation", "get", "200"),
    "create_check_run": ("/repos/{owner}/{repo}/check-runs", "post", "201"),
    "update_check_run": ("/repos/{owner}/{repo}/check-runs/{check_run_id}", "patch", "200"),
    "list_check_runs": ("/repos/{owner}/{repo}/commits/{ref}/check-runs", "get", "200"),
}
WITH_REQUEST = {"create_status", "create_check_run", "update_check_run"}


def to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if k not in ("nullable", "example", "examples")}
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def extract(description: dict[str, Any], package_version: str) -> dict[str, Any]:
    result: dict[str, Any] = {
        "$comment": "Extracted by extract_openapi.py from npm @octokit/openapi; do not edit by hand.",
        "source": {
            "package": "@octokit/openapi",
            "version": package_version,
            "file": "generated/api.github.com.deref.json",
            "openapi": description.get("openapi"),
        },
    }
    for name, (path, method, status) in OPERATIONS.items():
        operation = description["paths"][path][method]
        entry: dict[str, Any] = {"operationId": operation["operationId"], "path": path, "method": method.upper()}
        body = operation.get("requestBody")
        if body and name in WITH_REQUEST:
            entry["request"] = to_json_schema(body["content"]["application/json"]["schema"])
        entry[f"response_{status}"] = to_json_schema(
            operation["responses"][status]["content"]["application/json"]["schema"]
        )
        result[name] = entry
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    source = Path(argv[0])
    package_json = source.parent.parent / "package.json"
    version = json.loads(package_json.read_text())["version"] if package_json.is_file() else "unknown"
    extracted = extract(json.loads(source.read_text()), version)
    OUT.write_text(json.dumps(extracted, indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
