"""Fake Slurm client commands (``sbatch``, ``squeue``, ``scancel``) for tests of the batch
base and the Slurm backend's command handling that need neither a cluster nor root.

:class:`FakeSlurm` writes three small executables into ``ROOT/bin``; they share one JSON
state file (``ROOT/state.json``, guarded by a lock file), which a test edits to script
them: the next ``sbatch`` times out after creating the job or without, the controller
is down for a while, a job moves from PENDING to RUNNING, Slurm purges it... The
commands answer in Slurm's own words and formats (``sbatch --parsable``, ``squeue -o``
with the fields the caller asks for, Slurm's error lines) and record every call, so a
test can count submissions and lookups. :meth:`FakeSlurm.run` plays slurmd: it runs a
job's batch script (the real node runner) with the environment Slurm gives it.

The commands import this module (stdlib only at the top, so they start fast).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CONTROLLER_DOWN = "Unable to contact slurm controller (connect failure)"
SOCKET_TIMEOUT = "Socket timed out on send/recv operation"
RATE_TOO_HIGH = "Submission rate too high, suggest using job arrays"
INVALID_PARTITION = "Invalid partition name specified"
INVALID_JOB_ID = "Invalid job id specified"

# States squeue lists without ``-t all`` (the rest only until Slurm purges the job).
ACTIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "REQUEUED"}
)
COMMANDS = ("sbatch", "squeue", "scancel")
_REPO = Path(__file__).resolve().parents[2]

State = dict[str, Any]


def _initial_state() -> State:
    return {
        "next_id": 1000,
        "jobs": {},  # native id ("12", "12_3") → {"name", "state", "reason", ...}
        "partitions": ["debug"],
        "default_partition": "debug",
        "down": None,  # a message every command fails with...
        "down_until": None,  # ...until this time.time() (None: until up())
        "sbatch_plan": [],  # what the next sbatch calls do instead of submitting plainly
        "calls": [],  # every invocation: {"cmd", "argv", "ok"}
    }


@contextlib.contextmanager
def locked(path: Path) -> Iterator[State]:
    """The state in ``path``, held under an exclusive lock and written back afterwards."""
    with open(f"{path}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state: State = json.loads(path.read_text(encoding="utf-8"))
        yield state
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, path)


# -- the commands' side ---------------------------------------------------------------------


def command_main(state_file: str) -> int:
    """Entry point of the fake executables: the command is the name it was called by."""
    name = os.path.basename(sys.argv[0])
    with locked(Path(state_file)) as state:
        out, err, rc = _HANDLERS[name](state, sys.argv[1:])
        state["calls"].append({"cmd": name, "argv": sys.argv[1:], "ok": rc == 0})
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


def _down(state: State) -> str | None:
    message: str | None = state["down"]
    until = state["down_until"]
    if message and (until is None or time.time() < until):
        return message
    return None


def _options(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """sbatch's ``--key=value`` options before the script, and the script with its args."""
    opts: dict[str, str] = {}
    for i, arg in enumerate(args):
        if not arg.startswith("-"):
            return opts, args[i:]
        key, _, value = arg.lstrip("-").partition("=")
        opts[key] = value
    return opts, []


Answer = tuple[str, str, int]


def _sbatch(state: State, args: list[str]) -> Answer:
    def failed(message: str) -> Answer:
        return "", f"sbatch: error: Batch job submission failed: {message}\n", 1

    down = _down(state)
    if down:
        return failed(down)
    plan: dict[str, Any] | None = state["sbatch_plan"].pop(0) if state["sbatch_plan"] else None
    opts, script = _options(args)
    partition = opts.get("partition", state["default_partition"])
    if plan is None and partition not in state["partitions"]:
        return failed(INVALID_PARTITION)
    if plan is not None and not plan["create"]:
        return failed(plan["message"])
    job_id = str(state["next_id"])
    state["next_id"] += 1
    entry = {
        "name": opts.get("job-name", script[0] if script else "sbatch"),
        "state": "PENDING",
        "reason": "Priority",
        "partition": partition,
        "script": script,
        "chdir": opts.get("chdir", os.getcwd()),
        "output": opts.get("output", "slurm-%j.out"),
        "array_id": None,
        "index": None,
        "hidden": plan["hidden"] if plan else 0,
    }
    if "array" in opts:
        lo, _, hi = opts["array"].partition("-")
        for i in range(int(lo), int(hi or lo) + 1):
            state["jobs"][f"{job_id}_{i}"] = {**entry, "array_id": job_id, "index": i}
    else:
        state["jobs"][job_id] = entry
    if plan is not None:  # created, but the reply is lost
        return failed(plan["message"])
    return (f"{job_id}\n" if "parsable" in opts else f"Submitted batch job {job_id}\n"), "", 0


def _flags(args: list[str]) -> dict[str, str]:
    """squeue's flags: ``-h``/``-r`` stand alone, the others take a value."""
    flags: dict[str, str] = {}
    it = iter(args)
    for arg in it:
        if arg in ("-h", "-r", "--noheader", "--array"):
            flags[arg] = ""
        elif "=" in arg:
            key, _, value = arg.partition("=")
            flags[key] = value
        else:
            flags[arg] = next(it, "")
    return flags


def _field(entry: dict[str, Any], nid: str, letter: str) -> str:
    values: dict[str, str] = {
        "i": nid,
        "A": entry["array_id"] or nid,
        "T": entry["state"],
        "r": entry["reason"],
        "j": entry["name"],
        "P": entry["partition"],
    }
    return values.get(letter, "?")


def _line(fmt: str, entry: dict[str, Any], nid: str) -> str:
    """One squeue line: ``fmt``'s fields (``%i``, ``%.18i``...) filled in for a job."""
    return re.sub(r"%\.?\d*([a-zA-Z])", lambda m: _field(entry, nid, m[1]), fmt)


def _squeue(state: State, args: list[str]) -> Answer:
    down = _down(state)
    if down:
        return "", f"slurm_load_jobs error: {down}\n", 1
    flags = _flags(args)
    wanted_ids = [i for i in flags.get("-j", flags.get("--jobs", "")).split(",") if i]
    names = [n for n in flags.get("--name", flags.get("-n", "")).split(",") if n]
    states = flags.get("-t", flags.get("--states", ""))
    jobs: dict[str, dict[str, Any]] = state["jobs"]

    def asked(nid: str, entry: dict[str, Any]) -> bool:
        return not wanted_ids or nid in wanted_ids or entry["array_id"] in wanted_ids

    # One id asked for and unknown: squeue loads that job alone, and Slurm says so.
    if len(wanted_ids) == 1 and not any(asked(n, e) for n, e in jobs.items()):
        return "", f"slurm_load_jobs error: {INVALID_JOB_ID}\n", 1
    fmt = flags.get("-o", flags.get("--format", "%i %T %j"))
    lines = []
    for nid, entry in jobs.items():
        if not asked(nid, entry) or (names and entry["name"] not in names):
            continue
        if states.lower() != "all":
            shown = {s.upper() for s in states.split(",") if s} or ACTIVE_STATES
            if entry["state"] not in shown:
                continue
        if entry["hidden"] > 0:  # the controller has not made it visible yet
            entry["hidden"] -= 1
            continue
        lines.append(_line(fmt, entry, nid))
    header = "" if "-h" in flags or "--noheader" in flags else "JOBID STATE NAME\n"
    return header + "".join(f"{line}\n" for line in lines), "", 0


def _scancel(state: State, args: list[str]) -> Answer:
    down = _down(state)
    if down:
        return "", f"scancel: error: {down}\n", 1
    errors = ""
    for target in (a for a in args if not a.startswith("-")):
        hit = [n for n, e in state["jobs"].items() if target in (n, e["array_id"])]
        if not hit:
            errors += f"scancel: error: Kill job error on job id {target}: {INVALID_JOB_ID}\n"
        for nid in hit:
            if state["jobs"][nid]["state"] in ACTIVE_STATES:
                state["jobs"][nid].update(state="CANCELLED", reason="None")
    return "", errors, 1 if errors else 0


_HANDLERS = {"sbatch": _sbatch, "squeue": _squeue, "scancel": _scancel}


# -- the test's side --------------------------------------------------------------------------


class FakeSlurm:
    """A scriptable fake Slurm controller behind fake client commands in ``root/bin``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.state_file = root / "state.json"
        self.state_file.write_text(json.dumps(_initial_state()), encoding="utf-8")
        # -S: no site-packages to scan, the commands need only the stdlib and this file.
        program = (
            f"#!{sys.executable} -S\n"
            "import sys\n"
            f"sys.path.insert(0, {str(_REPO)!r})\n"
            "from tests.batch.fakesched import command_main\n"
            f"sys.exit(command_main({str(self.state_file)!r}))\n"
        )
        for name in COMMANDS:
            path = self.bin / name
            path.write_text(program, encoding="utf-8")
            path.chmod(0o755)

    @property
    def bin_dir(self) -> str:
        return str(self.bin)

    @contextlib.contextmanager
    def edit(self) -> Iterator[State]:
        """The state, to change in place (the commands wait meanwhile)."""
        with locked(self.state_file) as state:
            yield state

    def state(self) -> State:
        with self.edit() as state:
            return state

    # -- scripting --------------------------------------------------------------------

    def lose_next_reply(
        self, message: str = SOCKET_TIMEOUT, *, created: bool, hidden: int = 0
    ) -> None:
        """The next sbatch fails with ``message``, having created the job or not; a job it
        created is missing from the first ``hidden`` squeue answers that would list it."""
        with self.edit() as state:
            state["sbatch_plan"].append({"message": message, "create": created, "hidden": hidden})

    def refuse_next(self, message: str) -> None:
        """The next sbatch is refused with ``message`` (nothing is created)."""
        self.lose_next_reply(message, created=False)

    def down(self, message: str = CONTROLLER_DOWN, seconds: float | None = None) -> None:
        """Every command fails with ``message``, for ``seconds`` (None: until :meth:`up`)."""
        with self.edit() as state:
            state["down"] = message
            state["down_until"] = None if seconds is None else time.time() + seconds

    def up(self) -> None:
        with self.edit() as state:
            state["down"] = None

    def set(self, nid: str, slurm_state: str, reason: str = "None") -> None:
        """What squeue says of job ``nid`` from now on."""
        with self.edit() as state:
            state["jobs"][nid].update(state=slurm_state, reason=reason)

    def add(self, nid: str, name: str, slurm_state: str = "RUNNING") -> None:
        """A job the controller knows (as if an earlier gateway had submitted it)."""
        array_id, _, index = nid.partition("_")
        with self.edit() as state:
            state["jobs"][nid] = {
                "name": name,
                "state": slurm_state,
                "reason": "None",
                "partition": "debug",
                "script": [],
                "chdir": str(self.root),
                "output": "/dev/null",
                "array_id": array_id if index else None,
                "index": int(index) if index else None,
                "hidden": 0,
            }

    def purge(self, nid: str) -> None:
        """Slurm forgets job ``nid`` (MinJobAge passed)."""
        with self.edit() as state:
            del state["jobs"][nid]

    # -- reading ----------------------------------------------------------------------

    def jobs(self) -> dict[str, dict[str, Any]]:
        jobs: dict[str, dict[str, Any]] = self.state()["jobs"]
        return jobs

    def ids_named(self, name: str) -> list[str]:
        return [nid for nid, e in self.jobs().items() if e["name"] == name]

    def calls(self, cmd: str) -> list[list[str]]:
        """The argv of every call of ``cmd`` so far."""
        return [c["argv"] for c in self.state()["calls"] if c["cmd"] == cmd]

    def name_lookups(self) -> list[list[str]]:
        return [argv for argv in self.calls("squeue") if "--name" in argv]

    # -- slurmd ------------------------------------------------------------------------

    def run(self, nid: str) -> int:
        """Run job ``nid``'s batch script as slurmd would (RUNNING meanwhile, then
        COMPLETED or FAILED by its exit code); its exit code. Blocks: call it in a thread."""
        with self.edit() as state:
            entry = state["jobs"][nid]
            entry.update(state="RUNNING", reason="None")
        job_id = entry["array_id"] or nid
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "SLURM_JOB_ID": nid.replace("_", "") if entry["array_id"] else nid,
            "SLURM_JOB_PARTITION": entry["partition"],
        }
        if entry["array_id"]:
            env.update(SLURM_ARRAY_JOB_ID=job_id, SLURM_ARRAY_TASK_ID=str(entry["index"]))
        output = entry["output"].replace("%a", str(entry["index"])).replace("%j", job_id)
        with open(output, "ab") as out:
            rc = subprocess.run(
                ["/bin/sh", *entry["script"]],
                cwd=entry["chdir"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        self.set(nid, "COMPLETED" if rc == 0 else "FAILED")
        return rc
