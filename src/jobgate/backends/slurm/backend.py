"""The Slurm backend: ``sbatch`` a generated script, poll ``squeue`` in batches, ``scancel``.

Everything a batch scheduler needs besides its commands (task files, arrays, never
submitting twice, reattach) is the batch base's (``backends/batch/scheduler.py``); this
module runs Slurm's commands and reads their answers (``parse.py``, ``states.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
from jobgate.backends.slurm import parse, script
from jobgate.backends.slurm.states import lookup
from jobgate.domain.models import Job

log = logging.getLogger(__name__)

MAX_ARRAY = 1000  # Slurm's default MaxArraySize is 1001
# Set inside a Slurm job: a gateway that itself runs in an allocation must not pass them on.
_SLURM_JOB_VARS = frozenset(
    {"SLURM_JOB_ID", "SLURM_JOBID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME"}
)


@dataclass(frozen=True, slots=True)
class SlurmConfig(BatchConfig):
    """Options of one Slurm backend (from the settings or a config file)."""

    slurm_conf: str | None = None
    defaults: script.Defaults = field(default_factory=script.Defaults)


def slurm_commands(slurm_conf: str | None = None, bin_dir: str | None = None) -> Commands:
    """sbatch/squeue/scancel of one cluster: ``slurm_conf`` (or ``$SLURM_CONF``) picks it.

    Cheaper than ``--export=NONE``, which makes slurmd run a login shell per job to
    rebuild the user's environment."""
    return Commands(
        keep=frozenset({"MUNGE_SOCKET"}),
        prefixes=("SLURM_",),
        drop=_SLURM_JOB_VARS,
        set_env={"SLURM_CONF": slurm_conf} if slurm_conf else None,
        bin_dir=bin_dir,
    )


class SlurmBackend(BatchBackend):
    """Hands jobs to a Slurm cluster; Slurm queues them (``slots`` is None)."""

    kind = "slurm"
    scheduler = "Slurm"
    array_limit = MAX_ARRAY
    parameter_keys = script.PARAMETER_KEYS
    min_poll_interval = 0.5  # one squeue per half second at most, however busy
    queue_key = "slurm_partition"
    state_key = "slurm_state"

    def __init__(self, config: SlurmConfig, *, name: str = "slurm") -> None:
        super().__init__(config, name=name)
        self.slurm = config
        self.commands = slurm_commands(config.slurm_conf)

    def check_parameters(self, params: Mapping[str, str]) -> dict[str, str]:
        return script.check_parameters(params)

    def native_metadata(self, native_id: str) -> dict[str, str]:
        return {"slurm_job_id": native_id}

    def describe(self) -> dict[str, str]:
        facts = {"backend": self.name, "type": "slurm", "runtime": self.config.runtime}
        conf = self.commands.env.get("SLURM_CONF")
        if conf:
            facts["slurm_conf"] = conf
        return facts

    # -- the scheduler's side ------------------------------------------------------------

    def job_options(self, job: Job) -> tuple[str, ...]:
        return script.options(job, self.slurm.defaults)

    async def submit_script(self, sub: Submission) -> str:
        if sub.array_size is None:
            extra = [f"--output={sub.workdir / SINGLE_OUTPUT}"]
        else:
            assert sub.array_dir is not None
            extra = [f"--array=0-{sub.array_size - 1}", f"--output={sub.array_dir / '%a.out'}"]
        argv = [
            "--parsable",
            *sub.options,
            *extra,
            f"--job-name={sub.name}",
            f"--chdir={sub.workdir}",
            str(sub.script),
            *sub.script_args,
        ]
        res = await self.commands.run("sbatch", argv)
        if res.returncode == 0:
            try:
                return parse.sbatch_id(res.stdout)
            except parse.ParseError as exc:
                raise SchedulerError(str(exc)) from exc
        raise _error(res.stderr)

    def element_id(self, array_id: str, index: int) -> str:
        return f"{array_id}_{index}"

    def element_output(self, array_dir: Path, index: int) -> Path:
        return array_dir / f"{index}.out"

    async def query(self, native_ids: Sequence[str]) -> dict[str, QueueEntry] | None:
        args = ["-h", "-r", "-t", "all", "-j", ",".join(native_ids), "-o", parse.STATUS_FORMAT]
        res = await self.commands.run("squeue", args)
        if res.returncode != 0:
            if parse.unknown_ids(res.stderr):
                return {}  # none of them exists any more
            log.warning("squeue failed: %s", parse.error_text(res.stderr))
            return None
        return parse.squeue_status(res.stdout)

    async def ids_by_name(self, names: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for i in range(0, len(names), self.query_chunk):
            chunk = names[i : i + self.query_chunk]
            res = await self.commands.run(
                "squeue",
                ["-h", "-r", "-t", "all", "--name", ",".join(chunk), "-o", parse.NAMES_FORMAT],
            )
            if res.returncode != 0:
                raise _error(res.stderr)
            for nid, _state, name in parse.squeue_names(res.stdout):
                out.setdefault(name, []).append(nid)
        return out

    async def all_ids(self) -> list[str]:
        res = await self.commands.run("squeue", ["-h", "-r", "-o", parse.NAMES_FORMAT])
        if res.returncode != 0:
            raise RuntimeError(f"squeue failed: {parse.error_text(res.stderr)}")
        rows = parse.squeue_names(res.stdout)
        return [nid for nid, _, name in rows if name.startswith(NAME_PREFIX)]

    async def kill(self, native_id: str) -> None:
        res = await self.commands.run("scancel", [native_id])
        if res.returncode != 0:
            log.warning("scancel %s failed: %s", native_id, parse.error_text(res.stderr))

    def lookup(self, state: str) -> StateRow:
        return lookup(state)


def _error(stderr: str) -> SchedulerError:
    return SchedulerError(
        parse.error_text(stderr),
        transient=parse.is_transient(stderr),
        ambiguous=parse.is_ambiguous(stderr),
        rate_limited=parse.is_rate_limited(stderr),
    )
