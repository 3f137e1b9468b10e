"""A real single-node Slurm cluster in a temporary directory (munged, slurmctld, slurmd).

Used by the Slurm tests' session fixture and by ``bench/slurm_bench.py``. Follows the
verified recipe in the design notes (ENVIRONMENT.md): the config is written to a temp dir
and ``SLURM_CONF`` points at it; daemons use free ports so nothing else is disturbed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET_DIR = Path("/run/munge")


def unavailable() -> str | None:
    """Why a cluster cannot be started here, or None."""
    missing = [c for c in ("slurmctld", "slurmd", "sbatch", "munged") if not shutil.which(c)]
    if missing:
        return (
            f"Slurm is not installed ({', '.join(missing)} missing; `make system-deps` "
            "installs slurm-wlm and munge when run as root)"
        )
    if os.geteuid() != 0:
        return "the test cluster's slurmd must run as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_mib() -> int:
    return int(psutil.virtual_memory().total // 1024**2)


class SlurmCluster:
    """Start with :meth:`start`, stop with :meth:`stop`; ``env`` selects it for clients."""

    def __init__(self, base: Path, *, cpus: int | None = None) -> None:
        self.base = base
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or max(8, os.cpu_count() or 1)
        self.conf = base / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._munged: subprocess.Popen[bytes] | None = None
        self._started_munged = False

    def write_config(self) -> None:
        (self.base / "state").mkdir(parents=True, exist_ok=True)
        (self.base / "spool").mkdir(parents=True, exist_ok=True)
        b = self.base
        mem = max(1024, _memory_mib() - 1024)
        # More CPUs than the machine has (config_overrides): trivial test jobs mostly wait,
        # and a 2-core machine would otherwise run only two at a time.
        self.conf.write_text(
            f"""ClusterName=jgtest
SlurmctldHost={self.host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool
SlurmctldPidFile={b}/slurmctld.pid
SlurmdPidFile={b}/slurmd.pid
SlurmctldLogFile={b}/slurmctld.log
SlurmdLogFile={b}/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
KillWait=5
MinJobAge=5
MessageTimeout=5
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName={self.host} CPUs={self.cpus} RealMemory={mem} TmpDisk=100000 State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
PartitionName=tiny Nodes={self.host} MaxTime=INFINITE State=UP
"""
        )

    # -- munge ---------------------------------------------------------------------------

    def _munge_works(self) -> bool:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            enc = subprocess.run(["munge", "-n"], capture_output=True, timeout=5)
            if enc.returncode == 0:
                dec = subprocess.run(["unmunge"], input=enc.stdout, capture_output=True, timeout=5)
                return dec.returncode == 0
        return False

    def _start_munge(self) -> None:
        if self._munge_works():
            return
        if not MUNGE_KEY.exists():
            subprocess.run(["mungekey", "-c"], check=True, capture_output=True)
            shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
        subprocess.run(["munged", "--force"], check=True, capture_output=True)
        self._started_munged = True
        deadline = time.monotonic() + 10
        while not self._munge_works():
            if time.monotonic() > deadline:
                raise RuntimeError("munged did not start")
            time.sleep(0.1)

    # -- daemons -------------------------------------------------------------------------

    def start(self) -> SlurmCluster:
        self.write_config()
        self._start_munge()
        self.start_controller()
        subprocess.run(["slurmd", "-f", str(self.conf)], check=True, env=self.env)
        self.wait_idle()
        return self

    def start_controller(self) -> None:
        subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, env=self.env)

    def stop_controller(self) -> None:
        self._stop_pidfile(self.base / "slurmctld.pid")

    def restart_controller(self) -> None:
        self.stop_controller()
        self.start_controller()
        self.wait_idle(states=("idle", "mix", "alloc", "allocated", "mixed"))

    def wait_idle(self, timeout: float = 60, states: tuple[str, ...] = ("idle",)) -> None:
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            res = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env
            )
            out = res.stdout + res.stderr
            if res.returncode == 0 and any(s in res.stdout.split() for s in states):
                return
            time.sleep(0.2)
        raise RuntimeError(f"Slurm node never became {states}: {out}\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            with contextlib.suppress(OSError):
                parts.append(f"--- {name}\n" + (self.base / name).read_text()[-3000:])
        return "\n".join(parts)

    def _stop_pidfile(self, pidfile: Path, timeout: float = 20) -> None:
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            with contextlib.suppress(psutil.Error):
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "-u", "root"], env=self.env, capture_output=True)
        self._stop_pidfile(self.base / "slurmd.pid")
        self._stop_pidfile(self.base / "slurmctld.pid")
        if self._started_munged:
            with contextlib.suppress(OSError, ValueError):
                pid = int(Path("/run/munge/munged.pid").read_text().strip())
                os.kill(pid, signal.SIGTERM)
