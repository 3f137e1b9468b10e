"""The app factory: builds store, backends, dispatcher and routers from one Settings."""

from __future__ import annotations

import gc
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from jobgate import __version__
from jobgate.api import backends as backends_api
from jobgate.api import (
    bodies,
    errors,
    files,
    health,
    openapi,
    operdocs,
    streams,
    tes,
    tokens,
    worksteps,
)
from jobgate.api import diracx as diracx_api
from jobgate.api import jobs as jobs_api
from jobgate.api import metrics as metrics_api
from jobgate.api import psik as psik_api
from jobgate.api.dashboard import pages as dashboard_pages
from jobgate.api.deps import Services
from jobgate.api.security import authenticate, public
from jobgate.auth.authenticator import Authenticator
from jobgate.auth.basic import BasicUsers, parse_users
from jobgate.auth.credentials import JobCredentials
from jobgate.auth.jobtokens import JobTokens
from jobgate.auth.namespaces import (
    RESERVED,
    GroupRule,
    LegacyOwners,
    ambiguous_bare,
    issuer_namespaces,
)
from jobgate.auth.oidc import OidcVerifier
from jobgate.auth.policy import Policy
from jobgate.auth.ratelimit import RateLimiter
from jobgate.auth.secrets import SecretBox
from jobgate.auth.tokens import ServiceTokens
from jobgate.auth.unixsocket import SocketOwner
from jobgate.auth.x509 import ClientCertificates, Revocations, SubjectMap
from jobgate.backends.base import Backend
from jobgate.backends.choice import (
    default_backend,
    make_backends,
    make_router,
    plan_backends,
    tasks_reach_data_dir,
)
from jobgate.backends.routing import Router
from jobgate.config import Settings
from jobgate.datadir import secure_data_dir
from jobgate.dispatcher import Dispatcher, DispatchSettings
from jobgate.domain.models import build_validators
from jobgate.domain.states import ACTIVE, State
from jobgate.observability import tracing
from jobgate.observability.metrics import count_transitions
from jobgate.service.events import EventBus
from jobgate.service.eventtail import EventTail
from jobgate.service.heartbeats import Heartbeats
from jobgate.service.jobcounts import JobCounts
from jobgate.service.jobs import DispatchNotifier, JobService
from jobgate.service.lifecycle import gateway_url, job_environment, limits_of
from jobgate.service.logs import JobLogs
from jobgate.service.native import NativeJobs
from jobgate.service.psik import FORMAT as PSIK_FORMAT
from jobgate.service.psik import PsikCallbacks
from jobgate.service.sandboxes import Sandboxes
from jobgate.service.uploads import JobUploads
from jobgate.service.wakeups import Wakeups
from jobgate.service.webhooks import Webhooks, webhook_guard
from jobgate.staging import Stager
from jobgate.staging.guard import Guard
from jobgate.staging.tarball import ExtractLimits
from jobgate.store.access import Database
from jobgate.store.database import make_engine, migrate
from jobgate.store.idempotency import IdempotencyStore
from jobgate.store.jobs import JobStore
from jobgate.store.sandboxes import SandboxStore
from jobgate.store.tokens import TokenStore

log = logging.getLogger("jobgate")


LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() in LOOPBACK_NAMES


def check_listen_address(settings: Settings) -> None:
    """Refuse to serve without authentication beyond loopback unless explicitly told to."""
    open_to_all = "none" in settings.auth and not settings.auth_none_any_host
    if open_to_all and settings.tcp and not is_loopback(settings.host):
        raise ValueError(
            f"JOBGATE_AUTH includes 'none' (no authentication): refusing to listen on "
            f"{settings.host}, which is not a loopback address; set "
            "JOBGATE_AUTH_NONE_ANY_HOST=true to do it anyway"
        )


def oidc_namespaces(settings: Settings) -> tuple[str, ...]:
    """The owner namespaces of the trusted OIDC issuers (none with ``oidc`` off)."""
    if "oidc" not in settings.auth:
        return ()
    return tuple(dict.fromkeys(issuer_namespaces(settings.oidc_issuers).values()))


def legacy_owners(settings: Settings) -> LegacyOwners:
    """The rule naming owners written before namespaces existed (used once, by a migration)."""
    names: frozenset[str] = frozenset()
    basic_on = "basic" in settings.auth and settings.basic_users_file is not None
    if basic_on and settings.basic_users_file is not None:
        try:
            names = frozenset(parse_users(settings.basic_users_file.read_text()))
        except (OSError, ValueError):
            names = frozenset()  # BasicUsers reports the file's problem itself
    return LegacyOwners.choose(
        setting=settings.legacy_owner_namespace,
        oidc_namespaces=oidc_namespaces(settings),
        basic_on=basic_on,
        basic_names=names,
    )


def subject_map(settings: Settings) -> SubjectMap | None:
    """``JOBGATE_X509_SUBJECTS_FILE`` read; raises ValueError naming the file's problem
    (a malformed line: its file and number)."""
    path = settings.x509_subjects_file
    if path is None:
        return None
    try:
        return SubjectMap(path, (*oidc_namespaces(settings), *RESERVED))
    except OSError as exc:
        what = f"cannot read it ({exc.strerror})"
        raise ValueError(f"JOBGATE_X509_SUBJECTS_FILE {path}: {what}") from None


def revocation_lists(settings: Settings) -> Revocations | None:
    """``JOBGATE_TLS_CRL`` read; raises ValueError when it cannot be."""
    path = settings.tls_crl
    if path is None:
        return None
    try:
        return Revocations(path)
    except OSError as exc:
        what = f"cannot read it ({exc.strerror})"
        raise ValueError(f"JOBGATE_TLS_CRL {path}: {what}") from None


def make_authenticator(
    settings: Settings, tokens: ServiceTokens, http: httpx.AsyncClient
) -> Authenticator:
    admin_groups = GroupRule.of(settings.admin_groups, oidc_namespaces(settings))
    oidc = None
    if "oidc" in settings.auth:
        oidc = OidcVerifier(
            http,
            issuers=settings.oidc_issuers,
            audience=settings.oidc_audience,
            user_claim=settings.oidc_user_claim,
            groups_claim=settings.oidc_groups_claim,
            algorithms=settings.oidc_algorithms,
            admin_groups=admin_groups,
            min_refresh=settings.oidc_jwks_min_refresh,
            max_age=settings.oidc_jwks_max_age,
            leeway=settings.oidc_leeway,
        )
    basic = None
    if "basic" in settings.auth and settings.basic_users_file is not None:
        basic = BasicUsers(settings.basic_users_file, admin_groups)
    certificates = None
    if "x509" in settings.auth:
        subjects = subject_map(settings)
        certificates = ClientCertificates(
            settings.x509_admin_dns,
            subjects=subjects,
            admin_groups=admin_groups,
            revocations=revocation_lists(settings),
        )
    socket_owner = None
    if settings.uds is not None:
        socket_owner = SocketOwner(settings.uds_owner, settings.uds_scope)
    return Authenticator(
        settings.auth,
        oidc=oidc,
        tokens=tokens if "token" in settings.auth else None,
        basic=basic,
        certificates=certificates,
        socket_owner=socket_owner,
    )


def create_app(
    settings: Settings | None = None, *, dispatch: bool = True, shared: bool = False
) -> FastAPI:
    """A ready ASGI app. ``dispatch=False`` serves the API without running jobs;
    ``shared``: other processes (API workers, dispatchers) use the same database, so
    events come from the database and submissions wake the dispatchers across processes.

    Raises ValueError when the settings would serve unauthenticated beyond loopback.
    """
    settings = settings or Settings()
    check_listen_address(settings)
    subject_map(settings)  # a bad subjects file or CRL path fails here, before serving
    revocation_lists(settings)
    plan_backends(settings)  # a bad config file or backend kind fails here, before serving

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with components(settings, shared=shared) as c:
            store, backends, router = c.store, c.backends, c.router
            notifier: DispatchNotifier | None = None
            dispatcher = None
            if dispatch:
                dispatcher = make_dispatcher(settings, c)
                notifier = dispatcher
            elif shared:
                notifier = Wakeups(c.engine, wake_dir(settings))
            jobs = JobService(
                store,
                backends=backends,
                default_backend=default_backend(settings, backends),
                max_content_bytes=settings.max_content_bytes,
                notifier=notifier,
                credential_backends=settings.credential_backends,
                router=router,
                limits=limits_of(settings),
                staging_guard=Guard.from_entries(settings.staging_allowed_hosts),
                allowed_dirs=settings.allowed_dirs,
            )
            native = NativeJobs(
                jobs,
                jobs_dir=settings.jobs_dir,
                parametric_cap=settings.parametric_cap,
                max_reschedules=settings.max_reschedules,
                callback_guard=webhook_guard(settings),
            )
            tokens = ServiceTokens(TokenStore(c.db))
            heartbeats = Heartbeats(store, flush_interval=settings.heartbeat_flush_interval)
            await heartbeats.start()
            # OIDC discovery and JWKS: issuers are the operator's, so not behind the staging
            # guard.
            http = httpx.AsyncClient(timeout=settings.http_timeout, follow_redirects=True)
            policy = Policy(
                submit_groups=settings.submit_groups,
                share_groups=settings.share_groups,
                oidc_namespaces=oidc_namespaces(settings),
                limiter=RateLimiter(settings.submit_rate, settings.submit_burst),
            )
            app.state.services = Services(
                settings=settings,
                jobs=jobs,
                backends=backends,
                native=native,
                idempotency=IdempotencyStore(c.db),
                events=c.bus,
                sandboxes=c.sandboxes,
                uploads=JobUploads(native, max_bytes=settings.upload_max_bytes),
                logs=JobLogs(store, c.bus, backends=backends, logs_dir=settings.logs_dir),
                auth=make_authenticator(settings, tokens, http),
                policy=policy,
                tokens=tokens,
                secrets=c.secrets,
                heartbeats=heartbeats,
                job_tokens=c.job_tokens,
            )
            await announce_auth(settings, tokens)
            app.state.dispatcher = dispatcher
            webhooks = make_webhooks(settings, c)
            job_counts = JobCounts(store, settings.metrics.jobs_interval, list(backends))
            await job_counts.start()
            if dispatcher is not None:
                await webhooks.start()
                await dispatcher.start()
            log.info(
                "jobgate %s: database %s, backends %s (default %s)%s",
                __version__,
                c.engine.url.render_as_string(hide_password=True),
                {n: b.describe() for n, b in backends.items()},
                jobs.default_backend,
                "" if dispatch else "; API only (jobs run in `jobgate dispatcher` processes)",
            )
            build_validators()
            # Keep start-up objects (modules, classes, caches: ~120k) out of the cyclic GC:
            # otherwise every full collection walks them all, a 70-90 ms pause on a slow core.
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                await job_counts.stop()
                await heartbeats.stop()
                if dispatcher is not None:
                    await dispatcher.stop()
                await webhooks.stop()
                await http.aclose()

    app = FastAPI(
        title="jobgate",
        version=__version__,
        description="GA4GH TES v1.1 and a native jobs API over local and batch backends.",
        lifespan=lifespan,
        # Every API route authenticates unless its endpoint is marked @public.
        # Then the URL is checked; bodies are read later, by the routes (401 comes first).
        dependencies=[Depends(authenticate), Depends(bodies.check_url)],
    )
    errors.install(app)
    app.add_middleware(metrics_api.HttpMetrics)
    app.include_router(health.make_router())
    app.include_router(metrics_api.make_router())
    app.include_router(backends_api.make_router())
    app.include_router(jobs_api.make_router())
    app.include_router(streams.make_router())
    app.include_router(files.make_router())
    app.include_router(worksteps.make_router())
    app.include_router(tokens.make_router())
    app.include_router(diracx_api.make_router())  # DiracX: /api/jobs, /.well-known
    app.include_router(dashboard_pages.make_router())  # the web dashboard at /
    app.include_router(tes.make_router(), prefix="/ga4gh/tes/v1")
    # Before the /v1 TES router too: a psik prefix under /v1 must not be taken as task ids.
    app.include_router(psik_api.make_router(settings.psik_prefix))

    # /v1 is TES 1.0 for the clients that use it (py-tes 0.4: Toil, Snakemake).
    # Before the /v1 router: its /v1/tasks/{task_id} would take "service-info" as an id.
    @app.get("/v1/tasks/service-info", include_in_schema=False)
    @public
    async def legacy_service_info() -> JSONResponse:
        return JSONResponse(tes.legacy_service_info(app.state.services))

    # Before the /v1 TES router, like the legacy service-info above.
    app.include_router(operdocs.make_router(app.title))
    app.include_router(tes.make_router(legacy=True), prefix="/v1", include_in_schema=False)
    openapi.install(app, settings)
    return app


@dataclass
class Components:
    """What every gateway process builds from its settings: the store and its event bus,
    the backends, staging, sandboxes, secrets and routing."""

    engine: AsyncEngine
    db: Database
    store: JobStore
    bus: EventBus
    backends: dict[str, Backend]
    stager: Stager
    sandboxes: Sandboxes
    secrets: SecretBox
    job_tokens: JobTokens
    router: Router | None


@asynccontextmanager
async def components(settings: Settings, *, shared: bool = False) -> AsyncIterator[Components]:
    """Open the database (migrated), the backends and the rest; closed on exit.
    ``shared``: the bus is fed from the database (:class:`EventTail`), not by this
    process's own commits alone."""
    secure_data_dir(settings.data_dir, traversable=tasks_reach_data_dir(settings))
    tracing.configure()
    engine = make_engine(settings.db_url, sqlite_synchronous=settings.sqlite_synchronous)
    await migrate(engine, legacy_owner=legacy_owners(settings).full)
    db = Database(engine, sqlite_synchronous=settings.sqlite_synchronous)
    store = JobStore(db)
    bus = EventBus()
    tail = None
    if shared:
        tail = EventTail(store, bus)
        await tail.start()
    else:
        store.listeners.append(bus.publish)
    store.listeners.append(count_transitions)
    backends = make_backends(settings)
    stager = Stager.from_settings(settings)
    sandboxes = Sandboxes(
        SandboxStore(db),
        settings.sandboxes_dir,
        max_bytes=settings.sandbox_max_bytes,
        extract_limits=ExtractLimits(
            settings.sandbox_extract_max_bytes, settings.sandbox_extract_max_files
        ),
    )
    secrets = SecretBox.from_settings(
        settings.secret_key.get_secret_value() if settings.secret_key else None,
        settings.data_dir,
    )
    carry_credentials(settings, backends)
    job_tokens = JobTokens(secrets.derived_key("job tokens"))
    # Routing (config file `routing:`): one policy for the service and the dispatcher.
    router = make_router(settings, backends)
    if router is not None:
        store.listeners.append(router.observe)
        for rec in await store.in_states(ACTIVE | {State.QUEUED}):
            router.placed(rec.id, rec.backend)
    try:
        yield Components(
            engine, db, store, bus, backends, stager, sandboxes, secrets, job_tokens, router
        )
    finally:
        tracing.shutdown()
        if tail is not None:
            await tail.stop()
        await stager.aclose()
        store.close()
        await engine.dispose()


def make_dispatcher(
    settings: Settings, c: Components, *, on_lease_lost: Callable[[], None] | None = None
) -> Dispatcher:
    """The dispatcher over ``c`` (not started)."""
    options = {} if on_lease_lost is None else {"on_lease_lost": on_lease_lost}
    return Dispatcher(
        c.store,
        c.backends,
        c.stager,
        dispatch_settings(settings),
        packer=c.sandboxes,
        credentials=JobCredentials(c.store, c.secrets).reveal,
        router=c.router,
        job_env=job_environment(c.job_tokens, gateway_url(settings)),
        **options,
    )


def make_webhooks(settings: Settings, c: Components) -> Webhooks:
    """The webhook sender (not started). One process per database sends: the one that
    runs the dispatcher, or among several dispatchers the one holding the role."""
    return Webhooks.from_settings(
        c.store, c.bus, settings, formats={PSIK_FORMAT: PsikCallbacks(c.secrets)}
    )


def wake_dir(settings: Settings) -> Path:
    """Where dispatchers on SQLite listen for wake-ups (see :mod:`jobgate.service.wakeups`)."""
    return settings.data_dir / "run" / "wake"


def carry_credentials(settings: Settings, backends: dict[str, Backend]) -> None:
    """Have the dispatcher pass their jobs' tokens to the backends of
    ``JOBGATE_CREDENTIAL_BACKENDS``."""
    for name in settings.credential_backends:
        if name in backends:
            backends[name].wants_credential = True
        else:
            log.warning("JOBGATE_CREDENTIAL_BACKENDS names %r, which is not configured", name)


def dispatch_settings(settings: Settings) -> DispatchSettings:
    """The dispatcher's share of the settings (its group's, less what backends hold:
    each backend's ``submit_patience``)."""
    group = settings.dispatch
    return DispatchSettings(
        jobs_dir=group.jobs_dir,
        logs_dir=group.logs_dir,
        poll_interval=group.poll_interval,
        max_attempts=group.max_attempts,
        lease_seconds=group.lease_seconds,
        keep_task_dirs=group.keep_task_dirs,
        retry_max_delay=group.submit_retry_max_delay,
        stalled_fail_after=settings.lifecycle.stalled_fail_after,
    )


async def announce_auth(settings: Settings, tokens: ServiceTokens) -> None:
    """Log how callers authenticate; create the first admin token when there is none."""
    log.info("authentication: %s", ", ".join(settings.auth))
    if "none" in settings.auth:
        log.warning(
            "JOBGATE_AUTH includes 'none': requests without credentials are served as an "
            "anonymous admin (listening on %s)",
            settings.host,
        )
    spaces = oidc_namespaces(settings)
    if spaces:
        log.info("OIDC owner namespaces: %s", ", ".join(spaces))
    for setting in ("submit_groups", "admin_groups", "share_groups"):
        for entry in ambiguous_bare(getattr(settings, setting), spaces):
            log.warning(
                "JOBGATE_%s entry %r matches local groups only (several OIDC namespaces); "
                "write <namespace>:%s for an OIDC group",
                setting.upper(),
                entry,
                entry,
            )
    if "token" in settings.auth:
        path = await tokens.ensure_admin_token(settings.data_dir)
        if path is not None:
            log.warning("created an admin service token; it is in %s (mode 0600)", path)
