"""Plain processes: NOT isolated. For machines without bubblewrap or containers.

Executors run directly on the host: as the service's user, or, given an unprivileged uid
(``ExecSpec.run_as``: a root service always gives one), as that uid through ``setpriv``
(no capabilities, no supplementary groups, ``no_new_privs``). Their host view is otherwise
unrestricted: the network, world-readable files. Container paths are not remapped:
the task's files live under the task root (``$JOBGATE_TASK_ROOT``), the working directory is
the task root joined with ``workdir``, so commands must use relative paths to reach them.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from jobgate.runtimes.argv import process_command
from jobgate.runtimes.base import ExecSpec, HostCommand, Runtime


class ProcessRuntime(Runtime):
    name: ClassVar[str] = "process"
    isolated: ClassVar[bool] = False
    runs_as_task_uid: ClassVar[bool] = True

    def command(self, spec: ExecSpec) -> HostCommand:
        argv, cwd, env = process_command(
            str(spec.root), spec.argv, env=spec.env, workdir=spec.workdir, run_as=spec.run_as
        )
        return HostCommand(argv=argv, cwd=Path(cwd), env=env)
