"""The Grid Engine backend: ``qsub`` a generated script, poll ``qstat -xml``, ``qdel``.

Everything a batch scheduler needs besides its commands (task files, arrays, never
submitting twice, reattach) is the batch base's (``backends/batch/scheduler.py``); this
module runs Grid Engine's commands and reads their answers (``parse.py``, ``states.py``,
qsub options in ``script.py``).

Grid Engine specifics:

- Native ids are ``J`` for a job and ``J.t`` for task ``t`` of array job ``J`` (task ids
  1..N: element ``i`` of the base's arrays is task ``i + 1``).
- One ``qstat -xml -u USER`` lists every job of the gateway's user, so a poll is one call
  however many jobs are asked about. Jobs in error state ``E`` get their reason from one
  more ``qstat -j`` for those only.
- Finished jobs vanish from qstat. The node runner's result file says how they ended;
  one that vanished without it (``qdel`` and ``h_rt`` kill with SIGKILL, so the runner
  cannot write one) is explained by ``qacct``, where accounting is on.
"""

from __future__ import annotations

import getpass
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jobgate.backends.base import BackendStatus
from jobgate.backends.batch.commands import Commands
from jobgate.backends.batch.scheduler import (
    NAME_PREFIX,
    SINGLE_OUTPUT,
    BatchBackend,
    BatchConfig,
    QueueEntry,
    SchedulerError,
    StateRow,
    Submission,
)
from jobgate.backends.gridengine import parse, script, states
from jobgate.domain.models import Job
from jobgate.domain.states import State

log = logging.getLogger(__name__)

MAX_ARRAY = 75000  # Grid Engine's default max_aj_tasks
# Which cell the clients talk to. Other SGE_* variables describe a job the gateway itself
# may run in (SGE_TASK_ID, SGE_O_*, SGE_STDOUT_PATH...): not passed on.
_CELL_VARS = frozenset(
    {"SGE_ROOT", "SGE_CELL", "SGE_QMASTER_PORT", "SGE_EXECD_PORT", "SGE_CLUSTER_NAME"}
)
# qacct sees a job only after the qmaster flushed its accounting (reporting_params
# flush_time, 15 s by default): a job gone without a result waits this long for it.
ACCOUNTING_GRACE = 30.0


@dataclass(frozen=True, slots=True)
class GridEngineConfig(BatchConfig):
    """Options of one Grid Engine backend (from the settings or a config file)."""

    sge_root: str | None = None
    """``$SGE_ROOT`` of the cell (None: the gateway's environment's)."""
    sge_cell: str | None = None
    """``$SGE_CELL`` (None: the environment's, else ``default``)."""
    defaults: script.Defaults = field(default_factory=script.Defaults)
    user: str | None = None
    """Whose jobs qstat lists (None: the gateway's user, who submits them)."""


def gridengine_commands(
    sge_root: str | None = None, sge_cell: str | None = None, bin_dir: str | None = None
) -> Commands:
    """qsub/qstat/qdel/qacct of one cell, with a minimal environment (qsub hands parts of
    its environment to the job, and all of it where a default request file says -V)."""
    env = {}
    if sge_root:
        env["SGE_ROOT"] = sge_root
    if sge_cell:
        env["SGE_CELL"] = sge_cell
    return Commands(keep=_CELL_VARS, set_env=env or None, bin_dir=bin_dir)


class GridEngineBackend(BatchBackend):
    """Hands jobs to a Grid Engine cell; Grid Engine queues them (``slots`` is None)."""

    kind = "gridengine"
    scheduler = "Grid Engine"
    array_limit = MAX_ARRAY
    query_chunk = 10**9  # one qstat lists every job: never split a query
    parameter_keys = script.PARAMETER_KEYS
    min_poll_interval = 0.5
    queue_key = "gridengine_queue"
    state_key = "gridengine_state"

    def __init__(self, config: GridEngineConfig, *, name: str = "gridengine") -> None:
        # Paths go into qsub's -o and -wd, which read some characters specially.
        script.check_path(str(config.shared_dir))
        super().__init__(config, name=name)
        self.ge = config
        self.commands = gridengine_commands(config.sge_root, config.sge_cell)
        self.user = config.user or getpass.getuser()
        self._gone: dict[str, float] = {}  # ids qstat stopped listing → when first missed
        self._deleted: set[str] = set()  # ids this backend asked qdel to remove

    def check_parameters(self, params: Mapping[str, str]) -> dict[str, str]:
        return script.check_parameters(params)

    def native_metadata(self, native_id: str) -> dict[str, str]:
        return {"gridengine_job_id": native_id}

    def describe(self) -> dict[str, str]:
        facts = {"backend": self.name, "type": "gridengine", "runtime": self.config.runtime}
        for key in ("SGE_ROOT", "SGE_CELL"):
            if self.commands.env.get(key):
                facts[key.lower()] = self.commands.env[key]
        return facts

    # -- the scheduler's side ------------------------------------------------------------

    def job_options(self, job: Job) -> tuple[str, ...]:
        return script.options(job, self.ge.defaults)

    async def submit_script(self, sub: Submission) -> str:
        try:
            if sub.array_size is None:
                place = script.placement(
                    sub.name, str(sub.workdir / SINGLE_OUTPUT), str(sub.workdir)
                )
            else:
                assert sub.array_dir is not None
                place = script.placement(
                    sub.name,
                    f"{sub.array_dir}/$TASK_ID.out",
                    str(sub.workdir),
                    tasks=sub.array_size,
                )
        except ValueError as exc:
            raise SchedulerError(str(exc)) from exc
        argv = [*script.COMMON, *sub.options, *place, str(sub.script), *sub.script_args]
        res = await self.commands.run("qsub", argv, cwd=str(sub.workdir))
        if res.returncode == 0:
            try:
                return parse.qsub_terse(res.stdout).job_number
            except parse.ParseError as exc:
                raise SchedulerError(str(exc)) from exc
        raise _error(res.stderr)

    def element_id(self, array_id: str, index: int) -> str:
        return f"{array_id}.{index + 1}"

    def element_output(self, array_dir: Path, index: int) -> Path:
        return array_dir / f"{index + 1}.out"

    async def _qstat(self) -> dict[str, parse.QueueEntry]:
        res = await self.commands.run("qstat", ["-xml", "-u", self.user])
        if res.returncode != 0:
            raise _error(res.stderr)
        try:
            return parse.qstat_xml(res.stdout)
        except parse.ParseError as exc:
            raise SchedulerError(str(exc), transient=True) from exc

    async def query(self, native_ids: Sequence[str]) -> dict[str, QueueEntry] | None:
        try:
            listed = await self._qstat()
        except SchedulerError as exc:
            log.warning("qstat failed: %s", exc.message)
            return None
        out: dict[str, QueueEntry] = {}
        errors: list[str] = []
        for nid in native_ids:
            entry = listed.get(nid)
            if entry is None:
                self._gone.setdefault(nid, time.monotonic())
                continue
            self._gone.pop(nid, None)
            out[nid] = QueueEntry(nid, entry.state, "")
            if "E" in entry.state:
                errors.append(entry.job_number)
        if errors:
            reasons = await self._error_reasons(sorted(set(errors)))
            for nid, found in out.items():
                why = reasons.get(listed[nid].job_number)
                if why and "E" in found.state:
                    out[nid] = QueueEntry(nid, found.state, why)
        return out

    async def _error_reasons(self, job_numbers: Sequence[str]) -> dict[str, str]:
        """Why these jobs are in error state (``qstat -j``), newest reason each."""
        res = await self.commands.run("qstat", ["-j", ",".join(job_numbers)])
        details = parse.job_details(res.stdout)
        return {n: d.error_reasons[-1] for n, d in details.items() if d.error_reasons}

    async def ids_by_name(self, names: Sequence[str]) -> dict[str, list[str]]:
        wanted = set(names)
        out: dict[str, list[str]] = {}
        for nid, entry in (await self._qstat()).items():
            if entry.name in wanted:
                out.setdefault(entry.name, []).append(nid)
        return out

    async def all_ids(self) -> list[str]:
        try:
            listed = await self._qstat()
        except SchedulerError as exc:
            raise RuntimeError(f"qstat failed: {exc.message}") from exc
        return [nid for nid, e in listed.items() if e.name.startswith(NAME_PREFIX)]

    async def kill(self, native_id: str) -> None:
        self._deleted.add(native_id)
        res = await self.commands.run("qdel", [native_id])
        if res.returncode != 0:
            log.warning("qdel %s failed: %s", native_id, parse.error_text(res.stderr))

    def lookup(self, state: str) -> StateRow:
        row = states.lookup(state)
        return StateRow(
            row.state, row.why, trust_result=row.trust_result, queued=row.active is State.QUEUED
        )

    # -- jobs gone from qstat without a result -------------------------------------------

    async def poll(self, native_ids: Sequence[str]) -> dict[str, BackendStatus]:
        out = await super().poll(native_ids)
        gone = [
            nid
            for nid, status in out.items()
            if nid in self._gone and status.state == State.SYSTEM_ERROR
        ]
        if gone:
            await self._explain(gone, out)
        return out

    async def _explain(self, gone: list[str], out: dict[str, BackendStatus]) -> None:
        """Replace "Grid Engine no longer knows the job" by what happened to it: our own
        qdel (CANCELED), or qacct's record; a job qacct does not have yet is reported as
        still running for up to :data:`ACCOUNTING_GRACE` seconds."""
        for nid in gone:
            status = out[nid]
            if nid in self._deleted:
                why = f"the task was canceled in Grid Engine (qdel {nid})"
                status.state = State.CANCELED
                status.detail = why
                status.system_logs.append(why)
                continue
            record = await self._accounting(nid)
            if record is None:
                if time.monotonic() - self._gone.get(nid, 0.0) < ACCOUNTING_GRACE:
                    last = self._last.get(nid)
                    out[nid] = BackendStatus(
                        last.state if last is not None else State.RUNNING,
                        metadata=status.metadata,
                        detail="ended in Grid Engine; waiting for its accounting record",
                    )
                continue
            state, why = states.accounting(record.failed, record.failed_reason, record.exit_status)
            status.state = state
            status.detail = why
            status.system_logs.append(why)

    async def _accounting(self, nid: str) -> parse.AccountingRecord | None:
        number, task = parse.native_id(nid)
        args = ["-j", number] if task is None else ["-j", number, "-t", str(task)]
        res = await self.commands.run("qacct", args)
        if res.returncode != 0:
            return None
        try:
            records = parse.qacct_records(res.stdout)
        except parse.ParseError:
            return None
        # A job number is reused after the qmaster's counter wraps: the newest record.
        matching = [r for r in records if r.native_id == nid]
        return matching[-1] if matching else None

    def forget(self, native_id: str) -> None:
        super().forget(native_id)
        self._gone.pop(native_id, None)
        self._deleted.discard(native_id)


def _error(stderr: str) -> SchedulerError:
    return SchedulerError(
        parse.error_text(stderr),
        transient=parse.is_transient(stderr),
        ambiguous=parse.is_ambiguous(stderr),
    )
