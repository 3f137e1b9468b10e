"""The authorization policy: the one set of rules TES, the native API, worksteps, streams
and files apply.

- A caller sees and controls their own jobs; admins see and control all; with
  ``JOBGATE_SHARE_GROUPS``, a job is also visible to (and controllable by) the members of
  the group recorded on it at submission.
- Another caller's job answers 404, exactly as a job that does not exist, so ids cannot be
  probed.
- Reading needs the ``read`` scope; submitting, controlling and uploading need ``submit``
  (read-only tokens get 403); submitting also needs one of ``JOBGATE_SUBMIT_GROUPS`` when
  set (admins excepted) and stays within the caller's submission rate (429).
"""

from __future__ import annotations

from collections.abc import Iterable

from jobgate.auth.identity import Caller, Scope
from jobgate.auth.namespaces import GroupRule, bare_owner_values
from jobgate.auth.ratelimit import RateLimiter, retry_after
from jobgate.domain.models import JobRecord
from jobgate.errors import Forbidden, JobNotFound, TooManyRequests
from jobgate.service.jobs import JobService
from jobgate.store.visibility import Visibility


class Policy:
    """Decisions only; :class:`Access` applies them to one caller's requests."""

    def __init__(
        self,
        *,
        submit_groups: Iterable[str] = (),
        share_groups: Iterable[str] = (),
        oidc_namespaces: Iterable[str] = (),
        limiter: RateLimiter | None = None,
    ) -> None:
        spaces = tuple(oidc_namespaces)
        self.oidc_namespaces = spaces
        self.submit_groups = GroupRule.of(submit_groups, spaces)
        self.share_groups = GroupRule.of(share_groups, spaces)
        self.limiter = limiter or RateLimiter(0, 1)

    def require(self, caller: Caller, scope: Scope) -> None:
        if not caller.can(scope):
            what = {Scope.READ: "read", Scope.SUBMIT: "submit or change jobs", Scope.ADMIN: ""}
            raise Forbidden(
                f"this credential may not {what[scope] or 'do this (admins only)'}",
                errors=[{"where": "header.Authorization", "what": f"needs the {scope} scope"}],
            )

    def check_submit(self, caller: Caller) -> None:
        """May ``caller`` submit now? Raises 403 (scope, group) or 429 (rate)."""
        self.require(caller, Scope.SUBMIT)
        if self.submit_groups and not caller.admin and not self.submit_groups.any(caller.groups):
            groups = ", ".join(sorted(self.submit_groups.entries))
            raise Forbidden(
                f"submitting needs membership of one of: {groups}",
                errors=[{"where": "header.Authorization", "what": f"not a member of {groups}"}],
            )
        wait = self.limiter.take(caller.name or "anonymous")
        if wait > 0:
            raise TooManyRequests(
                "too many submissions; try again later",
                headers={"Retry-After": retry_after(wait)},
            )

    def sees(self, caller: Caller, rec: JobRecord) -> bool:
        return self.sees_job_of(caller, rec.owner, rec.share_group)

    def sees_job_of(self, caller: Caller, owner: str | None, share_group: str | None) -> bool:
        """May ``caller`` see a job of ``owner`` shared with ``share_group``?"""
        if caller.admin:
            return True
        if caller.name is not None and owner == caller.name:
            return True
        return share_group is not None and share_group in self.caller_shares(caller)

    def caller_shares(self, caller: Caller) -> frozenset[str]:
        """The share-group entries (as recorded on jobs) the caller is a member of."""
        return frozenset(self.share_groups.matched(caller.groups))

    def owner_names(self, value: str) -> list[str]:
        """The full owners a search for owner ``value`` means (a bare name: in every
        namespace; what the caller may see is limited by :meth:`visibility` anyway)."""
        return bare_owner_values(value, self.oidc_namespaces)

    def visibility(self, caller: Caller) -> Visibility | None:
        """What list and search queries may return to ``caller`` (None: every job)."""
        if caller.admin:
            return None
        return Visibility(caller.name, self.caller_shares(caller))

    def events_owner(self, caller: Caller) -> str | None:
        """Owner filter of the all-jobs event stream (None: all): the caller's own jobs."""
        return None if caller.admin else (caller.name or "")

    def share_group(self, caller: Caller) -> str | None:
        """The group a new job of ``caller`` is shared with: the first configured they are in."""
        return next(iter(self.share_groups.matched(caller.groups)), None)


class Access:
    """One request's caller under the policy, with the job lookups every route needs."""

    def __init__(self, caller: Caller, policy: Policy, jobs: JobService) -> None:
        self.caller = caller
        self.policy = policy
        self.jobs = jobs

    @property
    def owner(self) -> str | None:
        """The owner recorded on jobs this caller submits."""
        return self.caller.name

    def require(self, scope: Scope) -> None:
        self.policy.require(self.caller, scope)

    def check_submit(self) -> None:
        self.policy.check_submit(self.caller)

    async def job(self, job_id: str) -> JobRecord:
        """The job if the caller may see it; 404 otherwise (as if it did not exist)."""
        self.require(Scope.READ)
        rec = await self.jobs.get(job_id)
        if not self.policy.sees(self.caller, rec):
            raise JobNotFound(job_id)
        return rec

    async def control(self, job_id: str) -> JobRecord:
        """The job if the caller may change it: 403 without ``submit``, 404 if not theirs."""
        self.require(Scope.SUBMIT)
        return await self.job(job_id)

    async def visible_ids(self, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` that exist and the caller may see."""
        wanted = list(dict.fromkeys(ids))
        access = await self.jobs.store.access_of(wanted)
        return {
            job_id
            for job_id, (owner, share) in access.items()
            if self.policy.sees_job_of(self.caller, owner, share)
        }

    def visibility(self) -> Visibility | None:
        return self.policy.visibility(self.caller)
