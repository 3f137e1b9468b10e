"""Settings, read once from the environment (prefix ``JOBGATE_``) and passed down.

One flat class: the environment names are the interface (``JOBGATE_DATA_DIR``, …), and a
flat class keeps each name exactly the field name. Instances are frozen.

Grouped views of the same values, one frozen model per concern, are properties of
:class:`Settings` (``settings.dispatch.poll_interval``, ``settings.webhooks.max_attempts``):
a component can take only its group. Every flat field belongs to exactly one group.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from jobgate.auth.namespaces import issuer_namespaces, namespace_of
from jobgate.datadir import default_data_dir
from jobgate.runtimes.hostmounts import HostMount, parse_host_mounts
from jobgate.runtimes.images import parse_image_map

Runtime = Literal["auto", "bwrap", "process", "podman", "docker", "apptainer", "singularity"]
AuthMode = Literal["oidc", "token", "basic", "x509", "none"]


def default_podman_runtime() -> str:
    """runc where installed: podman's default crun fails on hosts whose rlimits and
    cgroups it cannot manage (hybrid cgroups, confined rlimits), where runc works."""
    return "/usr/sbin/runc" if os.path.exists("/usr/sbin/runc") else ""


class Settings(BaseSettings):
    """Everything the service needs to start; built once by the CLI or the tests."""

    model_config = SettingsConfigDict(env_prefix="JOBGATE_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    max_connections: int = Field(default=4096, ge=1)
    """Most client connections open at once; lowered at start to fit the open-files limit."""
    http_header_timeout: float = Field(default=10.0, gt=0)
    """Seconds a connection may take to send a request head (after opening or a response)."""
    http_keep_alive_timeout: int = Field(default=5, ge=1)
    """Seconds an idle keep-alive connection stays open after a response."""
    data_dir: Path = Field(default_factory=default_data_dir)
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
    lease_seconds: float = Field(default=30.0, ge=3)
    """A dispatcher's lease: the longest the jobs of a dispatcher that died on another host
    wait before a live dispatcher adopts them (on the same host: at once)."""
    submit_patience: float = Field(default=600.0, gt=0)
    """Seconds transient submit errors (backend unreachable, busy) are retried before the
    job is SYSTEM_ERROR, for every backend (Slurm: ``slurm_submit_patience`` when set)."""
    submit_retry_max_delay: float = Field(default=60.0, gt=0)
    """Longest wait between two submit retries (the backoff doubles up to it, with jitter)."""
    log_tail_bytes: int = Field(default=64 * 1024, ge=0)
    """How much of each executor's stdout/stderr is kept in the task logs."""
    max_content_bytes: int = Field(default=1024 * 1024, ge=128 * 1024)
    """Largest inline ``content`` of one input (the spec asks for at least 128 KiB)."""
    parametric_cap: int = Field(default=10_000, ge=1)
    """Most jobs one parametric submission may expand into."""
    max_reschedules: int = Field(default=10, ge=0)
    """How often one job may be rescheduled."""
    task_max_pids: int = Field(default=1024, ge=0)
    """Processes and threads one executor may hold at once (cgroup ``pids.max``); 0: no
    limit. A fork past it fails, and the task ends EXECUTOR_ERROR saying so."""
    task_uid_base: int = Field(default=1_900_000_000, ge=1, le=4_294_967_293)
    """First host uid (and gid) tasks run as when the service runs as root: each running
    task gets its own, from ``task_uid_base`` up; a non-root service runs tasks as itself."""
    task_uid_count: int = Field(default=1024, ge=1)
    """How many task uids there are: at least as many as tasks may run at once (slots)."""
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
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024 * 1024)
    """Largest JSON request body (TES, native, worksteps, tokens); larger ones are a 413."""
    max_yaml_body_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    """Largest YAML request body (YAML parses ~50x slower than JSON)."""
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
    webhook_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    """``host`` or ``host:port`` callback targets exempt from the SSRF rule (as for staging)."""
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
    """Seconds a submission keeps retrying while the controller is unreachable or busy;
    only when set (environment or argument) does it override ``submit_patience``."""
    slurm_python: str | None = None
    """Python on the nodes with jobgate installed; unset: the gateway's own interpreter."""
    slurm_max_array: int = Field(default=1000, ge=1)
    """Most jobs one sbatch --array carries (below the site's MaxArraySize); 1: no arrays."""
    gridengine_shared_dir: Path | None = None
    """Job directory root the Grid Engine exec hosts see; unset: ``data_dir/gridengine``."""
    gridengine_queue: str | None = None
    """Queue (``qsub -q``) for jobs that name none (unset: the cell chooses)."""
    gridengine_project: str | None = None
    """Project (``qsub -P``) for jobs that name none."""
    gridengine_time: str | None = None
    """Run time limit (``h_rt``: seconds or H:MM:SS) for jobs that name none."""
    gridengine_pe: str = Field(default="smp", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """Parallel environment giving a job ``cpu_cores`` slots on one host ($pe_slots)."""
    gridengine_memory_resource: str = Field(default="h_vmem", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """Per-slot resource ``ram_gb`` is requested as (``mem_free``…); ``none``: not requested."""
    gridengine_submit_rate: float = Field(default=20.0, gt=0)
    """qsub calls per second at most (token bucket)."""
    gridengine_submit_burst: int = Field(default=40, ge=1)
    """qsub calls allowed back to back before the rate applies."""
    gridengine_array_window: float = Field(default=0.05, ge=0)
    """Seconds a submission waits for others like it to go out as one array job (-t)."""
    gridengine_python: str | None = None
    """Python on the exec hosts with jobgate installed; unset: the gateway's own."""
    gridengine_max_array: int = Field(default=1000, ge=1)
    """Most tasks one array job carries; 1: no arrays."""

    # -- metrics (Prometheus /metrics) ------------------------------------------------------
    metrics_access: Literal["loopback", "token", "open"] = "loopback"
    """Who reads ``/metrics``: ``loopback`` clients without credentials (others: below),
    ``token``: only callers with ``metrics_token`` or an admin's credentials, ``open``: all."""
    metrics_token: SecretStr | None = None
    """Bearer token a Prometheus scraper sends to read ``/metrics``."""
    metrics_jobs_interval: float = Field(default=15.0, gt=0)
    """Seconds between two counts of jobs per backend and state (``jobgate_jobs``)."""

    # -- DiracX jobs router (/api/jobs) -------------------------------------------------------
    diracx_max_jobs: int = Field(default=20, ge=1, le=10_000)
    """Jobs one ``POST /api/jobs/jdl`` may create (parametric ones included): DiracX's cap."""
    diracx_sandbox_url_seconds: int = Field(default=300, ge=1, le=7 * 86400)
    """Seconds a sandbox upload or download URL handed to a DiracX client stays valid."""

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
    def job_socket(self) -> Path:
        """The UNIX socket sandboxed executors send their heartbeats to (bound into each
        bubblewrap sandbox; it answers only a job token's own heartbeat route)."""
        return self.data_dir / "run" / "job.sock"

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

    # -- grouped views (frozen, built from the flat fields on each access) -----------------

    @property
    def server(self) -> ServerSettings:
        return ServerSettings.of(self)

    @property
    def store(self) -> StoreSettings:
        return StoreSettings.of(self, url=self.db_url)

    @property
    def dispatch(self) -> DispatchSettings:
        return DispatchSettings.of(self, jobs_dir=self.jobs_dir, logs_dir=self.logs_dir)

    @property
    def jobs(self) -> JobsSettings:
        return JobsSettings.of(self, uploads_dir=self.uploads_dir, sandboxes_dir=self.sandboxes_dir)

    @property
    def staging(self) -> StagingSettings:
        return StagingSettings.of(self)

    @property
    def auth_settings(self) -> AuthSettings:
        """The ``auth`` group (``auth`` itself is the flat list of modes)."""
        return AuthSettings.of(self)

    @property
    def webhooks(self) -> WebhookSettings:
        return WebhookSettings.of(self)

    @property
    def runtimes(self) -> RuntimeSettings:
        return RuntimeSettings.of(self)

    @property
    def backends(self) -> BackendSettings:
        return BackendSettings.of(self)

    @property
    def metrics(self) -> MetricsSettings:
        return MetricsSettings.of(self)

    @property
    def transports(self) -> TransportSettings:
        return TransportSettings.of(self)

    @property
    def dialects(self) -> DialectSettings:
        return DialectSettings.of(self)

    @property
    def lifecycle(self) -> LifecycleSettings:
        return LifecycleSettings.of(self)

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

    @field_validator(
        "staging_allowed_hosts", "staging_http_put_prefixes", "webhook_allowed_hosts", mode="before"
    )
    @classmethod
    def _split_staging_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    # -- authentication and authorization (issue 5) --------------------------------------
    auth: Annotated[tuple[AuthMode, ...], NoDecode] = ("token",)
    """Accepted credentials (comma-separated): oidc, token, basic, x509, none."""
    auth_none_any_host: bool = False
    """With ``none`` on, serve on a non-loopback address anyway (anyone reaching it is admin)."""
    oidc_issuers: Annotated[tuple[str, ...], NoDecode] = ()
    """Trusted OIDC issuers (comma-separated), each ``url`` or ``alias=url``: the alias is the
    issuer's owner namespace (``alias:sub``; derived from the URL when not given). Issuers
    given one alias share a namespace, on purpose. Keys come from discovery documents."""
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
    legacy_owner_namespace: str | None = None
    """Namespace given to owners written before namespaces existed (default: the sole OIDC
    issuer's; else ``basic`` with basic users; else ``token``); see README."""
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

    # -- dashboard sign-in through OIDC (authorization code flow with PKCE) ----------------
    dashboard_oidc_client_id: str | None = None
    """The dashboard's client id at the OIDC provider; unset: no OIDC sign-in on the page."""
    dashboard_oidc_client_secret: SecretStr | None = None
    """Its secret, for a confidential client (sent as ``client_secret_post``)."""
    dashboard_oidc_issuer: str | None = None
    """The provider people sign in at (default: the first of ``JOBGATE_OIDC_ISSUERS``)."""
    dashboard_oidc_scopes: str = "openid"
    """Scopes asked for (space-separated); the access token must carry the audience."""

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
            raise ValueError("JOBGATE_AUTH names no mode; use oidc, token, basic, x509 or none")
        if "oidc" in self.auth and not (self.oidc_issuers and self.oidc_audience):
            raise ValueError(
                "JOBGATE_AUTH=oidc needs JOBGATE_OIDC_ISSUERS and JOBGATE_OIDC_AUDIENCE"
            )
        if "basic" in self.auth and self.basic_users_file is None:
            raise ValueError("JOBGATE_AUTH=basic needs JOBGATE_BASIC_USERS_FILE")
        spaces = set(issuer_namespaces(self.oidc_issuers).values())
        legacy = self.legacy_owner_namespace
        if legacy is not None and (not legacy or ":" in legacy or "," in legacy):
            raise ValueError("JOBGATE_LEGACY_OWNER_NAMESPACE: a namespace name, without ':'")
        for setting in ("submit_groups", "admin_groups", "share_groups"):
            for entry in getattr(self, setting):
                ns = namespace_of(entry)
                if ns is not None and ns not in spaces:
                    raise ValueError(
                        f"JOBGATE_{setting.upper()} entry {entry!r}: {ns!r} is not the alias "
                        f"of an OIDC issuer ({', '.join(sorted(spaces)) or 'none configured'})"
                    )
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

    # -- host directories shown in every task (workflow engines) ---------------------------
    host_mounts: Annotated[tuple[HostMount, ...], NoDecode] = ()
    """Host directories bound at their own path in every executor, ``PATH:rw`` or
    ``PATH:ro`` (comma-separated); read-write ones are in service-info ``storage``."""

    task_user: str = ""
    """``UID:GID`` every task runs as under a root service, instead of a uid of its own per
    task: the account that runs workflow engines and owns their shared directories (their
    leader and workers must read and change each other's files). Empty: a uid per task."""

    @field_validator("host_mounts", mode="before")
    @classmethod
    def _split_host_mounts(cls, value: object) -> object:
        return parse_host_mounts(value) if isinstance(value, str) else value

    @field_validator("task_user")
    @classmethod
    def _check_task_user(cls, value: str) -> str:
        if value:
            uid, sep, gid = value.partition(":")
            if not (sep and uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0):
                raise ValueError(f"expected UID:GID of a non-root user, got {value!r}")
        return value

    # -- transports: TLS, client certificates, the UNIX socket ----------------------------
    tcp: bool = True
    """Listen on ``host``:``port``; false serves only on the UNIX socket (``uds``)."""
    tls_cert: Path | None = None
    """PEM certificate (chain) the server presents: TLS is served directly when set."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert`` (unset: the key is in the certificate file)."""
    tls_client_ca: Path | None = None
    """PEM bundle of the CAs whose client certificates (and their RFC 3820 proxies) are
    accepted; clients are then asked for a certificate (optional: other modes still work)."""
    tls_crl: Path | None = None
    """Certificate revocation lists (a PEM or DER file, or a directory of them such as
    ``/etc/grid-security/certificates``) checked for client certificates and their CAs."""
    x509_admin_dns: Annotated[tuple[str, ...], NoDecode] = ()
    """Certificate subjects (``/C=UK/O=Grid/CN=Alice``, ``;``-separated) that are admins."""
    x509_subjects_file: Path | None = None
    """grid-mapfile lines ``"<subject>" <owner> [group,group]``: who a certificate subject
    is (a bare owner ``x509:<owner>``; ``iam:alice`` that owner) and its groups."""
    uds: Path | None = None
    """UNIX socket path to serve on as well (mode 0600: every request is its owner's)."""
    uds_owner: str | None = None
    """Who the socket's requests are: a bare name is ``unix:<name>``, a full one
    (``basic:alice``) that owner; unset: ``unix:<the server's user>``."""
    uds_scope: Literal["read", "submit", "admin"] = "admin"
    """What the socket's requests may do."""

    @field_validator("x509_admin_dns", mode="before")
    @classmethod
    def _split_dns(cls, value: object) -> object:
        # Distinguished names may hold commas; ';' and newlines separate them here.
        if isinstance(value, str):
            return tuple(p.strip() for p in re.split(r"[;\n]", value) if p.strip())
        return value

    @model_validator(mode="after")
    def _transports_complete(self) -> Settings:
        if not self.tcp and self.uds is None:
            raise ValueError("JOBGATE_TCP=false needs JOBGATE_UDS: nothing to listen on")
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("JOBGATE_TLS_KEY needs JOBGATE_TLS_CERT")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("JOBGATE_TLS_CLIENT_CA needs JOBGATE_TLS_CERT (TLS served directly)")
        if self.tls_crl is not None and "x509" not in self.auth:
            raise ValueError("JOBGATE_TLS_CRL needs x509 in JOBGATE_AUTH")
        if self.x509_subjects_file is not None and "x509" not in self.auth:
            raise ValueError("JOBGATE_X509_SUBJECTS_FILE needs x509 in JOBGATE_AUTH")
        if "x509" in self.auth and self.tls_client_ca is None:
            raise ValueError("JOBGATE_AUTH=x509 needs JOBGATE_TLS_CLIENT_CA and JOBGATE_TLS_CERT")
        if self.uds_owner is not None:
            ns, sep, rest = self.uds_owner.partition(":")
            if (
                not ns.strip()
                or (sep and not rest.strip())
                or self.uds_owner != self.uds_owner.strip()
            ):
                raise ValueError(f"JOBGATE_UDS_OWNER {self.uds_owner!r}: a name, or namespace:name")
        if self.tls_cert is not None and not self.tcp:
            raise ValueError("JOBGATE_TLS_CERT applies to TCP: not with JOBGATE_TCP=false")
        return self

    # -- psik_api-compatible jobs API ------------------------------------------------------
    psik_prefix: str = "/psik/v1"
    """Where the psik_api routes are served (psik_api itself uses ``/v1``, which jobgate
    serves TES 1.0 on)."""
    psik_backends: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {"default": ""}
    )
    """psik backend names → jobgate backends (``default=local,frontier=slurm``), first
    one first; an empty value is jobgate's default backend."""
    psik_shell: str = Field(default="/usr/bin/env rc", min_length=1)
    """The interpreter of psik scripts that do not start with ``#!`` (psik's ``rc_path``,
    whose default this is)."""

    @field_validator("psik_prefix")
    @classmethod
    def _check_psik_prefix(cls, value: str) -> str:
        value = value.rstrip("/")
        if not value.startswith("/") or "//" in value:
            raise ValueError(f"expected an absolute URL path like /psik/v1, got {value!r}")
        return value

    @field_validator("psik_backends", mode="before")
    @classmethod
    def _split_psik_backends(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        out: dict[str, str] = {}
        for item in (p.strip() for p in value.split(",")):
            if not item:
                continue
            name, sep, target = item.partition("=")
            if not name.strip():
                raise ValueError(f"expected NAME=BACKEND entries, got {item!r}")
            out[name.strip()] = target.strip() if sep else ""
        return out

    # -- job lifecycle: retries, per-state timeouts, heartbeats ------------------------------
    max_retries: int = Field(default=3, ge=0)
    """Most automatic retries one job may ask for (native ``retry.count``, TES
    ``backend_parameters.retries``); more is a 400."""
    default_retries: int = Field(default=0, ge=0)
    """Retries of a job that asks for none (at most ``max_retries``)."""
    default_retry_on: Annotated[tuple[str, ...], NoDecode] = (
        "PREEMPTED",
        "STALLED",
        "SYSTEM_ERROR",
    )
    """What is retried when a job names no causes (comma-separated; EXECUTOR_ERROR too)."""
    retry_backoff: float = Field(default=10.0, ge=0)
    """Seconds before a job's first retry when it names none; doubled for each further one."""
    queued_timeout: float = Field(default=0.0, ge=0)
    """Default most seconds a job waits QUEUED (each time it is queued); 0: none."""
    initializing_timeout: float = Field(default=0.0, ge=0)
    """Default most seconds a job stages in (INITIALIZING); 0: none."""
    running_timeout: float = Field(default=0.0, ge=0)
    """Default walltime in seconds (RUNNING); 0: none. Batch backends get it as their time
    limit (Slurm ``--time``, Grid Engine ``h_rt``) plus a minute's grace."""
    max_queued_timeout: float = Field(default=0.0, ge=0)
    """Largest ``queued`` timeout a job may ask for; 0: any."""
    max_initializing_timeout: float = Field(default=0.0, ge=0)
    """Largest ``initializing`` timeout a job may ask for; 0: any."""
    max_running_timeout: float = Field(default=0.0, ge=0)
    """Largest walltime a job may ask for; 0: any."""
    heartbeat_timeout: float = Field(default=0.0, ge=0)
    """Seconds without a heartbeat after which a RUNNING job of any job is stalled (0: only
    jobs that ask, with ``heartbeat_timeout``)."""
    stalled_fail_after: float = Field(default=0.0, ge=0)
    """Seconds a stalled job (not retried) may stay stalled before it is SYSTEM_ERROR; 0:
    it keeps running until it ends or a timeout fires."""
    heartbeat_flush_interval: float = Field(default=1.0, gt=0)
    """Seconds between writes of the heartbeats received (they are batched in memory)."""
    public_url: str = ""
    """The gateway's URL as batch nodes reach it (``JOBGATE_JOB_URL`` of batch jobs);
    empty: ``http://<host>:<port>``."""

    @field_validator("default_retry_on", mode="before")
    @classmethod
    def _split_retry_on(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip().upper() for p in value.split(",") if p.strip())
        return value


# -- groups ------------------------------------------------------------------------------


class _Group(BaseModel):
    """A frozen view of some flat settings. A field takes the flat field of its own name,
    or of the name :attr:`flat_names` gives it; derived values are passed to :meth:`of`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    flat_names: ClassVar[dict[str, str]] = {}
    derived: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def flat_fields(cls) -> set[str]:
        """The flat settings this group shows."""
        return {cls.flat_names.get(f, f) for f in cls.model_fields if f not in cls.derived}

    @classmethod
    def of(cls, settings: Settings, **derived: Any) -> Self:
        values = {
            f: getattr(settings, cls.flat_names.get(f, f))
            for f in cls.model_fields
            if f not in cls.derived
        }
        return cls.model_validate({**values, **derived})


class ServerSettings(_Group):
    """The HTTP front end: where it listens, connection and body limits, service-info."""

    host: str
    port: int
    max_connections: int
    http_header_timeout: float
    http_keep_alive_timeout: int
    max_body_bytes: int
    max_yaml_body_bytes: int
    sse_heartbeat: float
    service_id: str
    service_name: str
    organization_name: str
    organization_url: str


class StoreSettings(_Group):
    """The data directory and the database."""

    derived = ("url",)

    data_dir: Path
    database_url: str
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL"]
    url: str
    """The database URL in use (``database_url``, else SQLite under ``data_dir``)."""


class DispatchSettings(_Group):
    """The dispatcher: polling, restarts, submit retries, task directories and logs."""

    derived = ("jobs_dir", "logs_dir")

    poll_interval: float
    max_attempts: int
    lease_seconds: float
    submit_patience: float
    submit_retry_max_delay: float
    log_tail_bytes: int
    keep_task_dirs: bool
    jobs_dir: Path
    logs_dir: Path


class JobsSettings(_Group):
    """What one submission may hold and become: inline content, sweeps, files, sandboxes."""

    derived = ("uploads_dir", "sandboxes_dir")

    max_content_bytes: int
    parametric_cap: int
    max_reschedules: int
    upload_max_bytes: int
    sandbox_max_bytes: int
    sandbox_extract_max_bytes: int
    sandbox_extract_max_files: int
    uploads_dir: Path
    sandboxes_dir: Path


class StagingSettings(_Group):
    """Moving inputs and outputs: allowed places, stores, transfers and their retries."""

    flat_names: ClassVar[dict[str, str]] = {
        "allowed_hosts": "staging_allowed_hosts",
        "http_put_prefixes": "staging_http_put_prefixes",
        "parallel": "staging_parallel",
        "attempts": "staging_attempts",
        "backoff": "staging_backoff",
        "backoff_max": "staging_backoff_max",
        "chunk_bytes": "staging_chunk_bytes",
        "max_task_bytes": "staging_max_task_bytes",
    }

    allowed_dirs: tuple[Path, ...]
    allowed_hosts: tuple[str, ...]
    http_put_prefixes: tuple[str, ...]
    http_timeout: float
    s3_endpoint_url: str
    ftp_username: str
    ftp_password: SecretStr | None
    parallel: int
    attempts: int
    backoff: float
    backoff_max: float
    chunk_bytes: int
    max_task_bytes: int


class AuthSettings(_Group):
    """Who may call: credential modes, OIDC, groups, secrets, per-caller rate limits."""

    flat_names: ClassVar[dict[str, str]] = {
        "modes": "auth",
        "none_any_host": "auth_none_any_host",
    }

    modes: tuple[AuthMode, ...]
    none_any_host: bool
    oidc_issuers: tuple[str, ...]
    oidc_audience: str
    oidc_user_claim: str
    oidc_groups_claim: str
    oidc_algorithms: tuple[str, ...]
    oidc_jwks_min_refresh: float
    oidc_jwks_max_age: float
    oidc_leeway: float
    submit_groups: tuple[str, ...]
    admin_groups: tuple[str, ...]
    share_groups: tuple[str, ...]
    legacy_owner_namespace: str | None
    basic_users_file: Path | None
    secret_key: SecretStr | None
    credential_backends: tuple[str, ...]
    submit_rate: float
    submit_burst: int
    dashboard_oidc_client_id: str | None
    dashboard_oidc_client_secret: SecretStr | None
    dashboard_oidc_issuer: str | None
    dashboard_oidc_scopes: str


class WebhookSettings(_Group):
    """Webhook delivery: signing key, retries, timeouts, SSRF exemptions."""

    flat_names: ClassVar[dict[str, str]] = {
        "secret": "webhook_secret",
        "max_attempts": "webhook_max_attempts",
        "backoff": "webhook_backoff",
        "backoff_max": "webhook_backoff_max",
        "timeout": "webhook_timeout",
        "allowed_hosts": "webhook_allowed_hosts",
    }

    secret: SecretStr | None
    max_attempts: int
    backoff: float
    backoff_max: float
    timeout: float
    allowed_hosts: tuple[str, ...]


class RuntimeSettings(_Group):
    """How executors run on this machine (and on batch nodes): runtime, slots, limits,
    task uids, container images and engines."""

    flat_names: ClassVar[dict[str, str]] = {"name": "runtime"}

    name: Runtime
    slots: int
    task_max_pids: int
    task_uid_base: int
    task_uid_count: int
    image_map: dict[str, str]
    image_dir: Path | None
    pull_timeout: float
    executor_network: bool
    container_user: str
    podman_runtime: str
    container_ulimits: tuple[str, ...]
    host_mounts: tuple[HostMount, ...]
    task_user: str


class BackendSettings(_Group):
    """Which backends run jobs: the default, the config file, SRCNet nodes, and the flat
    options of a one-cluster Slurm or Grid Engine site."""

    flat_names: ClassVar[dict[str, str]] = {"default": "backend"}

    default: str
    config_file: Path | None
    src_nodes: dict[str, str]
    slurm_shared_dir: Path | None
    slurm_partition: str | None
    slurm_time: str | None
    slurm_submit_rate: float
    slurm_submit_burst: int
    slurm_array_window: float
    slurm_submit_patience: float
    slurm_python: str | None
    slurm_max_array: int
    gridengine_shared_dir: Path | None
    gridengine_queue: str | None
    gridengine_project: str | None
    gridengine_time: str | None
    gridengine_pe: str
    gridengine_memory_resource: str
    gridengine_submit_rate: float
    gridengine_submit_burst: int
    gridengine_array_window: float
    gridengine_python: str | None
    gridengine_max_array: int


class MetricsSettings(_Group):
    """Who reads ``/metrics``, and how often jobs are counted for it."""

    flat_names: ClassVar[dict[str, str]] = {
        "access": "metrics_access",
        "token": "metrics_token",
        "jobs_interval": "metrics_jobs_interval",
    }

    access: Literal["loopback", "token", "open"]
    token: SecretStr | None
    jobs_interval: float


class TransportSettings(_Group):
    """How clients reach the server besides ``host``:``port``: TLS, client certificates,
    the UNIX socket."""

    tcp: bool
    tls_cert: Path | None
    tls_key: Path | None
    tls_client_ca: Path | None
    tls_crl: Path | None
    x509_admin_dns: tuple[str, ...]
    x509_subjects_file: Path | None
    uds: Path | None
    uds_owner: str | None
    uds_scope: Literal["read", "submit", "admin"]


class DialectSettings(_Group):
    """The other communities' front doors over the same engine: DiracX and psik_api."""

    diracx_max_jobs: int
    diracx_sandbox_url_seconds: int
    psik_prefix: str
    psik_backends: dict[str, str]
    psik_shell: str


class LifecycleSettings(_Group):
    """Job lifecycle policies: retries, per-state timeouts, heartbeats and stalls."""

    max_retries: int
    default_retries: int
    default_retry_on: tuple[str, ...]
    retry_backoff: float
    queued_timeout: float
    initializing_timeout: float
    running_timeout: float
    max_queued_timeout: float
    max_initializing_timeout: float
    max_running_timeout: float
    heartbeat_timeout: float
    stalled_fail_after: float
    heartbeat_flush_interval: float
    public_url: str


GROUPS: dict[str, type[_Group]] = {
    "server": ServerSettings,
    "store": StoreSettings,
    "dispatch": DispatchSettings,
    "jobs": JobsSettings,
    "staging": StagingSettings,
    "auth_settings": AuthSettings,
    "webhooks": WebhookSettings,
    "runtimes": RuntimeSettings,
    "backends": BackendSettings,
    "metrics": MetricsSettings,
    "transports": TransportSettings,
    "dialects": DialectSettings,
    "lifecycle": LifecycleSettings,
}
"""Property name on :class:`Settings` → its group model."""
