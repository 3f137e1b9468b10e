"""The app factory: builds store, backends, dispatcher and routers from one Settings."""

from __future__ import annotations

import gc
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from jobgate import __version__
from jobgate.api import errors, files, health, openapi, streams, tes, tokens, worksteps
from jobgate.api import jobs as jobs_api
from jobgate.api.deps import Services
from jobgate.api.security import authenticate, public
from jobgate.auth.authenticator import Authenticator
from jobgate.auth.basic import BasicUsers
from jobgate.auth.credentials import JobCredentials
from jobgate.auth.oidc import OidcVerifier
from jobgate.auth.policy import Policy
from jobgate.auth.ratelimit import RateLimiter
from jobgate.auth.secrets import SecretBox
from jobgate.auth.tokens import ServiceTokens
from jobgate.backends.base import Backend
from jobgate.backends.choice import default_backend, make_backends
from jobgate.config import Settings
from jobgate.dispatcher import Dispatcher
from jobgate.service.events import EventBus
from jobgate.service.jobs import JobService
from jobgate.service.logs import JobLogs
from jobgate.service.native import NativeJobs
from jobgate.service.sandboxes import Sandboxes
from jobgate.service.uploads import JobUploads
from jobgate.service.webhooks import Webhooks
from jobgate.staging import Stager
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
    if open_to_all and not is_loopback(settings.host):
        raise ValueError(
            f"JOBGATE_AUTH includes 'none' (no authentication): refusing to listen on "
            f"{settings.host}, which is not a loopback address; set "
            "JOBGATE_AUTH_NONE_ANY_HOST=true to do it anyway"
        )


def make_authenticator(
    settings: Settings, tokens: ServiceTokens, http: httpx.AsyncClient
) -> Authenticator:
    admin_groups = frozenset(settings.admin_groups)
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
    return Authenticator(
        settings.auth,
        oidc=oidc,
        tokens=tokens if "token" in settings.auth else None,
        basic=basic,
    )


def create_app(settings: Settings | None = None, *, dispatch: bool = True) -> FastAPI:
    """A ready ASGI app. ``dispatch=False`` serves the API without running jobs.

    Raises ValueError when the settings would serve unauthenticated beyond loopback.
    """
    settings = settings or Settings()
    check_listen_address(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.db_url, sqlite_synchronous=settings.sqlite_synchronous)
        await migrate(engine)
        db = Database(engine, sqlite_synchronous=settings.sqlite_synchronous)
        store = JobStore(db)
        bus = EventBus()
        store.listeners.append(bus.publish)
        backends = make_backends(settings)
        stager = Stager.from_settings(settings)
        sandboxes = Sandboxes(
            SandboxStore(db), settings.sandboxes_dir, max_bytes=settings.sandbox_max_bytes
        )
        dispatcher = Dispatcher(store, backends, stager, settings, sandboxes=sandboxes)
        jobs = JobService(
            store,
            backends=backends,
            default_backend=default_backend(settings, backends),
            max_content_bytes=settings.max_content_bytes,
            notifier=dispatcher if dispatch else None,
            credential_backends=settings.credential_backends,
        )
        native = NativeJobs(
            jobs,
            jobs_dir=settings.jobs_dir,
            parametric_cap=settings.parametric_cap,
            max_reschedules=settings.max_reschedules,
        )
        secrets = SecretBox.from_settings(
            settings.secret_key.get_secret_value() if settings.secret_key else None,
            settings.data_dir,
        )
        carry_credentials(settings, backends, JobCredentials(store, secrets))
        tokens = ServiceTokens(TokenStore(db))
        # OIDC discovery and JWKS: issuers are the operator's, so not behind the staging guard.
        http = httpx.AsyncClient(timeout=settings.http_timeout, follow_redirects=True)
        policy = Policy(
            submit_groups=settings.submit_groups,
            share_groups=settings.share_groups,
            limiter=RateLimiter(settings.submit_rate, settings.submit_burst),
        )
        app.state.services = Services(
            settings=settings,
            jobs=jobs,
            backends=backends,
            native=native,
            idempotency=IdempotencyStore(store.db),
            events=bus,
            sandboxes=sandboxes,
            uploads=JobUploads(native, max_bytes=settings.upload_max_bytes),
            logs=JobLogs(
                store,
                bus,
                jobs_dir=settings.jobs_dir,
                logs_dir=settings.logs_dir,
                backend_dirs={n: b.jobs_dir for n, b in backends.items() if b.jobs_dir},
            ),
            auth=make_authenticator(settings, tokens, http),
            policy=policy,
            tokens=tokens,
            secrets=secrets,
        )
        await announce_auth(settings, tokens)
        app.state.dispatcher = dispatcher
        # Webhooks run where jobs run: one sender per database, resuming from its cursor.
        webhooks = Webhooks.from_settings(store, bus, settings)
        if dispatch:
            await webhooks.start()
            await dispatcher.start()
        log.info(
            "jobgate %s: database %s, backends %s (default %s)",
            __version__,
            engine.url.render_as_string(hide_password=True),
            {n: b.describe() for n, b in backends.items()},
            jobs.default_backend,
        )
        # Keep start-up objects (modules, classes, caches: ~120k) out of the cyclic GC:
        # otherwise every full collection walks them all, a 70-90 ms pause on a slow core.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await dispatcher.stop()
            await webhooks.stop()
            await stager.aclose()
            await http.aclose()
            store.close()
            await engine.dispose()

    app = FastAPI(
        title="jobgate",
        version=__version__,
        description="GA4GH TES v1.1 and a native jobs API over local and batch backends.",
        lifespan=lifespan,
        # Every API route authenticates unless its endpoint is marked @public.
        dependencies=[Depends(authenticate)],
    )
    errors.install(app)
    app.include_router(health.make_router())
    app.include_router(jobs_api.make_router())
    app.include_router(streams.make_router())
    app.include_router(files.make_router())
    app.include_router(worksteps.make_router())
    app.include_router(tokens.make_router())
    tes_router = tes.make_router()
    app.include_router(tes_router, prefix="/ga4gh/tes/v1")

    # Before the /v1 router: its /v1/tasks/{task_id} would take "service-info" as an id.
    @app.get("/v1/tasks/service-info", include_in_schema=False)
    @public
    async def legacy_service_info() -> JSONResponse:
        return JSONResponse(tes.service_info(app.state.services))

    app.include_router(tes_router, prefix="/v1", include_in_schema=False)
    openapi.install(app, settings)
    return app


def carry_credentials(
    settings: Settings, backends: dict[str, Backend], credentials: JobCredentials
) -> None:
    """Give the backends of ``JOBGATE_CREDENTIAL_BACKENDS`` their jobs' tokens."""
    for name in settings.credential_backends:
        if name in backends:
            backends[name].credentials = credentials.reveal
        else:
            log.warning("JOBGATE_CREDENTIAL_BACKENDS names %r, which is not configured", name)


async def announce_auth(settings: Settings, tokens: ServiceTokens) -> None:
    """Log how callers authenticate; create the first admin token when there is none."""
    log.info("authentication: %s", ", ".join(settings.auth))
    if "none" in settings.auth:
        log.warning(
            "JOBGATE_AUTH includes 'none': requests without credentials are served as an "
            "anonymous admin (listening on %s)",
            settings.host,
        )
    if "token" in settings.auth:
        path = await tokens.ensure_admin_token(settings.data_dir)
        if path is not None:
            log.warning("created an admin service token; it is in %s (mode 0600)", path)
