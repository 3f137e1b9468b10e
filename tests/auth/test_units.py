"""Small pure parts: the rate limiter's arithmetic, the users file, OIDC claim lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobgate.auth.basic import UsersFileError, parse_users, set_user
from jobgate.auth.identity import Scope, expand
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
