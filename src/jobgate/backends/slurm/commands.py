"""Running Slurm's client commands without blocking the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# A controller under load may answer slowly; past this we call the attempt failed.
COMMAND_TIMEOUT = 60.0
_KEEP = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "MUNGE_SOCKET"})
# Set inside a Slurm job: a gateway that itself runs in an allocation must not pass them on.
_SLURM_JOB_VARS = frozenset(
    {"SLURM_JOB_ID", "SLURM_JOBID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME"}
)


@dataclass(frozen=True, slots=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


class SlurmCommands:
    """sbatch/squeue/scancel of one cluster: ``slurm_conf`` (or ``$SLURM_CONF``) picks it."""

    def __init__(self, slurm_conf: str | None = None, bin_dir: str | None = None) -> None:
        # sbatch hands its environment to the job: give it a minimal one, never the
        # gateway's (settings, credentials for staging, ...). Cheaper than --export=NONE,
        # which makes slurmd run a login shell per job to rebuild the user's environment.
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k in _KEEP or (k.startswith("SLURM_") and k not in _SLURM_JOB_VARS)
        }
        self.env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        if slurm_conf:
            self.env["SLURM_CONF"] = slurm_conf
        self.bin_dir = bin_dir

    @property
    def slurm_conf(self) -> str | None:
        return self.env.get("SLURM_CONF")

    def _exe(self, name: str) -> str:
        return os.path.join(self.bin_dir, name) if self.bin_dir else name

    async def run(
        self,
        name: str,
        args: Sequence[str],
        *,
        stdin: str | None = None,
        limit: float = COMMAND_TIMEOUT,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        """Run ``name args`` for at most ``limit`` seconds. A missing executable or a
        timeout comes back as a failed Result (returncode 127 or 124) with the reason in
        stderr, never as an exception."""
        try:
            proc = await asyncio.create_subprocess_exec(
                self._exe(name),
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**self.env, **(env or {})},
                cwd=cwd,
            )
        except OSError as exc:
            return Result(127, "", f"error: cannot run {name}: {exc}")
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), limit
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return Result(124, "", f"error: {name} timed out after {limit:g}s (Socket timed out)")
        return Result(
            proc.returncode or 0, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        )
