"""The fake backend as a registry kind (``type: fake``), for in-process app tests: each
build returns the instance a test put in :data:`INSTANCES` under the backend's name."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from jobgate.backends.base import Backend
from jobgate.backends.registry import BackendContext, BackendKind
from tests.dispatcher.fake import FakeBackend

INSTANCES: dict[str, FakeBackend] = {}


class FakeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["fake"]


def build(name: str, options: FakeOptions, ctx: BackendContext) -> Backend:
    return INSTANCES.setdefault(name, FakeBackend(name))


KIND = BackendKind(name="fake", config=FakeOptions, build=build, summary="a test double")
