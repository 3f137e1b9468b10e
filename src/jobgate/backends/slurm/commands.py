"""Running Slurm's client commands without blocking the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# A controller under load may answer slowly; past this we call the attempt failed.
COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


class SlurmCommands:
    """sbatch/squeue/scancel of one cluster: ``slurm_conf`` (or ``$SLURM_CONF``) picks it."""

    def __init__(self, slurm_conf: str | None = None, bin_dir: str | None = None) -> None:
        self.env = dict(os.environ)
        if slurm_conf:
            self.env["SLURM_CONF"] = slurm_conf
        # Never leak the gateway's settings (and any secrets in them) to the cluster.
        for key in [k for k in self.env if k.startswith("JOBGATE_")]:
            del self.env[key]
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
