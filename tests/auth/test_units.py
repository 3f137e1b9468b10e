"""Small pure parts: the rate limiter's arithmetic, the users file, OIDC claim lookup,
owner namespaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobgate.auth.basic import UsersFileError, parse_users, set_user
from jobgate.auth.identity import Scope, expand
from jobgate.auth.namespaces import (
    GroupRule,
    LegacyOwners,
    bare_owner_values,
    issuer_namespaces,
    token_owner,
)
from jobgate.auth.oidc import claim, groups_of
from jobgate.auth.ratelimit import RateLimiter, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(60, 3, clock=clock)  # one a second, three at once
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    wait = limiter.take("a")
    assert wait == pytest.approx(1.0)
    assert limiter.take("b") == 0  # per key
    clock.now += 0.5
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take("a") == 0
    assert retry_after(0.2) == "1" and retry_after(1.01) == "2"


def test_rate_limiter_off_and_bounded() -> None:
    assert RateLimiter(0, 1).take("a") == 0
    clock = Clock()
    limiter = RateLimiter(60, 2, clock=clock, max_callers=10)
    for i in range(10):
        limiter.take(f"k{i}")
    clock.now += 10  # all buckets full again: forgotten when room is needed
    limiter.take("new")
    assert len(limiter._buckets) == 1


def test_users_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "users"
    set_user(path, "alice", "pw", ["src/production", "/team"])
    set_user(path, "bob", "pw2", [])
    set_user(path, "alice", "new", ["x"])  # replaces
    users = parse_users(path.read_text())
    assert sorted(users) == ["alice", "bob"]
    assert users["alice"].groups == frozenset({"x"})
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(UsersFileError, match="line 1"):
        parse_users("alice:plaintext\n")
    with pytest.raises(UsersFileError):
        set_user(path, "a:b", "pw", [])


def test_claim_lookup_and_groups() -> None:
    claims = {"wlcg.groups": ["/src/prod"], "realm_access": {"roles": ["admin"]}}
    assert groups_of(claim(claims, "wlcg.groups")) == {"src/prod"}
    assert groups_of(claim(claims, "realm_access.roles")) == {"admin"}
    assert claim(claims, "missing.path") is None
    assert groups_of("a b,c") == {"a", "b", "c"}
    assert groups_of(42) == frozenset()


def test_scopes_imply_lesser_ones() -> None:
    assert expand({Scope.SUBMIT}) == {Scope.READ, Scope.SUBMIT}
    assert expand({Scope.ADMIN}) == set(Scope)


def test_issuer_namespaces_are_derived_or_named() -> None:
    got = issuer_namespaces(
        ["https://iam.example.org/", "egi=https://aai.egi.eu/realms/egi", "http://10.0.0.1:8080/x"]
    )
    assert got == {
        "https://iam.example.org": "iam.example.org",
        "https://aai.egi.eu/realms/egi": "egi",
        "http://10.0.0.1:8080/x": "10.0.0.1-8080/x",
    }
    same = issuer_namespaces(["corp=https://a.example", "corp=https://b.example"])
    assert set(same.values()) == {"corp"}  # on purpose: one namespace
    for bad, words in [
        (["token=https://a.example"], "reserved"),
        (["a:b=https://a.example"], "use letters"),
        (["https://a.example", "https://a.example/"], "listed twice"),
        (["http://a.example", "https://a.example"], "would share"),
        (["a=not a url"], "expected a URL"),
    ]:
        with pytest.raises(ValueError, match=words):
            issuer_namespaces(bad)


def test_token_owners_and_owner_searches() -> None:
    assert token_owner("robot", ["iam"]) == "token:robot"
    assert token_owner("iam:alice", ["iam"]) == "iam:alice"
    assert token_owner("basic:carol", []) == "basic:carol"
    for bad in ("egi:alice", "iam:"):
        with pytest.raises(ValueError, match="namespace must be one of"):
            token_owner(bad, ["iam"])
    assert bare_owner_values("iam:alice", ["iam"]) == ["iam:alice"]
    assert bare_owner_values("alice", ["iam"]) == [
        "basic:alice",
        "iam:alice",
        "jobgate:alice",
        "token:alice",
        "unix:alice",
        "x509:alice",
    ]


def test_group_entries_match_by_namespace() -> None:
    one = GroupRule.of(["admins", "iam:ops"], ["iam"])
    assert one.any(frozenset({"iam:admins"})) and one.any(frozenset({"admins"}))
    assert one.matched(frozenset({"iam:ops", "admins"})) == ("admins", "iam:ops")
    two = GroupRule.of(["admins", "iam:ops"], ["iam", "egi"])
    assert not two.any(frozenset({"iam:admins", "egi:admins", "egi:ops"}))
    assert two.any(frozenset({"admins"})) and two.any(frozenset({"iam:ops"}))


def test_legacy_owner_rule() -> None:
    rule = LegacyOwners.choose(
        setting=None, oidc_namespaces=["iam"], basic_on=True, basic_names=frozenset({"carol"})
    )
    assert [rule.full(o) for o in ("admin", "carol", "alice")] == [
        "jobgate:admin",
        "basic:carol",
        "iam:alice",
    ]
    assert LegacyOwners.choose(setting=None, oidc_namespaces=[], basic_on=True).full("x") == (
        "basic:x"
    )
    assert LegacyOwners.choose(setting=None, oidc_namespaces=[], basic_on=False).full("x") == (
        "token:x"
    )
    several = LegacyOwners.choose(setting=None, oidc_namespaces=["a", "b"], basic_on=False)
    with pytest.raises(ValueError, match="JOBGATE_LEGACY_OWNER_NAMESPACE"):
        several.full("x")
    chosen = LegacyOwners.choose(setting="b", oidc_namespaces=["a", "b"], basic_on=False)
    assert chosen.full("x") == "b:x"
