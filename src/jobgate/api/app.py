"""The app factory: builds store, backends, dispatcher and routers from one Settings."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from jobgate import __version__
from jobgate.api import errors, files, health, streams, tes, worksteps
from jobgate.api import jobs as jobs_api
from jobgate.api.deps import Services
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

log = logging.getLogger("jobgate")


def create_app(settings: Settings | None = None, *, dispatch: bool = True) -> FastAPI:
    """A ready ASGI app. ``dispatch=False`` serves the API without running jobs."""
    settings = settings or Settings()

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
        http = httpx.AsyncClient(timeout=settings.http_timeout, follow_redirects=True)
        stager = Stager(
            settings.allowed_dirs,
            http,
            settings.max_content_bytes,
            uploads_dir=settings.uploads_dir,
            sandboxes_dir=settings.sandboxes_dir,
        )
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
        )
        native = NativeJobs(
            jobs,
            jobs_dir=settings.jobs_dir,
            parametric_cap=settings.parametric_cap,
            max_reschedules=settings.max_reschedules,
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
        )
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
            await http.aclose()
            store.close()
            await engine.dispose()

    app = FastAPI(
        title="jobgate",
        version=__version__,
        description="GA4GH TES v1.1 and a native jobs API over local and batch backends.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(health.make_router())
    app.include_router(jobs_api.make_router())
    app.include_router(streams.make_router())
    app.include_router(files.make_router())
    app.include_router(worksteps.make_router())
    tes_router = tes.make_router()
    app.include_router(tes_router, prefix="/ga4gh/tes/v1")

    # Before the /v1 router: its /v1/tasks/{task_id} would take "service-info" as an id.
    @app.get("/v1/tasks/service-info", include_in_schema=False)
    async def legacy_service_info() -> JSONResponse:
        return JSONResponse(tes.service_info(app.state.services))

    app.include_router(tes_router, prefix="/v1", include_in_schema=False)
    return app
