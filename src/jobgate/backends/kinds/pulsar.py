"""Kind ``pulsar``: tasks run as jobs of a Galaxy Pulsar server's manager."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from jobgate.backends.base import Backend
from jobgate.backends.pulsar import PulsarBackend, PulsarConfig
from jobgate.backends.pulsar.backend import REMOTE_SCHEMES
from jobgate.backends.pulsar.script import Container, ContainerKind
from jobgate.backends.registry import BackendContext, BackendKind
from jobgate.staging.guard import Guard
from jobgate.staging.tarball import ExtractLimits


class PulsarOptions(BaseModel):
    """A ``type: pulsar`` entry of the config file (one Pulsar server's manager; declare
    as many entries as a site has servers or managers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["pulsar"]
    url: AnyHttpUrl = Field(description="The Pulsar server's base URL (`http://host:8913`).")
    private_token: str | None = Field(
        default=None,
        description="The server's `private_token` (app.yml); unset: the server has none.",
    )
    manager: str = Field(
        default="_default_",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="The Pulsar job manager jobs go to (app.yml `managers`).",
    )
    amqp_url: str | None = Field(
        default=None,
        pattern=r"^amqps?://",
        description="The message queue Pulsar listens on (`amqp://user:pass@host:5672//`, "
        "its `message_queue_url`): jobs are sent and their status updates received over "
        "it, with a slow REST poll as a safety net. Unset: REST only, polled.",
    )
    amqp_poll_interval: float = Field(
        default=30.0,
        gt=0,
        description="With `amqp_url`: seconds between two REST checks of a job at most "
        "(the safety net for lost status messages).",
    )
    liveness_timeout: float = Field(
        default=120.0,
        ge=2,
        description="Seconds a job Pulsar calls running may go without a heartbeat from its "
        "script before it is SYSTEM_ERROR (Pulsar reports jobs whose processes died with "
        "its server as running for ever).",
    )
    poll_concurrency: int = Field(
        default=16, ge=1, le=256, description="Status requests in flight at once per poll."
    )
    keep_remote: bool = Field(
        default=False,
        description="Leave each job's directory on the Pulsar server after its final "
        "state (for debugging); by default it is deleted.",
    )
    remote_staging: bool | list[str] = Field(
        default=False,
        description="Let the Pulsar server fetch inputs itself (its remote staging) "
        "instead of the gateway uploading them: `true` for http and https URLs, or a list "
        "of those schemes. Each URL's host must pass the gateway's staging guard "
        "(`JOBGATE_STAGING_ALLOWED_HOSTS`). Outputs still come back through the gateway.",
    )
    container: ContainerKind | None = Field(
        default=None,
        description="The container runtime on the Pulsar host (`docker`, `podman`, "
        "`singularity`, `apptainer`): each executor runs in its image. Unset: executors "
        "run on the Pulsar host and their images are noted in the task's system_logs.",
    )
    container_command: str | None = Field(
        default=None,
        min_length=1,
        description="The container runtime's executable on the Pulsar host (default: "
        "`container` on its PATH).",
    )

    @field_validator("remote_staging")
    @classmethod
    def _schemes(cls, v: bool | list[str]) -> bool | list[str]:
        if isinstance(v, list):
            bad = sorted(set(v) - REMOTE_SCHEMES)
            if bad:
                raise ValueError(
                    f"Pulsar cannot fetch {', '.join(bad)} URLs itself "
                    f"(remote staging supports: {', '.join(sorted(REMOTE_SCHEMES))})"
                )
        return v

    def remote_schemes(self) -> frozenset[str]:
        if self.remote_staging is True:
            return REMOTE_SCHEMES
        return frozenset(self.remote_staging or ())


def build(name: str, options: PulsarOptions, ctx: BackendContext) -> Backend:
    config = PulsarConfig(
        url=str(options.url).rstrip("/"),
        private_token=options.private_token,
        manager=options.manager,
        task_root=ctx.jobs_dir,
        log_tail_bytes=ctx.settings.log_tail_bytes,
        poll_concurrency=options.poll_concurrency,
        liveness_timeout=options.liveness_timeout,
        keep_remote=options.keep_remote or ctx.settings.keep_task_dirs,
        extract_limits=ExtractLimits(
            ctx.settings.sandbox_extract_max_bytes, ctx.settings.sandbox_extract_max_files
        ),
        remote_schemes=options.remote_schemes(),
        guard=Guard.from_entries(ctx.settings.staging_allowed_hosts),
        container=(
            Container(options.container, options.container_command or "")
            if options.container
            else None
        ),
    )
    if options.amqp_url:
        from jobgate.backends.pulsar.amqp import AmqpPulsarBackend

        return AmqpPulsarBackend(
            config, options.amqp_url, name=name, safety_interval=options.amqp_poll_interval
        )
    return PulsarBackend(config, name=name)


KIND = BackendKind(
    name="pulsar",
    config=PulsarOptions,
    build=build,
    summary="a Galaxy Pulsar server: jobs over its REST API (polled) or its message queue",
)
