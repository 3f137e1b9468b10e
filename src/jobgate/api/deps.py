"""Dependencies the routers share: the objects the app factory built."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from jobgate.backends.base import Backend
from jobgate.config import Settings
from jobgate.service.jobs import JobService


@dataclass
class Services:
    settings: Settings
    jobs: JobService
    backends: dict[str, Backend]


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
