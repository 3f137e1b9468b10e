"""Plain processes: NOT isolated. For machines without bubblewrap or containers.

Executors run directly on the host: as the service's user, or, given an unprivileged uid
(``ExecSpec.run_as``: a root service always gives one), as that uid through ``setpriv``
(no capabilities, no supplementary groups, ``no_new_privs``). Their host view is otherwise
unrestricted: the network, world-readable files. Container paths are not remapped:
the task's files live under the task root (``$JOBGATE_TASK_ROOT``), the working directory is
the task root joined with ``workdir``, so commands must use relative paths to reach them.
"""

from __future__ import annotations

import shutil
from typing import ClassVar

from jobgate.runtimes.base import DEFAULT_PATH, ExecSpec, HostCommand, Runtime, UnsupportedTask


class ProcessRuntime(Runtime):
    name: ClassVar[str] = "process"
    isolated: ClassVar[bool] = False
    runs_as_task_uid: ClassVar[bool] = True

    def command(self, spec: ExecSpec) -> HostCommand:
        cwd = spec.root / (spec.workdir or "/").lstrip("/")
        env = {
            "PATH": DEFAULT_PATH,
            "HOME": str(spec.root / "tmp"),
            "TMPDIR": str(spec.root / "tmp"),
            "JOBGATE_TASK_ROOT": str(spec.root),
            **spec.env,
        }
        argv = list(spec.argv)
        if spec.run_as is not None:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise UnsupportedTask(
                    "the process runtime cannot run executors as an unprivileged uid: "
                    "setpriv (util-linux) is not installed"
                )
            uid, gid = spec.run_as
            argv = [
                setpriv,
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
                *argv,
            ]
        return HostCommand(argv=argv, cwd=cwd, env=env)
