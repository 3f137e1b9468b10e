"""A real single-node Grid Engine cluster from Debian's packages (sge_qmaster, sge_execd).

Used by the Grid Engine tests' session fixture. Follows the recipe in the design notes
(ENVIRONMENT.md, "Grid Engine from Debian"). Unlike Slurm, Grid Engine cannot be moved to
a temporary directory: the packages configure one cell (``$SGE_ROOT/$SGE_CELL``, spool
under /var/spool/gridengine) and the daemons listen on the fixed ports 6444/6445. So the
cluster is the machine's, and this module makes it usable idempotently:

- daemons already running and answering are reused; a qmaster that does not answer is
  stopped and started again;
- the configuration (root may submit, one queue ``jobgate.q`` with ``SLOTS`` slots and the
  parallel environment ``smp``, a scheduler that runs every second) is written only where
  it differs, so a second test session changes nothing under a first;
- sessions register in :data:`STATE_DIR`; the last one to stop stops the daemons, and only
  if a session started them (a cluster someone started by hand is left running).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

SGE_ROOT = Path("/var/lib/gridengine")
SGE_CELL = "default"
SBIN = Path("/usr/sbin")
SPOOL = Path("/var/spool/gridengine")
QUEUE = "jobgate.q"
PE = "smp"
STATE_DIR = Path("/run/jobgate-gridengine")
CLIENTS = ("qsub", "qstat", "qdel", "qconf", "qmod")

# Global configuration lines this cluster needs. min_uid/min_gid 0: the tests submit as
# root, which Grid Engine refuses by default (min_uid 1000). A short load report time lets
# a restarted qmaster see the exec host again within seconds, not 40 s. Accounting is
# flushed every second (default 15 s): the backend asks qacct why a job ended without a
# result file.
GLOBAL_CONF = {
    "min_uid": "0",
    "min_gid": "0",
    "load_report_time": "00:00:05",
    "reporting_params": "accounting=true reporting=false flush_time=00:00:01 joblog=false "
    "sharelog=00:00:00",
}
# Scheduler: a pass every second and one right after each submit and job end (default:
# every 15 s), and no load adjustments, which would hold back jobs on a busy 2-core machine.
SCHED_CONF = {
    "schedule_interval": "0:0:1",
    "flush_submit_sec": "1",
    "flush_finish_sec": "1",
    "job_load_adjustments": "NONE",
    "load_adjustment_decay_time": "0:0:0",
}

PE_TEXT = f"""pe_name            {PE}
slots              9999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
"""


def unavailable() -> str | None:
    """Why a cluster cannot be started here, or None."""
    missing = [c for c in CLIENTS if not shutil.which(c)]
    missing += [d for d in ("sge_qmaster", "sge_execd") if not (SBIN / d).exists()]
    if missing:
        return (
            f"Grid Engine is not installed ({', '.join(missing)} missing; `make system-deps` "
            "installs gridengine-master, gridengine-exec and gridengine-client when run as root)"
        )
    if os.geteuid() != 0:
        return "the test Grid Engine cluster's daemons must be started as root"
    if not (SGE_ROOT / SGE_CELL / "common" / "bootstrap").exists():
        return (
            f"Grid Engine has no cell {SGE_ROOT}/{SGE_CELL} (the packages were installed "
            "without debconf answers: `dpkg-reconfigure gridengine-common`)"
        )
    return None


def _queue_text(host: str, slots: int) -> str:
    # qtype BATCH: no interactive jobs; load_thresholds NONE: a loaded 2-core machine must
    # not put the queue into alarm state (the tests overcommit on purpose).
    names = ("rt", "cpu", "fsize", "data", "stack", "core", "rss", "vmem")
    limits = "".join(f"{p}_{k:<19} INFINITY\n" for k in names for p in ("s", "h"))
    return f"""qname                 {QUEUE}
hostlist              {host}
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH
ckpt_list             NONE
pe_list               {PE}
rerun                 FALSE
slots                 {slots}
tmpdir                /tmp
shell                 /bin/sh
prolog                NONE
epilog                NONE
shell_start_mode      posix_compliant
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
{limits}"""


def _conf_lines(text: str) -> dict[str, str]:
    """``key value`` lines of a qconf listing (continuation lines folded in)."""
    out: dict[str, str] = {}
    last = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        if raw[:1].isspace() and last is not None:
            out[last] += " " + line.strip()
            continue
        key, _, value = line.partition(" ")
        out[key] = value.strip().rstrip("\\").strip()
        last = key
    return out


def _with(text: str, changes: dict[str, str]) -> str:
    """``text`` (a qconf listing) with the values of ``changes`` replaced."""
    out: list[str] = []
    seen = set()
    replacing = False
    for line in text.splitlines():
        if line[:1].isspace():
            if not replacing:  # a continuation of a value we keep
                out.append(line)
            continue
        key = line.split(" ", 1)[0]
        replacing = key in changes
        if replacing:
            out.append(f"{key} {changes[key]}")
            seen.add(key)
        else:
            out.append(line)
    out += [f"{k} {v}" for k, v in changes.items() if k not in seen]
    return "\n".join(out) + "\n"


def _daemon(program: Path, env: dict[str, str]) -> None:
    """Start a daemon that forks into the background. Nothing of the test process's own
    stdio is handed on (under pytest-xdist that is the worker's channel); the daemons log
    into their spool. The start waits for the qmaster, slow on a busy machine."""
    subprocess.run(
        [str(program)],
        env=env,
        check=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _pid_of(path: Path) -> int | None:
    """The live process recorded in ``path`` (a daemon's pid file), or None."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    with contextlib.suppress(psutil.Error):
        if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            return pid
    return None


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                time.sleep(0.1)
                continue
        return True
    return False


def _kill(pid: int, timeout: float = 20) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5)


class GridEngineCluster:
    """Start with :meth:`start`, stop with :meth:`stop`; ``env`` selects it for clients."""

    def __init__(self, *, slots: int | None = None) -> None:
        self.host = socket.gethostname().split(".")[0]
        # More slots than the machine has cores, like the Slurm test cluster: trivial
        # test jobs mostly wait, and a 2-core machine would otherwise run two at a time.
        self.slots = slots or max(8, os.cpu_count() or 1)
        self.common = SGE_ROOT / SGE_CELL / "common"
        # The daemons and clients get a minimal environment: a job inherits the exec
        # daemon's environment, so whatever it was started with would leak into every job.
        self.env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "SGE_ROOT": str(SGE_ROOT),
            "SGE_CELL": SGE_CELL,
            "LANG": "C.UTF-8",
            "HOME": "/root",
            "USER": "root",
            "LOGNAME": "root",
        }
        self.queue = QUEUE
        self.pe = PE
        self._registered = False

    # -- commands ------------------------------------------------------------------------

    def run(
        self, *args: str, check: bool = True, timeout: float = 30, editor: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A client command (qconf, qstat, ...) against this cluster."""
        env = dict(self.env)
        if editor is not None:
            env["EDITOR"] = editor
        res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {(res.stderr or res.stdout).strip()}")
        return res

    def responding(self) -> bool:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.run("qconf", "-sh", check=False, timeout=10).returncode == 0
        return False

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> GridEngineCluster:
        # Under the lock: two sessions starting at once must not both start a qmaster.
        with self._lock():
            for stale in STATE_DIR.glob("[0-9]*"):  # sessions that died without stopping
                if not psutil.pid_exists(int(stale.name)):
                    stale.unlink(missing_ok=True)
            (STATE_DIR / str(os.getpid())).touch()
            self._registered = True
            self._write_host_aliases()
            for attempt in range(3):
                self.start_qmaster()
                try:
                    self.configure()
                    break
                except RuntimeError:
                    # A qmaster that was shutting down (``qconf -km`` just before) may
                    # answer once more and then go: start one again.
                    if attempt == 2:
                        raise
                    time.sleep(1)
            self.start_execd()
        self.wait_ready()
        return self

    def stop(self) -> None:
        """Leave the session; the last session stops the daemons a session started."""
        if not self._registered:
            return
        self._registered = False
        with self._lock():
            (STATE_DIR / str(os.getpid())).unlink(missing_ok=True)
            others = [p for p in STATE_DIR.glob("[0-9]*") if psutil.pid_exists(int(p.name))]
            owned = STATE_DIR / "owned"
            if others or not owned.exists():
                return
            # Jobs first (they would run on after the exec daemon), then the daemons.
            self.run("qdel", "-f", "-u", "root", check=False)
            self.stop_execd()
            self.stop_qmaster()
            owned.unlink(missing_ok=True)

    def start_qmaster(self, timeout: float = 30) -> None:
        if self.responding():
            return
        pid = _pid_of(SPOOL / "qmaster" / "qmaster.pid")
        if pid is not None:
            # Still starting or shutting down, or hung: give it a moment, then replace it.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and psutil.pid_exists(pid):
                if self.responding():
                    return
                time.sleep(0.5)
            _kill(pid)
        _daemon(SBIN / "sge_qmaster", self.env)
        (STATE_DIR / "owned").touch()
        deadline = time.monotonic() + timeout
        while not self.responding():
            if time.monotonic() > deadline:
                raise RuntimeError(f"sge_qmaster does not answer\n{self.logs()}")
            time.sleep(0.2)

    def stop_qmaster(self) -> None:
        """``qconf -km`` only asks: the qmaster answers requests for a while longer, so
        this waits until the process is gone."""
        pid = _pid_of(SPOOL / "qmaster" / "qmaster.pid")
        self.run("qconf", "-km", check=False)
        if pid is not None and not _wait_gone(pid, 20):
            _kill(pid)

    def restart_qmaster(self) -> None:
        self.stop_qmaster()
        self.start_qmaster()
        self.wait_ready()

    def _execd_pid(self) -> int | None:
        # The exec daemon's spool directory is named as it resolves itself (here
        # "localhost", through host_aliases), so look at every one.
        for path in (SPOOL / "execd").glob("*/execd.pid"):
            pid = _pid_of(path)
            if pid is not None:
                return pid
        return None

    def start_execd(self) -> None:
        if self._execd_pid() is not None:
            return
        try:
            _daemon(SBIN / "sge_execd", self.env)
        except subprocess.CalledProcessError:
            # Another session's execd came up meanwhile (the daemon refuses a second one).
            time.sleep(2)
            if self._execd_pid() is None:
                raise
        (STATE_DIR / "owned").touch()

    def stop_execd(self) -> None:
        pid = self._execd_pid()
        self.run("qconf", "-ke", self.host, check=False)
        if pid is not None and not _wait_gone(pid, 20):
            _kill(pid)

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the queue instance is up: no state letters (u: exec host not heard from,
        d: disabled, E: error) in ``qstat -f``."""
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            res = self.run("qstat", "-f", "-q", self.queue, check=False)
            out = res.stdout + res.stderr
            for line in res.stdout.splitlines():
                fields = line.split()
                if fields and fields[0] == f"{self.queue}@{self.host}" and len(fields) == 5:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"queue {self.queue} never became usable: {out}\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for path in [SPOOL / "qmaster" / "messages", *(SPOOL / "execd").glob("*/messages")]:
            with contextlib.suppress(OSError):
                parts.append(f"--- {path}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    # -- configuration -------------------------------------------------------------------

    def _write_host_aliases(self) -> None:
        # /etc/hosts lists 127.0.0.1 as "localhost" first, so the qmaster resolves every
        # client to "localhost" and refuses it as not being the host it claims to be.
        path = self.common / "host_aliases"
        text = f"{self.host} localhost\n"
        with contextlib.suppress(OSError):
            if path.read_text() == text:
                return
        path.write_text(text)

    def configure(self) -> None:
        """Bring the cell to what the tests need, changing only what differs."""
        with tempfile.TemporaryDirectory(prefix="jg-ge-") as tmp:
            d = Path(tmp)
            # qconf -m* runs $EDITOR on a temporary file; ours copies the wanted text in.
            editor = d / "editor"
            editor.write_text(f'#!/bin/sh\ncat {d / "wanted"} > "$1"\n')
            editor.chmod(0o700)

            current = self.run("qconf", "-sconf").stdout
            if any(_conf_lines(current).get(k) != v for k, v in GLOBAL_CONF.items()):
                (d / "wanted").write_text(_with(current, GLOBAL_CONF))
                self.run("qconf", "-mconf", editor=str(editor))

            current = self.run("qconf", "-ssconf").stdout
            if any(_conf_lines(current).get(k) != v for k, v in SCHED_CONF.items()):
                (d / "sched").write_text(_with(current, SCHED_CONF))
                self.run("qconf", "-Msconf", str(d / "sched"))

            if self.host not in self.run("qconf", "-ss", check=False).stdout.split():
                self.run("qconf", "-as", self.host)
            if self.host not in self.run("qconf", "-sel", check=False).stdout.split():
                (d / "host").write_text(
                    f"hostname {self.host}\nload_scaling NONE\ncomplex_values NONE\n"
                    "user_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\n"
                    "usage_scaling NONE\nreport_variables NONE\n"
                )
                self.run("qconf", "-Ae", str(d / "host"))

            self._ensure(d, "pe", PE, PE_TEXT, ("-spl", "-sp", "-Ap", "-Mp"))
            self._ensure(
                d, "queue", QUEUE, _queue_text(self.host, self.slots), ("-sql", "-sq", "-Aq", "-Mq")
            )
        # A queue a test (or an earlier session) disabled or put into error state.
        self.run("qmod", "-e", self.queue, check=False)
        self.run("qmod", "-c", self.queue, check=False)

    def _ensure(
        self, d: Path, kind: str, name: str, text: str, flags: tuple[str, str, str, str]
    ) -> None:
        list_flag, show_flag, add_flag, modify_flag = flags
        path = d / kind
        path.write_text(text)
        if name not in self.run("qconf", list_flag, check=False).stdout.split():
            self.run("qconf", add_flag, str(path))
            return
        have = _conf_lines(self.run("qconf", show_flag, name).stdout)
        if any(have.get(k) != v for k, v in _conf_lines(text).items()):
            self.run("qconf", modify_flag, str(path))

    # -- sessions ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with open(STATE_DIR / "lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield
