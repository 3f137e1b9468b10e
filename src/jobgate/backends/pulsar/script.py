"""The shell script a Pulsar server runs for one TES task, and the files it leaves.

Pulsar runs one command line per job, so the executor sequence becomes a POSIX ``sh``
script. The script runs in the Pulsar job's working directory, which it lays out as a
jobgate task directory (:class:`~jobgate.runner.taskdir.TaskDir`): ``root/`` holds the
task's filesystem (container paths map beneath it, as on the process runtime, with
``JOBGATE_TASK_ROOT`` pointing at it), ``<n>.stdout``/``<n>.stderr`` capture executor
``n``'s output unless it names a file of its own.

Executors run in order, each in a clean environment (``env -i``: the Pulsar server's own
variables never leak into a task) with its ``env``, ``workdir`` and stdin/stdout/stderr
files. A non-zero exit stops the sequence unless the executor has ``ignore_error``. With
a container command (``docker``, ``podman``, ``singularity``, ``apptainer`` on the
Pulsar host) each executor runs in its image instead, the paths the task names bound
from ``root/`` at their container paths and ``root/tmp`` at ``/tmp``.

Inputs Pulsar fetched itself (remote staging) arrive in the job's inputs directory; the
script moves each to its place under ``root/`` before the first executor.

``RESULT`` gets one line per executor that ran (``index<TAB>exit code<TAB>start<TAB>end
<TAB>stdout file<TAB>stderr file``, files relative to the task directory), then, when the
sequence ends, ``end<TAB>COMPLETE`` or ``end<TAB>EXECUTOR_ERROR``; the script then packs
``OUT_TAR``: the result, the captured
logs and the task's output paths (for a wildcard output, the fixed directory above its
first wildcard), ready for the gateway to unpack into its own task directory.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from jobgate.domain.models import WILDCARDS, Executor, Job
from jobgate.runner.taskdir import container_paths
from jobgate.runtimes.base import DEFAULT_PATH

ContainerKind = Literal["docker", "podman", "singularity", "apptainer"]
CONTAINER_KINDS: tuple[ContainerKind, ...] = ("docker", "podman", "singularity", "apptainer")

SCRIPT = "jobgate.sh"
RESULT = "jobgate.result"
OUT_TAR = "jobgate-out.tar"
IN_TAR = "jobgate-in.tar"
ALIVE = "jobgate.alive"


def rel(container_path: str) -> str:
    """``/data/x`` → ``root/data/x`` (relative to the task directory's base)."""
    return "root/" + container_path.lstrip("/")


def output_roots(job: Job) -> list[str]:
    """The container paths whose files come back: each output's path, or for a wildcard
    output the directory above its first wildcard; and executors' own stdout/stderr."""
    roots: set[str] = set()
    for out in job.outputs or []:
        if out.has_wildcards:
            fixed: list[str] = []
            for part in out.path.split("/"):
                if any(c in WILDCARDS for c in part):
                    break
                fixed.append(part)
            roots.add("/".join(fixed) or "/")
        else:
            roots.add(out.path)
    for ex in job.executors:
        roots.update(p for p in (ex.stdout, ex.stderr) if p)
    return sorted(roots)


@dataclass(frozen=True, slots=True)
class ExecutorResult:
    """One executor's line of ``RESULT``."""

    index: int
    exit_code: int
    start: str
    end: str
    stdout: str
    stderr: str


def parse_result(text: str) -> tuple[list[ExecutorResult], str | None]:
    """The executor lines of ``RESULT`` and the final state it names (None: the script did
    not finish). Malformed lines are skipped: a killed script may leave half a line."""
    out = []
    state = None
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0] == "end" and parts[1] in ("COMPLETE", "EXECUTOR_ERROR"):
            state = parts[1]
            continue
        if len(parts) != 6:
            continue
        try:
            out.append(ExecutorResult(int(parts[0]), int(parts[1]), *parts[2:]))
        except ValueError:
            continue
    return out, state


def _q(s: str) -> str:
    return shlex.quote(s)


@dataclass(frozen=True, slots=True)
class Container:
    """How the Pulsar host runs images: its runtime's kind and the command to call it."""

    kind: ContainerKind
    command: str = ""
    """The runtime's executable on the Pulsar host (empty: ``kind`` on its PATH)."""

    def argv(self, ex: Executor, paths: Sequence[str]) -> str:
        """The shell words that run ``ex`` in its image, ``paths`` bound from ``$R``."""
        cmd = _q(self.command or self.kind)
        workdir = _q(ex.workdir or "/")
        env = {"HOME": "/tmp", "TMPDIR": "/tmp", "JOBGATE_TASK_ROOT": "", **(ex.env or {})}
        argv = " ".join(_q(a) for a in ex.command)
        if self.kind in ("docker", "podman"):
            image = ex.image.removeprefix("docker://")
            binds = ['-v "$R/tmp":/tmp', *(f'-v "$R"{_q(p)}:{_q(p)}' for p in paths)]
            envs = [f"-e {_q(f'{k}={v}')}" for k, v in env.items()]
            return (
                f'{cmd} run --rm -i --name "$ctr" {" ".join(binds)} '
                f"{' '.join(envs)} "
                f"-w {workdir} {_q(image)} {argv}"
            )
        binds = ['-B "$R/tmp":/tmp', *(f'-B "$R"{_q(p)}:{_q(p)}' for p in paths)]
        envs = [f"--env {_q(f'{k}={v}')}" for k, v in env.items()]
        image = ex.image if "://" in ex.image else f"docker://{ex.image}"
        return (
            f"{cmd} exec --containall --cleanenv {' '.join(binds)} {' '.join(envs)} "
            f"--pwd {workdir} {_q(image)} {argv}"
        )


def _executor(
    index: int, ex: Executor, container: Container | None = None, paths: Sequence[str] = ()
) -> list[str]:
    workdir = '"$R"/' + _q((ex.workdir or "/").lstrip("/") or ".")
    env = [
        f"PATH={DEFAULT_PATH}",
        'HOME="$R/tmp"',
        'TMPDIR="$R/tmp"',
        'JOBGATE_TASK_ROOT="$R"',
        *(_q(f"{k}={v}") for k, v in (ex.env or {}).items()),
    ]
    argv = " ".join(_q(a) for a in ex.command)
    stdin = '"$R"/' + _q(ex.stdin.lstrip("/")) if ex.stdin else "/dev/null"
    stdout = '"$R"/' + _q(ex.stdout.lstrip("/")) if ex.stdout else f'"$B/{index}.stdout"'
    stderr = '"$R"/' + _q(ex.stderr.lstrip("/")) if ex.stderr else f'"$B/{index}.stderr"'
    out_rel = rel(ex.stdout) if ex.stdout else f"{index}.stdout"
    err_rel = rel(ex.stderr) if ex.stderr else f"{index}.stderr"
    lines = [f"# executor {index}", f"mkdir -p {workdir}"]
    for custom in (ex.stdout, ex.stderr):
        if custom:
            parent = custom.lstrip("/").rsplit("/", 1)[0] if "/" in custom.lstrip("/") else ""
            if parent:
                lines.append(f'mkdir -p "$R"/{_q(parent)}')
    if container is not None:
        # Every bound path must exist on the host, or the runtime makes a directory of it
        # (or refuses); an input is a file that is there already.
        lines += [f'[ -e "$R"{_q(p)} ] || mkdir -p "$R"{_q(p)}' for p in paths]
        run = f"(exec {container.argv(ex, paths)})"
        # Killing the docker client leaves its container running: the trap stops it by name.
        lines.append(f'ctr="jobgate-$$-{index}"')
    else:
        run = f"(cd {workdir} && exec env -i {' '.join(env)} {argv})"
    lines += [
        "s=$(now)",
        # A background child and `wait`: a TERM to the script (a cancel) reaches it at once.
        f"{run} <{stdin} >{stdout} 2>{stderr} &",
        "child=$!",
        'wait "$child"',
        "c=$?",
        "child=",
        f'printf "%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n" {index} "$c" "$s" "$(now)" '
        f'{_q(out_rel)} {_q(err_rel)} >> "$B/{RESULT}"',
    ]
    if not ex.ignore_error:
        lines.append('[ "$c" -eq 0 ] || finish EXECUTOR_ERROR')
    return lines


def render(
    job: Job,
    heartbeat: float = 15.0,
    *,
    fetched: Sequence[tuple[str, str]] = (),
    inputs_dir: str = "",
    container: Container | None = None,
) -> str:
    """The script for ``job`` (run with ``sh`` in the Pulsar job's working directory).
    While it runs it writes the time into ``ALIVE`` every ``heartbeat`` seconds: Pulsar
    says ``running`` for ever of a job whose processes died with its server, and the
    gateway tells the two apart by this file. ``fetched``: (file name in ``inputs_dir``,
    container path) of the inputs Pulsar fetched itself; ``container``: run executors
    with images in them (None: on the Pulsar host)."""
    keep = [f"{i}.{s}" for i in range(len(job.executors)) for s in ("stdout", "stderr")]
    stop_container = ""
    if container is not None and container.kind in ("docker", "podman"):
        runtime = _q(container.command or container.kind)
        stop_container = f'[ -n "$ctr" ] && {runtime} kill "$ctr" >/dev/null 2>&1; '

    roots = output_roots(job)
    lines = [
        "#!/bin/sh",
        "# Written by jobgate: the executors of one TES task, in order.",
        "B=$(pwd)",
        'R="$B/root"',
        "child=",
        "ctr=",
        "hb=",
        "cw=",
        "now() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; }",
        "finish() {",
        '  kill "$hb" "$cw" 2>/dev/null',
        '  cd "$B" || exit 1',
        f'  printf "end\\t%s\\n" "$1" >> {RESULT}',
        f"  set -- {RESULT}",
        f'  for f in {" ".join(keep)}; do [ -e "$f" ] && set -- "$@" "$f"; done',
    ]
    if roots:
        quoted = " ".join(_q(rel(p)) for p in roots)
        lines.append(f'  for f in {quoted}; do [ -e "$f" ] && set -- "$@" "$f"; done')
    lines += [
        f'  tar -cf {OUT_TAR}.part "$@" && mv {OUT_TAR}.part {OUT_TAR}',
        "  exit 0",
        "}",
        'trap \'kill "$hb" "$cw" 2>/dev/null; [ -n "$child" ] && kill -KILL "$child" 2>/dev/null; '
        f"{stop_container}exit 143' TERM INT",
        # Pulsar's queued manager checks for a cancel, then starts the job: a kill in
        # between records the cancel but finds no process. Its record is the file
        # `cancelled` in the job directory, so the script honours it itself.
        'C="$B/../cancelled"',
        '[ -e "$C" ] && exit 143',
        '(while :; do [ -e "$C" ] && { kill -TERM $$; exit 0; }; sleep 0.5; done) </dev/null '
        ">/dev/null 2>&1 &",
        "cw=$!",
        f': > "$B/{RESULT}"',
        'mkdir -p "$R/tmp"',
        f'(while :; do date +%s.%N > "$B/{ALIVE}"; sleep {heartbeat:g}; done) </dev/null '
        ">/dev/null 2>&1 &",
        "hb=$!",
    ]
    for name, path in fetched:
        parent = path.lstrip("/").rsplit("/", 1)[0] if "/" in path.lstrip("/") else ""
        if parent:
            lines.append(f'mkdir -p "$R"/{_q(parent)}')
        # A move that fails leaves no end line: the task is SYSTEM_ERROR, not run without it.
        lines.append(f'mv -f {_q(inputs_dir + "/" + name)} "$R"/{_q(path.lstrip("/"))} || exit 1')
    # root/tmp is bound at /tmp already; a path the task names under it is inside.
    paths = [p for p in container_paths(job) if p != "/tmp" and not p.startswith("/tmp/")]
    for index, ex in enumerate(job.executors):
        lines += _executor(index, ex, container, paths if container is not None else ())
    lines.append("finish COMPLETE")
    return "\n".join(lines) + "\n"


def command_line(working_dir: str, inputs_dir: str) -> str:
    """What Pulsar runs: unpack the task's files into the working directory, then the
    script (not ``exec``: Pulsar's job script records the exit code after it)."""
    return f"cd {_q(working_dir)} && tar -xf {_q(inputs_dir + '/' + IN_TAR)} && /bin/sh {SCRIPT}"


def tail(data: bytes, limit: int) -> str:
    """The last ``limit`` bytes of a log, as text."""
    return data[-limit:].decode("utf-8", errors="replace") if limit else ""
