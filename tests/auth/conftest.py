"""Fixtures of the authentication tests: an OIDC issuer and a server that trusts it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth.issuer import Issuer
from tests.conftest import Server

AUDIENCE = "jobgate"
SUBMIT_GROUP = "src/production"
ADMIN_GROUP = "src/admins"
SHARE_GROUP = "src/team"
A, B = "a", "b"
"""Owner namespaces of the two issuers of :func:`auth_server` (``a=url,b=url``)."""


def everywhere(group: str) -> str:
    """A group setting naming ``group`` locally and at both issuers of :func:`auth_server`."""
    return f"{group},{A}:{group},{B}:{group}"


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    iss = Issuer()
    yield iss
    iss.close()


@pytest.fixture(scope="session")
def second_issuer() -> Iterator[Issuer]:
    """Another trusted issuer (EGI Check-in beside a local Keycloak, say)."""
    iss = Issuer()
    yield iss
    iss.close()


def add_basic_user(path: Path, name: str, password: str, *groups: str) -> None:
    """``jobgate user set`` as an operator runs it."""
    args = [sys.executable, "-m", "jobgate", "user", "set", str(path), name, "--password-stdin"]
    for g in groups:
        args += ["--group", g]
    subprocess.run(args, input=password + "\n", text=True, check=True, capture_output=True)


@pytest.fixture(scope="session")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users"
    add_basic_user(path, "carol", "carol-pw", SUBMIT_GROUP)
    add_basic_user(path, "dave", "dave-pw")  # in no group: may not submit
    return path


def auth_env(issuer: Issuer, users_file: Path, **extra: str) -> dict[str, str]:
    return {
        "JOBGATE_AUTH": "oidc,token,basic",
        "JOBGATE_OIDC_ISSUERS": issuer.url,
        "JOBGATE_OIDC_AUDIENCE": AUDIENCE,
        "JOBGATE_OIDC_GROUPS_CLAIM": "wlcg.groups",
        "JOBGATE_OIDC_JWKS_MIN_REFRESH": "0",
        "JOBGATE_SUBMIT_GROUPS": SUBMIT_GROUP,
        "JOBGATE_ADMIN_GROUPS": ADMIN_GROUP,
        "JOBGATE_SHARE_GROUPS": SHARE_GROUP,
        "JOBGATE_BASIC_USERS_FILE": str(users_file),
        "JOBGATE_RUNTIME": "process",
        **extra,
    }


@pytest.fixture(scope="session")
def auth_server(
    tmp_path_factory: pytest.TempPathFactory,
    issuer: Issuer,
    second_issuer: Issuer,
    users_file: Path,
) -> Iterator[Server]:
    """A server with OIDC, service tokens and basic users on, as production runs it."""
    env = auth_env(
        issuer,
        users_file,
        JOBGATE_CREDENTIAL_BACKENDS="local",
        JOBGATE_OIDC_ISSUERS=f"{A}={issuer.url},{B}={second_issuer.url}/",
        JOBGATE_SUBMIT_GROUPS=everywhere(SUBMIT_GROUP),
        JOBGATE_ADMIN_GROUPS=everywhere(ADMIN_GROUP),
        JOBGATE_SHARE_GROUPS=everywhere(SHARE_GROUP),
    )
    srv = Server(tmp_path_factory.mktemp("authsrv") / "data", env, log_level="debug").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def admin_token(auth_server: Server) -> str:
    """The token the server wrote on its first start (``<data_dir>/admin-token``)."""
    return (auth_server.data_dir / "admin-token").read_text().strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_token(server: Server, admin: str, owner: str, *scopes: str, **more: object) -> str:
    r = httpx.post(
        server.url + "/api/v1/tokens",
        json={"owner": owner, "scopes": list(scopes) or ["submit"], **more},
        headers=bearer(admin),
    )
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token
