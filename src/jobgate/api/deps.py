"""Dependencies the routers share: the objects the app factory built."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from jobgate.auth.authenticator import Authenticator
from jobgate.auth.jobtokens import JobTokens
from jobgate.auth.policy import Policy
from jobgate.auth.secrets import SecretBox
from jobgate.auth.tokens import ServiceTokens
from jobgate.backends.base import Backend
from jobgate.config import Settings
from jobgate.service.events import EventBus
from jobgate.service.heartbeats import Heartbeats
from jobgate.service.jobs import JobService
from jobgate.service.logs import JobLogs
from jobgate.service.native import NativeJobs
from jobgate.service.sandboxes import Sandboxes
from jobgate.service.uploads import JobUploads
from jobgate.store.idempotency import IdempotencyStore


@dataclass
class Services:
    settings: Settings
    jobs: JobService
    backends: dict[str, Backend]
    native: NativeJobs
    idempotency: IdempotencyStore
    events: EventBus
    sandboxes: Sandboxes
    uploads: JobUploads
    logs: JobLogs
    auth: Authenticator
    policy: Policy
    tokens: ServiceTokens
    secrets: SecretBox
    heartbeats: Heartbeats
    job_tokens: JobTokens


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per
    # request for one attribute read.
    svc: Services = request.app.state.services
    return svc
