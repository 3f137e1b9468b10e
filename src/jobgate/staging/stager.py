"""The stager the dispatcher calls: stage a task's inputs in and its outputs out."""

from __future__ import annotations

from pathlib import Path

from jobgate.config import Settings
from jobgate.domain.models import Job, OutputFileLog
from jobgate.errors import StagingError
from jobgate.runner.taskdir import PathEscape, TaskDir, in_place_inputs, in_place_outputs, misplaced
from jobgate.runtimes.hostmounts import HostMount
from jobgate.staging import inputs, outputs
from jobgate.staging.mover import Mover
from jobgate.staging.stores import StoreConfig, Stores, storage_prefixes
from jobgate.staging.tarball import ExtractLimits
from jobgate.staging.transfer import Budget, RetryPolicy


def storage(settings: Settings) -> list[str]:
    """``service-info.storage`` for these settings: also the read-write host mounts,
    where a ``file://`` input or output at its own path is shared in place."""
    out = storage_prefixes(settings.allowed_dirs, settings.staging_http_put_prefixes)
    shared = [Path(m.path).as_uri() for m in settings.host_mounts if m.writable]
    return [*[u for u in shared if u not in out], *out]


class Stager:
    """Stages one task at a time per call; the stores (HTTP client, S3 filesystem) and the
    limit on parallel transfers are shared by all tasks.

    ``uploads_dir/<job id>`` holds files uploaded into held jobs and ``sandboxes_dir/<sha>``
    the content-addressed sandboxes; without them those features are off.
    """

    def __init__(
        self,
        stores: Stores,
        *,
        parallel: int = 4,
        retry: RetryPolicy | None = None,
        max_task_bytes: int = 0,
        uploads_dir: Path | None = None,
        sandboxes_dir: Path | None = None,
        extract_limits: ExtractLimits | None = None,
        host_mounts: tuple[HostMount, ...] = (),
    ) -> None:
        """``host_mounts``: the site's host directories every task sees at their own path;
        inputs and outputs in place there are neither copied in nor out."""
        self.host_mounts = host_mounts
        self.stores = stores
        self.mover = Mover(parallel, retry or RetryPolicy())
        self.max_task_bytes = max_task_bytes
        self.uploads_dir = uploads_dir
        self.sandboxes_dir = sandboxes_dir
        self.extract_limits = extract_limits or ExtractLimits()

    @classmethod
    def from_settings(cls, settings: Settings) -> Stager:
        config = StoreConfig(
            allowed_dirs=settings.allowed_dirs,
            allowed_hosts=settings.staging_allowed_hosts,
            s3_endpoint_url=settings.s3_endpoint_url,
            ftp_username=settings.ftp_username,
            ftp_password=(
                settings.ftp_password.get_secret_value() if settings.ftp_password else ""
            ),
            http_put_prefixes=settings.staging_http_put_prefixes,
            chunk=settings.staging_chunk_bytes,
            timeout=settings.http_timeout,
        )
        return cls(
            Stores(config),
            parallel=settings.staging_parallel,
            retry=RetryPolicy(
                settings.staging_attempts, settings.staging_backoff, settings.staging_backoff_max
            ),
            max_task_bytes=settings.staging_max_task_bytes,
            uploads_dir=settings.uploads_dir,
            sandboxes_dir=settings.sandboxes_dir,
            extract_limits=ExtractLimits(
                settings.sandbox_extract_max_bytes, settings.sandbox_extract_max_files
            ),
            host_mounts=settings.host_mounts,
        )

    async def aclose(self) -> None:
        await self.stores.aclose()

    def storage(self) -> list[str]:
        """URL prefixes tasks may use (``service-info.storage``)."""
        return self.stores.storage()

    async def stage_in(
        self, job: Job, taskdir: TaskDir, skip: frozenset[str] = frozenset()
    ) -> bool:
        """Place every input at its path but those at the container paths ``skip`` (the
        backend fetches them). Returns True if it filled in an input's ``type``.

        Raises :class:`~jobgate.errors.StagingError` naming the input and the cause.
        """
        try:
            misplaced(job, self.host_mounts)
        except PathEscape as exc:
            raise StagingError(str(exc)) from exc
        return await inputs.stage_in(
            job,
            taskdir,
            stores=self.stores,
            mover=self.mover,
            budget=Budget(self.max_task_bytes),
            uploads=None if self.uploads_dir is None else self.uploads_dir / job.id,
            sandboxes_dir=self.sandboxes_dir,
            extract_limits=self.extract_limits,
            in_place=in_place_inputs(job, self.host_mounts) | skip,
        )

    async def stage_out(self, job: Job, taskdir: TaskDir) -> tuple[list[OutputFileLog], bool]:
        """Upload every output. Returns the file logs and whether a ``type`` was filled in.

        Raises :class:`~jobgate.staging.outputs.PartialStagingError` if any output failed;
        it carries the logs of the files that were uploaded.
        """
        return await outputs.stage_out(
            job,
            taskdir,
            stores=self.stores,
            mover=self.mover,
            budget=Budget(self.max_task_bytes),
            in_place=in_place_outputs(job, self.host_mounts),
        )
