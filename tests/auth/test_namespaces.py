"""Owners are namespaced: the same name from two issuers, a basic user or a token is not one
owner, unless an administrator maps issuers to one namespace on purpose."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.conftest import (
    ADMIN_GROUP,
    AUDIENCE,
    SHARE_GROUP,
    SUBMIT_GROUP,
    bearer,
    make_token,
)
from tests.auth.issuer import Issuer
from tests.conftest import Server

HELD = {"name": "ns", "script": "true", "hold": True}


def submit(server: Server, headers: dict[str, str]) -> dict[str, Any]:
    r = httpx.post(server.url + "/api/v1/jobs", json=HELD, headers=headers)
    assert r.status_code == 201, r.text
    job: dict[str, Any] = r.json()
    return job


def search_owner(server: Server, headers: dict[str, str], value: Any, op: str = "eq") -> set[str]:
    body = {"filters": [{"field": "owner", "op": op, "value": value}], "limit": 1000}
    r = httpx.post(server.url + "/api/v1/jobs/search", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return {j["id"] for j in r.json()["jobs"]}


def oidc(iss: Issuer, sub: str, *groups: str) -> dict[str, str]:
    return bearer(iss.token(sub, groups=list(groups or [SUBMIT_GROUP])))


def test_same_sub_at_two_issuers_are_two_owners(
    auth_server: Server, issuer: Issuer, second_issuer: Issuer, admin_token: str
) -> None:
    alice_a, alice_b = oidc(issuer, "alice"), oidc(second_issuer, "alice")
    mine = submit(auth_server, alice_a)
    assert mine["owner"] == "a:alice"
    theirs = submit(auth_server, alice_b)
    assert theirs["owner"] == "b:alice"
    url = auth_server.url
    for path in (f"/api/v1/jobs/{mine['id']}", f"/ga4gh/tes/v1/tasks/{mine['id']}"):
        r = httpx.get(url + path, headers=alice_b)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["code"] == "not_found"
    assert httpx.post(f"{url}/api/v1/jobs/{mine['id']}/cancel", headers=alice_b).status_code == 404
    bulk = httpx.post(f"{url}/api/v1/jobs/cancel", json={"ids": [mine["id"]]}, headers=alice_b)
    assert bulk.json()["results"][0]["error"]["status"] == 404
    tes = httpx.post(f"{url}/ga4gh/tes/v1/tasks/{mine['id']}:cancel", headers=alice_b)
    assert tes.status_code == 404
    # Untouched (still held); its owner still controls it.
    assert httpx.get(f"{url}/api/v1/jobs/{mine['id']}", headers=alice_a).json()["state"] == "PAUSED"
    assert httpx.post(f"{url}/api/v1/jobs/{mine['id']}/cancel", headers=alice_a).status_code == 200
    # A bare owner in a search: that name in every namespace, within what the caller sees.
    assert mine["id"] in search_owner(auth_server, alice_a, "alice")
    assert theirs["id"] not in search_owner(auth_server, alice_a, "alice")
    assert mine["id"] not in search_owner(auth_server, alice_b, "alice")
    admin = bearer(admin_token)
    assert {mine["id"], theirs["id"]} <= search_owner(auth_server, admin, "alice")
    only_a = search_owner(auth_server, admin, "a:alice")
    assert mine["id"] in only_a and theirs["id"] not in only_a
    assert theirs["id"] in search_owner(auth_server, admin, ["b:alice", "nobody"], "in")
    assert mine["id"] not in search_owner(auth_server, admin, "alice", "neq")
    # Worksteps show the full owner too.
    ws = httpx.post(
        url + "/v1/worksteps",
        json={"container_image": "alpine", "executable_entrypoint": "true"},
        headers=alice_a,
    )
    got = httpx.get(f"{url}/v1/worksteps/{ws.json()['id']}", headers=alice_a).json()
    assert got["created_by"] == "a:alice"
    assert httpx.get(f"{url}/v1/worksteps/{ws.json()['id']}", headers=alice_b).status_code == 404


def test_an_oidc_sub_named_admin_is_not_the_bootstrap_admin(
    auth_server: Server, issuer: Issuer, admin_token: str
) -> None:
    boot = submit(auth_server, bearer(admin_token))
    assert boot["owner"] == "jobgate:admin"
    fake = oidc(issuer, "admin")
    me = httpx.get(auth_server.url + "/api/v1/me", headers=fake).json()
    assert (me["name"], me["admin"]) == ("a:admin", False)
    url = f"{auth_server.url}/api/v1/jobs/{boot['id']}"
    assert httpx.get(url, headers=fake).status_code == 404
    assert httpx.post(url + "/cancel", headers=fake).status_code == 404
    assert boot["id"] not in search_owner(auth_server, fake, "admin")
    assert boot["id"] not in search_owner(auth_server, fake, "jobgate:admin")
    # Nor is a basic user: users and tokens cannot spell jobgate:admin.
    assert httpx.get(url, auth=("carol", "carol-pw")).status_code == 404


def test_a_token_acts_for_whom_its_owner_names_in_full(
    auth_server: Server, issuer: Issuer, admin_token: str
) -> None:
    job = submit(auth_server, oidc(issuer, "rob"))
    url = f"{auth_server.url}/api/v1/jobs/{job['id']}"
    robot_for_rob = bearer(make_token(auth_server, admin_token, "a:rob", groups=[SUBMIT_GROUP]))
    assert httpx.get(url, headers=robot_for_rob).status_code == 200
    plain = bearer(make_token(auth_server, admin_token, "rob", groups=[SUBMIT_GROUP]))
    assert httpx.get(auth_server.url + "/api/v1/me", headers=plain).json()["name"] == "token:rob"
    assert httpx.get(url, headers=plain).status_code == 404
    bad = httpx.post(
        auth_server.url + "/api/v1/tokens", json={"owner": "iam:rob"}, headers=bearer(admin_token)
    )
    assert bad.status_code == 400, bad.text
    body = bad.json()
    assert body["errors"][0]["where"] == "body.owner"
    assert "a, b, basic, jobgate, token" in body["message"]


@pytest.fixture(scope="module")
def mapped(
    tmp_path_factory: pytest.TempPathFactory, issuer: Issuer, second_issuer: Issuer
) -> Iterator[Server]:
    """Both issuers given one alias: the administrator says they are one population."""
    env = {
        "JOBGATE_AUTH": "oidc,token",
        "JOBGATE_OIDC_ISSUERS": f"corp={issuer.url},corp={second_issuer.url}",
        "JOBGATE_OIDC_AUDIENCE": AUDIENCE,
        "JOBGATE_OIDC_GROUPS_CLAIM": "wlcg.groups",
        "JOBGATE_SUBMIT_GROUPS": SUBMIT_GROUP,  # bare: the one namespace's group
        "JOBGATE_RUNTIME": "process",
    }
    srv = Server(tmp_path_factory.mktemp("mapped") / "data", env).start()
    yield srv
    srv.stop()


def test_issuers_mapped_to_one_namespace_share_owners(
    mapped: Server, issuer: Issuer, second_issuer: Issuer
) -> None:
    job = submit(mapped, oidc(issuer, "alice"))
    assert job["owner"] == "corp:alice"
    alice_b = oidc(second_issuer, "alice")
    url = f"{mapped.url}/api/v1/jobs/{job['id']}"
    assert httpx.get(url, headers=alice_b).status_code == 200
    assert httpx.post(url + "/cancel", headers=alice_b).status_code == 200
    assert httpx.get(url, headers=oidc(second_issuer, "bob")).status_code == 404
    me = httpx.get(mapped.url + "/api/v1/me", headers=alice_b).json()
    assert me["groups"] == ["corp:" + SUBMIT_GROUP]


@pytest.fixture(scope="module")
def split(
    tmp_path_factory: pytest.TempPathFactory, issuer: Issuer, second_issuer: Issuer
) -> Iterator[Server]:
    """Group settings that name issuer a's groups only."""
    env = {
        "JOBGATE_AUTH": "oidc",
        "JOBGATE_OIDC_ISSUERS": f"a={issuer.url},b={second_issuer.url}",
        "JOBGATE_OIDC_AUDIENCE": AUDIENCE,
        "JOBGATE_OIDC_GROUPS_CLAIM": "wlcg.groups",
        "JOBGATE_ADMIN_GROUPS": f"a:{ADMIN_GROUP}",
        "JOBGATE_SHARE_GROUPS": f"a:{SHARE_GROUP}",
        "JOBGATE_SUBMIT_GROUPS": f"{SUBMIT_GROUP},a:{SUBMIT_GROUP}",
        "JOBGATE_RUNTIME": "process",
    }
    srv = Server(tmp_path_factory.mktemp("split") / "data", env, log_level="info").start()
    yield srv
    srv.stop()


def test_groups_are_those_of_the_issuer_the_setting_names(
    split: Server, issuer: Issuer, second_issuer: Issuer
) -> None:
    me = split.url + "/api/v1/me"
    assert httpx.get(me, headers=oidc(issuer, "root", ADMIN_GROUP)).json()["admin"] is True
    assert httpx.get(me, headers=oidc(second_issuer, "root", ADMIN_GROUP)).json()["admin"] is False
    job = submit(split, oidc(issuer, "kim", SUBMIT_GROUP, SHARE_GROUP))
    url = f"{split.url}/api/v1/jobs/{job['id']}"
    assert httpx.get(url, headers=oidc(issuer, "lee", SHARE_GROUP)).status_code == 200
    assert httpx.get(url, headers=oidc(second_issuer, "lee", SHARE_GROUP)).status_code == 404
    # The bare submit group matches no OIDC group with two namespaces: b's member may not
    # submit, and the log says how to name an OIDC group.
    r = httpx.post(split.url + "/api/v1/jobs", json=HELD, headers=oidc(second_issuer, "kim"))
    assert r.status_code == 403, r.text
    assert f"write <namespace>:{SUBMIT_GROUP}" in split.log()


def test_bad_namespace_settings_stop_the_server(tmp_path: Path, issuer: Issuer) -> None:
    base = {
        "JOBGATE_AUTH": "oidc",
        "JOBGATE_OIDC_AUDIENCE": AUDIENCE,
        "JOBGATE_RUNTIME": "process",
    }
    cases = {
        "reserved": ({"JOBGATE_OIDC_ISSUERS": f"basic={issuer.url}"}, "reserved"),
        "unknown group namespace": (
            {"JOBGATE_OIDC_ISSUERS": f"a={issuer.url}", "JOBGATE_ADMIN_GROUPS": "x:admins"},
            "'x' is not the alias of an OIDC issuer",
        ),
        "same derived alias": (
            {"JOBGATE_OIDC_ISSUERS": f"{issuer.url},{issuer.url.replace('http:', 'https:')}"},
            "would share the namespace",
        ),
    }
    for name, (env, words) in cases.items():
        srv = Server(tmp_path / name.replace(" ", "-"), {**base, **env})
        with pytest.raises(RuntimeError, match="server exited") as info:
            srv.start()
        assert words in str(info.value), name
