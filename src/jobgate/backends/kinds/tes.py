"""Kind ``tes``: jobs are forwarded to a remote GA4GH TES server (which stages their data)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from jobgate.backends.base import Backend
from jobgate.backends.registry import BackendContext, BackendKind
from jobgate.backends.tes.backend import AuthMode, TesBackend, TesConfig

ZONE = r"^[A-Za-z0-9_.:-]{1,256}$"


class TesOptions(BaseModel):
    """A ``type: tes`` entry of the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["tes"]
    url: str = Field(
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="The remote's TES base URL (`https://host/ga4gh/tes/v1`); the only "
        "address this backend contacts (redirects are not followed).",
    )
    auth: AuthMode = Field(
        default="none",
        description="`none`; `bearer` (`token`/`token_file`); `basic` (`username`, "
        "`password`/`password_file`); `forward`: the submitter's own token (list the "
        "backend in JOBGATE_CREDENTIAL_BACKENDS); `token` then serves reads after a restart.",
    )
    token: SecretStr | None = Field(default=None, description="Bearer token (`auth: bearer`).")
    token_file: Path | None = Field(default=None, description="File holding the bearer token.")
    username: str | None = Field(default=None, description="User name (`auth: basic`).")
    password: SecretStr | None = Field(default=None, description="Password (`auth: basic`).")
    password_file: Path | None = Field(default=None, description="File holding the password.")
    zones: tuple[str, ...] = Field(
        default=(),
        description="`resources.zones` values that send a task here (besides the name).",
    )
    capacity: int | None = Field(
        default=None, ge=1, description="Jobs at once the remote takes, for load-based routing."
    )
    lost_after: float = Field(
        default=600.0,
        gt=0,
        description="Seconds the remote may stay unreachable before its jobs are SYSTEM_ERROR.",
    )
    poll_interval: float = Field(
        default=0.5, ge=0, description="Seconds between two status listings at least."
    )
    timeout: float = Field(default=30.0, gt=0, description="Seconds one request may take.")
    resubmit_lost: bool = Field(
        default=False,
        description="A task the remote forgets (404) before it ever reported it RUNNING is "
        "submitted again (to the next routing candidate when routing placed it, else here) "
        "instead of ending SYSTEM_ERROR; an event says why.",
    )
    gateway_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Id tagged on the tasks this gateway creates (unset: derived from the "
        "data directory; keep it stable across restarts).",
    )

    @model_validator(mode="after")
    def _auth_complete(self) -> TesOptions:
        if self.auth == "bearer" and self.token is None and self.token_file is None:
            raise ValueError("auth: bearer needs `token` or `token_file`")
        if self.auth == "basic" and (
            self.username is None or (self.password is None and self.password_file is None)
        ):
            raise ValueError("auth: basic needs `username` and `password` or `password_file`")
        return self


def _secret(value: SecretStr | None, path: Path | None) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if path is not None:
        return path.expanduser().read_text(encoding="utf-8").strip()
    return None


def build(name: str, options: TesOptions, ctx: BackendContext) -> Backend:
    header = None
    token = _secret(options.token, options.token_file)
    if options.auth in ("bearer", "forward") and token is not None:
        header = f"Bearer {token}"
    elif options.auth == "basic":
        pair = f"{options.username}:{_secret(options.password, options.password_file)}"
        header = "Basic " + base64.b64encode(pair.encode()).decode()
    gateway = options.gateway_id or (
        "gw-" + hashlib.sha256(str(ctx.settings.data_dir.resolve()).encode()).hexdigest()[:16]
    )
    config = TesConfig(
        url=options.url,
        auth=options.auth,
        gateway=gateway,
        header=header,
        zones=frozenset(options.zones),
        lost_after=options.lost_after,
        min_poll_interval=options.poll_interval,
        timeout=options.timeout,
        capacity=options.capacity,
        resubmit_lost=options.resubmit_lost,
    )
    return TesBackend(config, name=name)


KIND = BackendKind(
    name="tes",
    config=TesOptions,
    build=build,
    summary="a remote GA4GH TES server: tasks are created, followed and canceled there",
)
