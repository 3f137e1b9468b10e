"""Submitting, reading, listing and canceling jobs."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jobgate.backends.routing import ROUTED_KEY, Router, Unroutable
from jobgate.domain import lifecycle
from jobgate.domain.models import WARNINGS_KEY, JobRecord, TaskSpec, new_job_id
from jobgate.domain.query import MAX_FILTERS, MAX_VALUE_LENGTH
from jobgate.domain.states import FINAL, State
from jobgate.errors import InvalidRequest, JobNotFound
from jobgate.staging.guard import Guard
from jobgate.staging.precheck import url_problems
from jobgate.store.jobs import JobStore, ListQuery, NewJob
from jobgate.store.visibility import Scope

MAX_PAGE_SIZE = 2048
DEFAULT_PAGE_SIZE = 256


class DispatchNotifier(Protocol):
    """How the service tells a dispatcher in the same process about news (may be a no-op)."""

    def job_submitted(self) -> None: ...
    def cancel_requested(self, job_id: str) -> None: ...


class ParameterChecker(Protocol):
    """What a backend says about backend_parameters (see backends/base.py)."""

    parameter_keys: frozenset[str]

    def check_parameters(self, params: Mapping[str, str]) -> dict[str, str]: ...


class _NoDispatcher:
    def job_submitted(self) -> None:
        pass

    def cancel_requested(self, job_id: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Decision:
    """What creating a job would do (``validate``): where it would run and why, with
    which lifecycle policy, and what staging would refuse later (``warnings``)."""

    backend: str
    reason: str
    policy: lifecycle.Policy
    ignored: list[str] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": True,
            "backend": self.backend,
            "reason": self.reason,
            "lifecycle": self.policy.to_json(),
            "ignored_backend_parameters": self.ignored,
            "warnings": self.warnings,
        }


@dataclass(frozen=True, slots=True)
class LifecycleFields:
    """A native job's own lifecycle fields (TES tasks give backend_parameters instead)."""

    retry: lifecycle.Retry | None = None
    timeouts: lifecycle.Timeouts | None = None
    heartbeat_timeout: float | None = None


MAX_SEQ = 2**63 - 1
"""The largest sequence number (job or event) a store can hold: a signed 64-bit integer."""


def encode_page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not raw.startswith("s") or not raw[1:].isdigit():
            raise ValueError(raw)
        seq = int(raw[1:])
        if seq > MAX_SEQ:  # a sequence number is a signed 64-bit integer in the store
            raise ValueError(raw)
        return seq
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            "invalid page_token",
            errors=[{"where": "query.page_token", "what": "not a token returned by this server"}],
        ) from exc


class JobService:
    """The one engine-facing API. Every front end calls these methods."""

    def __init__(
        self,
        store: JobStore,
        *,
        backends: Collection[str],
        default_backend: str,
        max_content_bytes: int,
        notifier: DispatchNotifier | None = None,
        credential_backends: Collection[str] = (),
        router: Router | None = None,
        limits: lifecycle.Limits | None = None,
        staging_guard: Guard | None = None,
        allowed_dirs: tuple[Path, ...] = (),
    ) -> None:
        self.store = store
        self.limits = limits or lifecycle.Limits()
        self.staging_guard = staging_guard or Guard()
        self.allowed_dirs = allowed_dirs
        self.router = router
        self.credential_backends = frozenset(credential_backends)
        self.backends = frozenset(backends)
        self.default_backend = default_backend
        self.max_content_bytes = max_content_bytes
        self.notifier: DispatchNotifier = notifier or _NoDispatcher()
        # Backends passed as objects (not just names) validate their own parameters.
        self.checkers: dict[str, ParameterChecker] = (
            {k: v for k, v in backends.items() if hasattr(v, "check_parameters")}
            if isinstance(backends, Mapping)
            else {}
        )
        keys = {"backend", *lifecycle.PARAMETER_KEYS}
        for checker in self.checkers.values():
            keys |= checker.parameter_keys
        # Keys of resources.backend_parameters this server understands (case-insensitive).
        self.backend_parameter_keys: frozenset[str] = frozenset(keys)
        # resources.zones values naming a backend: its name, or one of its own zones.
        self.zone_backends: dict[str, str] = {}
        if isinstance(backends, Mapping):
            for name, obj in backends.items():
                for zone in getattr(obj, "zones", ()):
                    self.zone_backends.setdefault(zone, name)
        for name in self.backends:
            self.zone_backends[name] = name

    def checked_spec(
        self,
        spec: TaskSpec,
        *,
        where: str = "body",
        backend: str | None = None,
        own: LifecycleFields | None = None,
    ) -> tuple[dict[str, Any], str, list[str], str | None]:
        """Validate what the model can't know; return (spec JSON, backend, ignored keys,
        the routing policy's reason when it chose the backend). The lifecycle policy in
        force (``own`` fields or backend_parameters, the operator's defaults and maxima)
        is stored in the spec JSON under :data:`lifecycle.LIFECYCLE_KEY`.

        ``backend`` (a native job's own choice) wins over backend_parameters and zones;
        a job naming none is placed by the router (if routing is configured).
        Drops unsupported backend_parameters from ``spec`` (in place); raises
        :class:`InvalidRequest` with locations under ``where``.
        """
        errors = []
        for i, inp in enumerate(spec.inputs or []):
            if inp.content is not None and len(inp.content.encode()) > self.max_content_bytes:
                errors.append(
                    {
                        "where": f"{where}.inputs[{i}].content",
                        "what": f"inline content is larger than {self.max_content_bytes} bytes; "
                        "pass large inputs by url",
                    }
                )
        chosen = backend
        backend = self.default_backend
        ignored: list[str] = []
        res = spec.resources
        params = res.backend_parameters if res is not None else None
        named = {k.lower(): v for k, v in (params or {}).items()}.get("backend")
        if chosen is not None:
            backend = chosen
        elif named is None and res is not None and res.zones:
            # TES zones: the first zone that names a configured backend (or one of its
            # zones) picks it.
            zone = next((z for z in res.zones if z in self.zone_backends), None)
            if zone is not None:
                named = backend = self.zone_backends[zone]
        elif named in self.backends:
            backend = named
        route = None
        if self.router is not None and chosen is None and named is None:
            try:
                route = self.router.route(spec)
            except Unroutable as exc:
                raise InvalidRequest(
                    "invalid task", errors=[{"where": f"{where}.resources", "what": str(exc)}]
                ) from None
            backend = route.backend
        if res is not None and res.backend_parameters is not None:
            kept = {}
            checker = self.checkers.get(backend)
            usable = {"backend", *lifecycle.PARAMETER_KEYS} | (
                checker.parameter_keys if checker is not None else set()
            )
            for key, value in res.backend_parameters.items():
                k = key.lower()
                if k in usable:
                    kept[k] = value
                else:
                    ignored.append(key)
            if checker is not None:
                for k, what in checker.check_parameters(kept).items():
                    errors.append(
                        {"where": f"{where}.resources.backend_parameters.{k}", "what": what}
                    )
            if ignored and res.backend_parameters_strict:
                errors.append(
                    {
                        "where": f"{where}.resources.backend_parameters",
                        "what": f"unsupported keys {sorted(ignored)} with "
                        f"backend_parameters_strict=true; supported by backend "
                        f"{backend!r}: {sorted(usable)}",
                    }
                )
            if "backend" in kept and chosen is None:
                if kept["backend"] not in self.backends:
                    errors.append(
                        {
                            "where": f"{where}.resources.backend_parameters.backend",
                            "what": f"unknown backend {kept['backend']!r}; "
                            f"configured: {sorted(self.backends)}",
                        }
                    )
                backend = kept["backend"]
            res.backend_parameters = kept
        own = own or LifecycleFields()
        policy, problems = lifecycle.resolve(
            self.limits,
            retry=own.retry,
            timeouts=own.timeouts,
            heartbeat_timeout=own.heartbeat_timeout,
            params=res.backend_parameters if res is not None else None,
            where=where,
        )
        errors.extend(problems)
        if errors:
            raise InvalidRequest("invalid task", errors=errors)
        spec_json = spec.model_dump(mode="json", exclude_none=True)
        if route is not None:
            spec_json[ROUTED_KEY] = True
        if policy.to_json():
            spec_json[lifecycle.LIFECYCLE_KEY] = policy.to_json()
        return spec_json, backend, ignored, None if route is None else route.reason

    def check(
        self,
        spec: TaskSpec,
        *,
        where: str = "body",
        backend: str | None = None,
        own: LifecycleFields | None = None,
    ) -> Decision:
        """Every check creating ``spec`` runs, and the decision, without storing anything
        (``validate``). Raises :class:`InvalidRequest` exactly where create would."""
        spec_json, chosen, ignored, route = self.checked_spec(
            spec, where=where, backend=backend, own=own
        )
        if route is not None:
            reason = route
        elif backend is not None:
            reason = f"the job names backend {chosen!r}"
        elif chosen != self.default_backend:
            reason = f"backend {chosen!r} named by backend_parameters or zones"
        else:
            reason = f"the default backend ({chosen!r})"
        return Decision(
            backend=chosen,
            reason=reason,
            policy=lifecycle.Policy.of_spec(spec_json),
            ignored=ignored,
            warnings=url_problems(
                spec, allowed_dirs=self.allowed_dirs, guard=self.staging_guard, where=where
            ),
        )

    def placed(self, job_id: str, backend: str) -> None:
        """A new job is on ``backend`` (the router counts it as load)."""
        if self.router is not None:
            self.router.placed(job_id, backend)

    def credential_for(
        self, backend: str, credential: str | None, *, routed: bool = False
    ) -> str | None:
        """The (encrypted) credential a job on ``backend`` carries: only where it is
        needed (for a routed job: where failover may move it, too)."""
        if backend in self.credential_backends:
            return credential
        if (
            routed
            and self.router is not None
            and self.credential_backends & set(self.router.candidates)
        ):
            return credential
        return None

    async def submit(
        self,
        spec: TaskSpec,
        *,
        owner: str | None = None,
        share_group: str | None = None,
        credential: str | None = None,
    ) -> str:
        """Store a new job (committed when this returns) and wake the dispatcher.

        ``credential`` is the submitter's encrypted token, kept only for backends that need it.
        """
        spec_json, backend, ignored, route = self.checked_spec(spec)
        job_id = new_job_id()
        warning = f"ignored unsupported backend_parameters: {', '.join(ignored)}"
        if ignored:
            # Not a task field (no front end renders it): the dispatcher copies it into the
            # first attempt's system_logs, where the TES spec asks for such warnings.
            spec_json[WARNINGS_KEY] = [warning]
        details = [w for w in (warning if ignored else None, route) if w]
        await self.store.create(
            [
                NewJob(
                    id=job_id,
                    spec=spec_json,
                    backend=backend,
                    owner=owner,
                    share_group=share_group,
                    credential=self.credential_for(backend, credential, routed=route is not None),
                )
            ],
            details=["; ".join(details)] if details else None,
        )
        self.placed(job_id, backend)
        self.notifier.job_submitted()
        return job_id

    async def get(self, job_id: str) -> JobRecord:
        rec = await self.store.get(job_id)
        if rec is None:
            raise JobNotFound(job_id)
        return rec

    async def page(
        self,
        *,
        name_prefix: str | None = None,
        state: State | None = None,
        tags: dict[str, str] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        minimal: bool = False,
        visible: Scope = None,
    ) -> tuple[list[JobRecord], str | None]:
        """A page of jobs, newest first, and the token of the next page (None on the last)."""
        size = DEFAULT_PAGE_SIZE if page_size is None else page_size
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise InvalidRequest(
                "invalid page_size",
                errors=[{"where": "query.page_size", "what": f"must be 1..{MAX_PAGE_SIZE}"}],
            )
        if tags and len(tags) > MAX_FILTERS:
            raise InvalidRequest(
                "too many tag filters",
                errors=[
                    {"where": "query.tag_key", "what": f"at most {MAX_FILTERS} tag_key filters"}
                ],
            )
        if tags and any(
            len(k) > MAX_VALUE_LENGTH or len(v) > MAX_VALUE_LENGTH for k, v in tags.items()
        ):
            raise InvalidRequest(
                "tag filter too long",
                errors=[
                    {"where": "query.tag_key", "what": f"at most {MAX_VALUE_LENGTH} characters"}
                ],
            )
        query = ListQuery(
            name_prefix=name_prefix or None,
            state=state,
            tags=tags or {},
            limit=size,
            before_seq=decode_page_token(page_token) if page_token else None,
            owner=visible,
        )
        records, next_seq = await self.store.page(query, minimal=minimal)
        return records, None if next_seq is None else encode_page_token(next_seq)

    async def cancel(self, job_id: str) -> State:
        """Cancel a job at any point; returns its state afterwards.

        Jobs in the gateway's queue become CANCELED at once; those a backend holds
        (queued there or running) CANCELING until the backend has stopped them.
        Canceling a finished job changes nothing.
        """
        for _ in range(10):  # the dispatcher may move the job between our read and write
            rec = await self.get(job_id)
            if rec.state in FINAL or rec.state == State.CANCELING:
                return rec.state
            # A QUEUED job a backend holds (it has a native id) must be stopped there.
            waiting = rec.state in (State.PAUSED, State.UNKNOWN) or (
                rec.state == State.QUEUED and rec.native_id is None
            )
            target = State.CANCELED if waiting else State.CANCELING
            moved = await self.store.transition(
                job_id,
                rec.state,
                target,
                detail="canceled by user",
                source="api",
                unplaced=waiting,
            )
            if moved is not None:
                if target == State.CANCELING:
                    self.notifier.cancel_requested(job_id)
                return target
        return (await self.get(job_id)).state
