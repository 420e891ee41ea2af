"""GitHub Apps: the installation that covers a repository (``GET /repos/{o}/{r}/installation``) and
installation tokens (``POST /app/installations/{id}/access_tokens``), both for the App's RS256 JWT
only, checked against the public key registered for the App (``core.app_caller``). An App is
installed per account: a repository of another account, or one left out of a selection, has no
installation (404), and its tokens cannot see it."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from tools.local.standin import Recorded, Reply, StandIn

from .core import Caller, Installation, account, error, route, state

DEMO_APP_ID = "4808"
DEMO_INSTALLATION_ID = "48080"
_SLUG = "buildkite-fanout"


def register(server: StandIn) -> None:
    route(server, "GET", r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/installation", _repo_installation, jwt=True)
    route(server, "POST", r"/app/installations/(?P<id>[^/]+)/access_tokens", _access_token, jwt=True, counts=False)


def register_app(
    server: StandIn,
    app_id: str,
    public_key_pem: str,
    installation_id: str,
    *,
    account: str = "my-great-org",
    repositories: set[str] | None = None,
    permissions: dict[str, str] | None = None,
) -> Installation:
    """An App with this public key, installed on ``account`` (all its repositories, or ``repositories``)."""
    state(server).apps[str(app_id)] = public_key_pem
    return install_app(server, app_id, installation_id, account, repositories=repositories, permissions=permissions)


def install_app(
    server: StandIn,
    app_id: str,
    installation_id: str,
    account: str,
    *,
    repositories: set[str] | None = None,
    permissions: dict[str, str] | None = None,
) -> Installation:
    selected = {r.lower() for r in repositories} if repositories is not None else None
    installation = Installation(str(installation_id), str(app_id), account, selected)
    if permissions is not None:
        installation.permissions = dict(permissions)
    state(server).installations[installation.id] = installation
    return installation


def generate_key() -> tuple[str, str]:
    """(private PEM, public PEM): a fresh RSA key for an App that exists only here."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private.decode(), public.decode()


def demo_app_env(server: StandIn) -> dict[str, str]:
    """A GitHub App for the local stack: a key made now (never stored), the App registered with its
    public key and installed on my-great-org; the environment github-status needs to use it."""
    private, public = generate_key()
    register_app(server, DEMO_APP_ID, public, DEMO_INSTALLATION_ID)
    return {"GITHUB_APP_ID": DEMO_APP_ID, "GITHUB_APP_PRIVATE_KEY": private}


def _repo_installation(server: StandIn, request: Recorded, params: dict[str, str], caller: Caller) -> Reply:
    gh = state(server)
    repo = gh.repo(f"{params['owner']}/{params['name']}")
    found = None
    if repo is not None and "*" not in repo.hidden_from:
        found = next(
            (i for i in gh.installations.values() if i.app_id == caller.app_id and i.sees(repo.full_name)), None
        )
    if found is None:
        return error(
            404,
            "Not Found",
            docs="https://docs.github.com/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app",
        )
    return Reply(200, installation_object(found))


def installation_object(installation: Installation) -> dict[str, Any]:
    number = int(installation.id) if installation.id.isdigit() else 1
    api = f"https://api.github.com/app/installations/{installation.id}"
    return {
        "id": number,
        "account": account(installation.account),
        "repository_selection": "all" if installation.repositories is None else "selected",
        "access_tokens_url": f"{api}/access_tokens",
        "repositories_url": "https://api.github.com/installation/repositories",
        "html_url": f"https://github.com/organizations/{installation.account}/settings/installations/{installation.id}",
        "app_id": int(installation.app_id) if installation.app_id.isdigit() else 1,
        "app_slug": _SLUG,
        "target_id": account(installation.account)["id"],
        "target_type": "Organization",
        "permissions": dict(installation.permissions),
        "events": [],
        "created_at": "2025-01-06T10:00:00Z",
        "updated_at": "2025-01-06T10:00:00Z",
        "single_file_name": None,
        "has_multiple_single_files": False,
        "single_file_paths": [],
        "suspended_by": None,
        "suspended_at": None,
    }


def _access_token(server: StandIn, request: Recorded, params: dict[str, str], caller: Caller) -> Reply:
    gh = state(server)
    installation = gh.installations.get(params["id"])
    if installation is None or installation.app_id != caller.app_id:
        return error(404, "Not Found")
    issued = "ghs_" + secrets.token_hex(18)
    expires = time.time() + gh.token_lifetime
    with gh.lock:
        gh.issued[issued] = (installation.id, expires)
    body = {
        "token": issued,
        "expires_at": datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "permissions": dict(installation.permissions),
        "repository_selection": "all" if installation.repositories is None else "selected",
    }
    return Reply(201, body)
