"""Running a batch scheduler's client commands without blocking the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# A controller under load may answer slowly; past this we call the attempt failed.
COMMAND_TIMEOUT = 60.0
_KEEP = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"})


@dataclass(frozen=True, slots=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


class Commands:
    """A scheduler's client commands, run with a minimal environment.

    Submission commands hand their environment to the job: they get a minimal one, never
    the gateway's (settings, credentials for staging, ...). ``keep`` names more variables
    to pass on, ``prefixes`` whole families (``SLURM_``, ``SGE_``), except those in
    ``drop`` (set inside a job: a gateway that itself runs in one must not pass them on).
    """

    def __init__(
        self,
        *,
        keep: frozenset[str] = frozenset(),
        prefixes: tuple[str, ...] = (),
        drop: frozenset[str] = frozenset(),
        set_env: Mapping[str, str] | None = None,
        bin_dir: str | None = None,
    ) -> None:
        self.env = {
            k: v
            for k, v in os.environ.items()
            if (k in _KEEP or k in keep or k.startswith(prefixes)) and k not in drop
        }
        self.env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        self.env.update(set_env or {})
        self.bin_dir = bin_dir

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
            async with asyncio.timeout(limit):
                out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return Result(124, "", f"error: {name} timed out after {limit:g}s (Socket timed out)")
        except asyncio.CancelledError:
            proc.kill()  # a stopped gateway leaves no scheduler command behind
            raise
        return Result(
            proc.returncode or 0, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        )
