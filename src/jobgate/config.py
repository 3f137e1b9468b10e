"""Settings, read once from the environment (prefix ``JOBGATE_``) and passed down.

One flat class: the environment names are the interface (``JOBGATE_DATA_DIR``, …), and a
flat class keeps each name exactly the field name. Instances are frozen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from jobgate.runtimes.images import parse_image_map

Runtime = Literal["auto", "bwrap", "process", "podman", "docker", "apptainer", "singularity"]
AuthMode = Literal["oidc", "token", "basic", "none"]


def default_podman_runtime() -> str:
    """runc where installed: podman's default crun fails on hosts whose rlimits and
    cgroups it cannot manage (hybrid cgroups, confined rlimits), where runc works."""
    return "/usr/sbin/runc" if os.path.exists("/usr/sbin/runc") else ""


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "jobgate"


class Settings(BaseSettings):
    """Everything the service needs to start; built once by the CLI or the tests."""

    model_config = SettingsConfigDict(env_prefix="JOBGATE_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str = ""
    """SQLAlchemy async URL; empty means an SQLite file under ``data_dir``."""
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL"
    """NORMAL in WAL mode survives a process crash (kill -9); FULL also survives power loss."""

    allowed_dirs: Annotated[tuple[Path, ...], NoDecode] = ()
    """Directories that ``file://`` inputs and outputs may use (comma-separated)."""
    runtime: Runtime = "auto"
    """How executors run: bwrap (default where installed), plain processes, or containers
    (podman, docker, apptainer/singularity; see the container settings below)."""
    slots: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    """CPU slots of the local backend; a task takes ``cpu_cores`` of them."""

    poll_interval: float = Field(default=2.0, gt=0)
    """Seconds between backend polls and queue scans when nothing wakes the dispatcher."""
    max_attempts: int = Field(default=2, ge=1)
    """How many times a task interrupted by a gateway restart is run before SYSTEM_ERROR."""
    log_tail_bytes: int = Field(default=64 * 1024, ge=0)
    """How much of each executor's stdout/stderr is kept in the task logs."""
    max_content_bytes: int = Field(default=1024 * 1024, ge=128 * 1024)
    """Largest inline ``content`` of one input (the spec asks for at least 128 KiB)."""
    parametric_cap: int = Field(default=10_000, ge=1)
    """Most jobs one parametric submission may expand into."""
    max_reschedules: int = Field(default=10, ge=0)
    """How often one job may be rescheduled."""
    keep_task_dirs: bool = False
    """Keep each task's working directory after it ends (for debugging)."""
    http_timeout: float = Field(default=60.0, gt=0)
    sandbox_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    """Largest sandbox (uploaded or packed from a job's output_sandbox)."""
    sandbox_extract_max_bytes: int = Field(default=10 * 1024**3, ge=1)
    """Most bytes a tarball sandbox may unpack to (a small archive can expand enormously)."""
    sandbox_extract_max_files: int = Field(default=100_000, ge=1)
    """Most entries a tarball sandbox may unpack."""
    upload_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    """Largest file uploaded into a held job (``PUT /api/v1/jobs/{id}/files/...``)."""
    sse_heartbeat: float = Field(default=15.0, gt=0)
    """Seconds between keep-alive comments on an idle event stream."""

    webhook_secret: SecretStr | None = None
    """HMAC key for webhook signatures; unset: generated once, kept in ``data_dir``."""
    webhook_max_attempts: int = Field(default=8, ge=1)
    """Deliveries of one webhook event before it is given up (connection errors, 5xx, 429)."""
    webhook_backoff: float = Field(default=1.0, gt=0)
    """Seconds before the first webhook retry; doubled for each further one."""
    webhook_backoff_max: float = Field(default=300.0, gt=0)
    """Longest wait between two webhook attempts (also caps a receiver's Retry-After)."""
    webhook_timeout: float = Field(default=10.0, gt=0)
    """Seconds one webhook request may take before it counts as failed."""
    src_nodes: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """SKA SRCNet node → backend (``CHSRC=local,UKSRC=local``); empty: all nodes run locally."""

    service_id: str = "org.jobgate.tes"
    service_name: str = "jobgate"
    organization_name: str = "jobgate"
    organization_url: str = "https://example.org/jobgate"

    # -- Slurm backend and named backends (issue 7) -------------------------------------
    backend: str = Field(default="local", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """The default backend's name (``local``, ``slurm``, or one a config file declares)."""
    config_file: Path | None = None
    """YAML or TOML file declaring named backends and their options (``serve --config``)."""
    slurm_shared_dir: Path | None = None
    """Job directory root the Slurm nodes see; unset: ``data_dir/slurm`` (one-node setups)."""
    slurm_partition: str | None = None
    """Partition for jobs that name none (unset: the cluster's default partition)."""
    slurm_time: str | None = None
    """Time limit (Slurm ``--time`` syntax) for jobs that name none."""
    slurm_submit_rate: float = Field(default=20.0, gt=0)
    """sbatch calls per second at most (token bucket), refilled steadily."""
    slurm_submit_burst: int = Field(default=40, ge=1)
    """sbatch calls allowed back to back before the rate applies."""
    slurm_array_window: float = Field(default=0.05, ge=0)
    """Seconds a submission waits for others like it to go out as one job array."""
    slurm_submit_patience: float = Field(default=600.0, gt=0)
    """Seconds a submission keeps retrying while the controller is unreachable or busy."""
    slurm_python: str | None = None
    """Python on the nodes with jobgate installed; unset: the gateway's own interpreter."""
    slurm_max_array: int = Field(default=1000, ge=1)
    """Most jobs one sbatch --array carries (below the site's MaxArraySize); 1: no arrays."""

    @field_validator("allowed_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(Path(p.strip()) for p in value.split(",") if p.strip())
        return value

    @field_validator("src_nodes", mode="before")
    @classmethod
    def _split_nodes(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = [p.strip() for p in value.split(",") if p.strip()]
        bad = [p for p in pairs if "=" not in p]
        if bad:
            raise ValueError(f"expected NODE=backend pairs, got {bad}")
        return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}

    @field_validator("allowed_dirs")
    @classmethod
    def _absolute_dirs(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        return tuple(p.expanduser().resolve() for p in value)

    @model_validator(mode="after")
    def _resolve_data_dir(self) -> Settings:
        object.__setattr__(self, "data_dir", self.data_dir.expanduser().resolve())
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'jobgate.db'}"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def logs_dir(self) -> Path:
        """Executors' stdout/stderr kept after a job ends: ``logs/<job id>/<n>.stdout``."""
        return self.data_dir / "logs"

    @property
    def uploads_dir(self) -> Path:
        """Files uploaded into held jobs: ``uploads/<job id>/<path>``."""
        return self.data_dir / "uploads"

    @property
    def sandboxes_dir(self) -> Path:
        """Content-addressed sandboxes: ``sandboxes/<sha256>``."""
        return self.data_dir / "sandboxes"

    # -- data staging (issue 4): stores, transfers, SSRF guard ------------------------------
    staging_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    """``host`` or ``host:port`` (IPv6: ``[::1]:9000``) exempt from the SSRF rule, which
    refuses URLs resolving to loopback, private, link-local or metadata addresses."""
    s3_endpoint_url: str = ""
    """S3 endpoint (MinIO, Ceph, moto); empty: AWS, or ``AWS_ENDPOINT_URL[_S3]``.
    Credentials and region come from the standard ``AWS_*`` variables."""
    ftp_username: str = ""
    """FTP user when the URL names none; empty: anonymous."""
    ftp_password: SecretStr | None = None
    staging_http_put_prefixes: Annotated[tuple[str, ...], NoDecode] = ()
    """URL prefixes (comma-separated) to which http(s) outputs are PUT; others are refused."""
    staging_parallel: int = Field(default=4, ge=1)
    """Files transferred at once, across all tasks."""
    staging_attempts: int = Field(default=3, ge=1)
    """Tries per transfer when it fails transiently (connection errors, HTTP 5xx/429)."""
    staging_backoff: float = Field(default=0.5, gt=0)
    """Seconds before the first retry; doubled for each further one."""
    staging_backoff_max: float = Field(default=10.0, gt=0)
    staging_chunk_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)
    """Bytes per read/write (and per S3 multipart part): memory per transfer stays near it."""
    staging_max_task_bytes: int = Field(default=0, ge=0)
    """Most bytes one task may stage in, and out (each); 0: no limit."""

    @field_validator("staging_allowed_hosts", "staging_http_put_prefixes", mode="before")
    @classmethod
    def _split_staging_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    # -- authentication and authorization (issue 5) --------------------------------------
    auth: Annotated[tuple[AuthMode, ...], NoDecode] = ("token",)
    """Accepted credentials (comma-separated): oidc, token, basic, none."""
    auth_none_any_host: bool = False
    """With ``none`` on, serve on a non-loopback address anyway (anyone reaching it is admin)."""
    oidc_issuers: Annotated[tuple[str, ...], NoDecode] = ()
    """Trusted OIDC issuer URLs (comma-separated); keys come from their discovery documents."""
    oidc_audience: str = ""
    """The ``aud`` every OIDC token must carry (required when ``oidc`` is on)."""
    oidc_user_claim: str = "sub"
    oidc_groups_claim: str = "groups"
    """Claim listing the user's groups (``groups``, ``wlcg.groups``, a dotted path…)."""
    oidc_algorithms: Annotated[tuple[str, ...], NoDecode] = (
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "EdDSA",
    )
    """Signature algorithms accepted; ``none`` and shared-secret (HS*) ones never are."""
    oidc_jwks_min_refresh: float = Field(default=30.0, ge=0)
    """Fewest seconds between two JWKS fetches of one issuer (an unknown ``kid`` refetches)."""
    oidc_jwks_max_age: float = Field(default=3600.0, gt=0)
    """Seconds an issuer's keys are used before they are fetched again."""
    oidc_leeway: float = Field(default=30.0, ge=0)
    """Clock skew allowed on ``exp``/``nbf``/``iat``, in seconds."""
    submit_groups: Annotated[tuple[str, ...], NoDecode] = ()
    """Submitting needs membership of one of these groups (empty: any authenticated caller)."""
    admin_groups: Annotated[tuple[str, ...], NoDecode] = ()
    """Members of these groups see and control every job."""
    share_groups: Annotated[tuple[str, ...], NoDecode] = ()
    """A job is visible to the members of the first of these groups its submitter is in."""
    basic_users_file: Path | None = None
    """``user:bcrypt-hash[:group,group]`` lines (``jobgate user set`` writes them)."""
    secret_key: SecretStr | None = None
    """Fernet key for credentials kept at rest; unset: generated once in ``data_dir``."""
    credential_backends: Annotated[tuple[str, ...], NoDecode] = ()
    """Backends a job carries its submitter's bearer token to (stored encrypted)."""
    submit_rate: float = Field(default=0.0, ge=0)
    """Submissions per minute allowed to one caller (0: unlimited); over it answers 429."""
    submit_burst: int = Field(default=20, ge=1)
    """Submissions one caller may make at once before ``submit_rate`` applies."""

    @field_validator(
        "auth",
        "oidc_issuers",
        "oidc_algorithms",
        "submit_groups",
        "admin_groups",
        "share_groups",
        "credential_backends",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @field_validator("submit_groups", "admin_groups", "share_groups")
    @classmethod
    def _plain_groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # IAM sends "/src/production" in wlcg.groups and "src/production" elsewhere.
        return tuple(g.strip("/") for g in value)

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if a.lower() == "none" or a.upper().startswith("HS")]
        if bad:
            raise ValueError(f"algorithms {bad} are not allowed for OIDC tokens")
        return value

    @model_validator(mode="after")
    def _auth_complete(self) -> Settings:
        if not self.auth:
            raise ValueError("JOBGATE_AUTH names no mode; use oidc, token, basic or none")
        if "oidc" in self.auth and not (self.oidc_issuers and self.oidc_audience):
            raise ValueError(
                "JOBGATE_AUTH=oidc needs JOBGATE_OIDC_ISSUERS and JOBGATE_OIDC_AUDIENCE"
            )
        if "basic" in self.auth and self.basic_users_file is None:
            raise ValueError("JOBGATE_AUTH=basic needs JOBGATE_BASIC_USERS_FILE")
        return self

    # -- container runtimes (issue 6) -------------------------------------------------
    image_map: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """TES image name → local image (``alpine=localhost/busybox:latest``) or unpacked root
    directory (``alpine=dir:/srv/roots/alpine``; also used by bwrap), comma-separated."""
    image_dir: Path | None = None
    """Image archives for air-gapped sites (``<image with / : @ as _>.tar`` for podman and
    docker, ``.sif`` for apptainer), loaded the first time an image is missing."""
    pull_timeout: float = Field(default=600.0, gt=0)
    """Seconds an image pull may take before the task is a SYSTEM_ERROR."""
    executor_network: bool = False
    """Give executors the network (containers and bwrap); off by default."""
    container_user: str = "65534:65534"
    """``UID:GID`` executors run as in containers (task files are handed to it); empty keeps
    the image's user. Rootless podman maps container root to the service's user instead."""
    podman_runtime: str = Field(default_factory=lambda: default_podman_runtime())
    """podman's OCI runtime (``--runtime``); default runc where installed, empty: podman's."""
    container_ulimits: Annotated[tuple[str, ...], NoDecode] = ()
    """``--ulimit`` values for podman/docker (``nofile=1024:1024,nproc=512:512``); empty:
    this service's own nofile and nproc limits, which the engine may always set."""

    @field_validator("image_map", mode="before")
    @classmethod
    def _split_image_map(cls, value: object) -> object:
        return parse_image_map(value) if isinstance(value, str) else value

    @field_validator("container_ulimits", mode="before")
    @classmethod
    def _split_ulimits(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value
