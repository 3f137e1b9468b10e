"""Plain processes: NOT isolated. For machines without bubblewrap or containers.

Executors run directly on the host as the service's user. Container paths are not remapped:
the task's files live under the task root (``$JOBGATE_TASK_ROOT``), the working directory is
the task root joined with ``workdir``, so commands must use relative paths to reach them.
"""

from __future__ import annotations

from typing import ClassVar

from jobgate.runtimes.base import DEFAULT_PATH, ExecSpec, HostCommand, Runtime


class ProcessRuntime(Runtime):
    name: ClassVar[str] = "process"
    isolated: ClassVar[bool] = False

    def command(self, spec: ExecSpec) -> HostCommand:
        cwd = spec.root / (spec.workdir or "/").lstrip("/")
        env = {
            "PATH": DEFAULT_PATH,
            "HOME": str(spec.root / "tmp"),
            "TMPDIR": str(spec.root / "tmp"),
            "JOBGATE_TASK_ROOT": str(spec.root),
            **spec.env,
        }
        return HostCommand(argv=list(spec.argv), cwd=cwd, env=env)
