"""OIDC bearer tokens against a real local issuer (discovery + JWKS over HTTP)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from jobgate.auth.oidc import OidcError, OidcVerifier
from tests.auth.conftest import ADMIN_GROUP, SUBMIT_GROUP, bearer
from tests.auth.issuer import Issuer
from tests.conftest import Server

JOB = {"name": "oidc", "script": "true", "hold": True}


def me(server: Server, token: str) -> httpx.Response:
    return httpx.get(server.url + "/api/v1/me", headers=bearer(token))


def submit(server: Server, token: str) -> httpx.Response:
    return httpx.post(server.url + "/api/v1/jobs", json=JOB, headers=bearer(token))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(signature)


def claims_of(issuer: Issuer, **more: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer.url, "sub": "mallory", "aud": "jobgate", "exp": now + 300, **more}


def assert_401(resp: httpx.Response, words: str) -> None:
    assert resp.status_code == 401, resp.text
    body = resp.json()
    assert body["code"] == "unauthorized" and words in body["message"], body
    assert resp.headers["www-authenticate"].startswith("Bearer")


def test_a_valid_token_identifies_the_user_and_groups(auth_server: Server, issuer: Issuer) -> None:
    token = issuer.token("alice", groups=[SUBMIT_GROUP, "other/group"])
    r = me(auth_server, token)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "name": "a:alice",
        "method": "oidc",
        "scopes": ["read", "submit"],
        "groups": ["a:other/group", "a:" + SUBMIT_GROUP],
        "admin": False,
    }
    job = submit(auth_server, token)
    assert job.status_code == 201, job.text
    assert job.json()["owner"] == "a:alice"


def test_every_trusted_issuer_is_accepted(
    auth_server: Server, issuer: Issuer, second_issuer: Issuer
) -> None:
    # The same sub at two issuers: two owners, each in its issuer's namespace.
    assert me(auth_server, second_issuer.token("zoe")).json()["name"] == "b:zoe"
    assert me(auth_server, issuer.token("zoe")).json()["name"] == "a:zoe"
    # Each issuer's tokens are checked with that issuer's keys only.
    forged = issuer.token("zoe", iss=second_issuer.url)
    assert_401(me(auth_server, forged), "key")


def test_an_expired_token_is_refused(auth_server: Server, issuer: Issuer) -> None:
    # Beyond the 30 s of allowed clock skew.
    assert_401(me(auth_server, issuer.token(lifetime=-120)), "expired")


def test_a_token_not_yet_valid_is_refused(auth_server: Server, issuer: Issuer) -> None:
    assert_401(me(auth_server, issuer.token(nbf=int(time.time()) + 600)), "not valid yet")


def test_a_token_for_another_audience_is_refused(auth_server: Server, issuer: Issuer) -> None:
    assert_401(me(auth_server, issuer.token(aud="some-other-service")), "audience")
    # One of several audiences is enough.
    assert me(auth_server, issuer.token(aud=["some-other-service", "jobgate"])).status_code == 200


def test_a_token_of_an_untrusted_issuer_is_refused(auth_server: Server, issuer: Issuer) -> None:
    # Signed with a key the trusted issuer publishes, but claiming another issuer.
    assert_401(me(auth_server, issuer.token(iss="https://evil.example.org")), "issuer")


def test_a_bad_signature_is_refused(auth_server: Server, issuer: Issuer) -> None:
    rogue = issuer.new_key(publish=False)
    # The published kid, signed with another key.
    forged = issuer.token(kid=issuer.kid, key=issuer.keys[rogue])
    assert_401(me(auth_server, forged), "invalid")
    # The right signature over changed claims.
    good = issuer.token("alice")
    head, payload, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered = ".".join([head, b64(json.dumps({**claims, "sub": "admin"}).encode()), sig])
    assert_401(me(auth_server, tampered), "invalid")


def test_alg_none_is_refused(auth_server: Server, issuer: Issuer) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": issuer.kid}, claims_of(issuer))
    assert_401(me(auth_server, token), "algorithm")
    token = jwt.encode(claims_of(issuer), None, algorithm="none")  # as PyJWT writes it
    assert_401(me(auth_server, token), "algorithm")


def test_hs256_signed_with_the_public_key_is_refused(auth_server: Server, issuer: Issuer) -> None:
    # The classic key-confusion attack: HMAC keyed with the issuer's public key.
    pem = (
        issuer.keys[issuer.kid]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.kid}
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims_of(issuer)).encode())
    sig = hmac.new(pem, head.encode(), hashlib.sha256).digest()
    assert_401(me(auth_server, head + "." + b64(sig)), "algorithm")


def test_garbage_is_refused(auth_server: Server) -> None:
    assert_401(me(auth_server, "not-a-jwt"), "not a valid JWT")


def test_unknown_kid_then_key_rotation(auth_server: Server, issuer: Issuer) -> None:
    old_kid = issuer.kid
    assert me(auth_server, issuer.token("alice")).status_code == 200  # old key cached
    new_kid = issuer.new_key(publish=False)
    token = issuer.token("alice", kid=new_kid)
    fetches = issuer.jwks_fetches
    # Not published yet: the server refetches the JWKS, still does not find it.
    assert_401(me(auth_server, token), "key")
    assert issuer.jwks_fetches == fetches + 1
    # The issuer rotates: the new key replaces the old one.
    issuer.published = [new_kid]
    issuer.kid = new_kid
    assert me(auth_server, token).status_code == 200
    assert issuer.jwks_fetches == fetches + 2
    # Known keys are served from the cache.
    assert me(auth_server, issuer.token("alice")).status_code == 200
    assert issuer.jwks_fetches == fetches + 2
    # Tokens signed with the retired key no longer pass.
    assert_401(me(auth_server, issuer.token("alice", kid=old_kid)), "key")


def test_missing_submit_group_is_403_on_submit(auth_server: Server, issuer: Issuer) -> None:
    token = issuer.token("outsider", groups=["some/other"])
    assert me(auth_server, token).status_code == 200  # authenticated, may read
    r = submit(auth_server, token)
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "forbidden" and SUBMIT_GROUP in r.json()["message"]
    tes = httpx.post(
        auth_server.url + "/ga4gh/tes/v1/tasks",
        json={"executors": [{"image": "alpine", "command": ["true"]}]},
        headers=bearer(token),
    )
    assert tes.status_code == 403


def test_groups_claim_as_iam_sends_it(auth_server: Server, issuer: Issuer) -> None:
    # wlcg.groups values carry a leading slash; the configured group has none.
    token = issuer.token("bea", groups=[SUBMIT_GROUP])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["wlcg.groups"] == ["/" + SUBMIT_GROUP]
    assert submit(auth_server, token).status_code == 201


def test_admin_group_sees_every_job(auth_server: Server, issuer: Issuer) -> None:
    job = submit(auth_server, issuer.token("owner1", groups=[SUBMIT_GROUP])).json()
    other = issuer.token("nosy", groups=[SUBMIT_GROUP])
    admin = issuer.token("root", groups=[ADMIN_GROUP])
    url = auth_server.url + f"/api/v1/jobs/{job['id']}"
    assert httpx.get(url, headers=bearer(other)).status_code == 404
    assert httpx.get(url, headers=bearer(admin)).status_code == 200
    assert me(auth_server, admin).json()["admin"] is True


@pytest.mark.parametrize(
    "header", ["Bearer", "Bearer jgt_unknown", "Token abc", "Basic !!!", "Basic Zm9v"]
)
def test_malformed_authorization_is_401(auth_server: Server, header: str) -> None:
    r = httpx.get(auth_server.url + "/api/v1/me", headers={"Authorization": header})
    assert r.status_code == 401, r.text
    assert set(r.json()) >= {"code", "status", "message"}


async def test_cached_keys_expire_so_a_withdrawn_key_stops_working(issuer: Issuer) -> None:
    # The verifier in process, against the same real issuer over HTTP.
    async with httpx.AsyncClient() as http:
        verifier = OidcVerifier(
            http, issuers=[f"a={issuer.url}"], audience="jobgate", min_refresh=60, max_age=0.3
        )
        kid = issuer.new_key(publish=True)
        token = issuer.token("uma", kid=kid)
        assert (await verifier.authenticate(token)).name == "a:uma"
        issuer.published.remove(kid)  # the issuer withdraws the key
        assert (await verifier.authenticate(token)).name == "a:uma"  # still cached
        await asyncio.sleep(0.35)
        with pytest.raises(OidcError, match="does not publish"):
            await verifier.authenticate(token)
