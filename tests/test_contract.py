"""One contract, every site: the same TES tasks behave the same on every backend and runtime.

Each test runs once per :data:`tests.sites.SITES` entry (local with bwrap, plain processes
and podman; Slurm), through the site's session server; a site that cannot run here skips
with its reason. What a runtime or a backend does beyond this (process trees, containers,
the scheduler's own queue) is tested in its own files.

Scripts ``cd "${JOBGATE_TASK_ROOT:-/}"`` (:data:`CD`) before using container paths, so that
relative paths reach the same files on the process runtime, which does not remap them.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.sites import SITES, Site
from tests.support import (
    assert_tes_shape,
    create,
    exit_codes,
    run,
    sh,
    sh_task,
    sleep_marker,
    stderrs,
    stdouts,
    system_logs,
    tes_client,
    uid,
    wait_final,
    wait_procs,
    wait_state,
)

CD = 'cd "${JOBGATE_TASK_ROOT:-/}" && '
LOG_TAIL_BYTES = 64 * 1024
"""What the test servers keep of each executor's stdout and stderr (the default)."""


@dataclass
class On:
    """A site under test: its description, server, TES client and allowed directory."""

    site: Site
    server: Server
    tes: httpx.Client
    allowed: Path

    def pwd(self) -> str:
        """A command printing the working directory as a container path."""
        return "pwd" if self.site.isolated else 'pwd | sed "s|^$JOBGATE_TASK_ROOT||"'


@pytest.fixture(params=[site.param() for site in SITES])
def on(request: pytest.FixtureRequest) -> Iterator[On]:
    """The parametrized site; its server starts with the first test that needs it."""
    site: Site = request.param
    srv: Server = request.getfixturevalue(site.fixture)
    allowed = Path(srv.env["JOBGATE_ALLOWED_DIRS"].split(",")[0])
    with tes_client(srv) as client:
        yield On(site, srv, client, allowed)


def all_stdouts(task: dict[str, Any]) -> list[str]:
    """stdout of every executor that ran, in every attempt (none for a task never run)."""
    return [e.get("stdout", "") for tl in task.get("logs", []) for e in tl["logs"]]


# -- executors -------------------------------------------------------------------------------


def test_executors_run_in_order_with_their_output(on: On) -> None:
    task = run(
        on.tes,
        {
            "volumes": ["/data"],
            "executors": [
                sh(CD + "echo one | tee data/log"),
                sh(CD + "echo two >&2; echo two >> data/log"),
                sh(CD + "cat data/log"),
            ],
        },
    )
    assert task["state"] == "COMPLETE", task
    logs = task["logs"][0]["logs"]
    assert [(e["stdout"], e["stderr"], e["exit_code"]) for e in logs] == [
        ("one\n", "", 0),
        ("", "two\n", 0),
        ("one\ntwo\n", "", 0),
    ]
    starts = [e["start_time"] for e in logs]
    assert starts == sorted(starts)


@pytest.mark.parametrize("ignore_error", [None, False])
def test_a_failing_executor_stops_the_task_with_its_exit_code_and_output(
    on: On, ignore_error: bool | None
) -> None:
    failing = sh("echo before; echo oops >&2; exit 3")
    if ignore_error is not None:
        failing["ignore_error"] = ignore_error
    executors = [sh("exit 5", ignore_error=True), sh("echo ok"), failing, sh("echo second")]
    task = run(on.tes, {"executors": executors})
    assert task["state"] == "EXECUTOR_ERROR", task
    logs = task["logs"][0]["logs"]
    assert [(e["exit_code"], e["stdout"], e["stderr"]) for e in logs] == [
        (5, "", ""),
        (0, "ok\n", ""),
        (3, "before\n", "oops\n"),
    ]  # the last executor never ran


def test_ignore_error_continues(on: On) -> None:
    task = run(
        on.tes,
        {
            "executors": [
                sh("exit 3", ignore_error=True),
                sh("echo second"),
                sh("exit 4", ignore_error=True),
            ]
        },
    )
    assert task["state"] == "COMPLETE"
    assert exit_codes(task) == [3, 0, 4]
    assert stdouts(task)[1] == "second\n"


def test_argv_is_not_a_shell_command_and_a_missing_command_is_an_executor_error(on: On) -> None:
    task = run(
        on.tes,
        {
            "executors": [
                {"image": "alpine", "command": ["echo", "$HOME", "a;b"]},
                {"image": "alpine", "command": ["no-such-command-xyz"]},
            ]
        },
    )
    # The user's mistake, not the system's: an executor error that says what went wrong.
    assert task["state"] == "EXECUTOR_ERROR", task
    assert exit_codes(task)[0] == 0 and exit_codes(task)[1] != 0
    assert stdouts(task)[0] == "$HOME a;b\n"
    assert "no-such-command-xyz" in stderrs(task)[1]


def test_the_logs_keep_the_tail_of_a_long_output(on: On) -> None:
    task = run(on.tes, sh_task("seq 1 100000; echo err-end >&2"))  # ~590 KB of stdout
    assert task["state"] == "COMPLETE", task
    out = stdouts(task)[0]
    assert 0 < len(out.encode()) <= LOG_TAIL_BYTES
    # The last lines, in order, up to the end (the first one may be cut).
    lines = out.splitlines()[1:]
    assert lines == [str(i) for i in range(int(lines[0]), 100_001)]
    assert stderrs(task) == ["err-end\n"]


def test_env_is_per_executor_and_host_env_is_not_leaked(on: On) -> None:
    script = (
        'printf "%s|%s|%s|%s" "$GREETING" "${EMPTY-unset}" '
        '"${JOBGATE_ALLOWED_DIRS-hidden}" "${JOBGATE_RUNTIME-hidden}"'
    )
    task = run(
        on.tes,
        {
            "executors": [
                sh(script, env={"GREETING": "hello world", "EMPTY": ""}),
                sh('printf %s "${GREETING-no}"'),
            ]
        },
    )
    assert task["state"] == "COMPLETE", task
    assert stdouts(task) == ["hello world||hidden|hidden", "no"]


def test_workdir(on: On) -> None:
    url = (on.allowed / uid() / "rel.txt").as_uri()
    task = run(
        on.tes,
        {
            "executors": [sh(f"{on.pwd()}; echo relative > rel.txt", workdir="/data/wd")],
            "outputs": [{"path": "/data/wd/rel.txt", "url": url}],
        },
    )
    assert task["state"] == "COMPLETE", system_logs(task)
    assert stdouts(task) == ["/data/wd\n"]
    assert Path(url.removeprefix("file://")).read_text() == "relative\n"


def test_volumes_and_tmp_are_shared_by_executors_and_private_to_the_task(on: On) -> None:
    if not on.site.isolated:
        pytest.skip("the process runtime maps no container paths and shares the host's /tmp")
    name = f"jobgate-test-{uid()}"
    task = run(
        on.tes,
        {
            "volumes": ["/vol/shared"],
            "executors": [
                sh(f"echo v > /vol/shared/x; echo t > /tmp/{name}"),
                sh(f"cat /vol/shared/x /tmp/{name}"),
            ],
        },
    )
    assert task["state"] == "COMPLETE", task
    assert stdouts(task)[1] == "v\nt\n"
    assert not (Path("/tmp") / name).exists()  # not the host's /tmp
    other = run(on.tes, {"executors": [sh(f"cat /tmp/{name}")]})
    assert other["state"] == "EXECUTOR_ERROR"  # nor another task's


def test_ram_gb_leaves_room_for_tasks_within_it(on: On) -> None:
    task = run(
        on.tes,
        {
            "resources": {"ram_gb": 0.2, "cpu_cores": 1},
            "executors": [sh('x=$(head -c 20000000 /dev/zero | tr "\\0" a); echo ok')],
        },
    )
    assert task["state"] == "COMPLETE", task
    assert stdouts(task) == ["ok\n"]


# -- inputs and outputs ----------------------------------------------------------------------


def test_inputs_outputs_workdir_env_and_stdout_file(on: On) -> None:
    out = on.allowed / f"contract-{uuid.uuid4().hex}.txt"
    task = run(
        on.tes,
        {
            "inputs": [{"path": "/data/in/a.txt", "content": "abc\n"}],
            "outputs": [{"path": "/data/out/result.txt", "url": out.as_uri()}],
            "executors": [
                sh(
                    f'cat in/a.txt; echo "$WHO"; {on.pwd()}',
                    workdir="/data",
                    env={"WHO": "contract"},
                    stdout="/data/out/result.txt",
                )
            ],
        },
    )
    assert task["state"] == "COMPLETE", task
    assert out.read_text() == "abc\ncontract\n/data\n"
    assert task["logs"][0]["outputs"][0]["path"] == "/data/out/result.txt"


def test_stdin_stdout_stderr_files(on: On) -> None:
    out = on.allowed / uid()
    task = run(
        on.tes,
        {
            "inputs": [{"path": "/data/in.txt", "content": "line one\nline two\n"}],
            "executors": [
                sh(
                    "tr a-z A-Z; echo warned >&2",
                    stdin="/data/in.txt",
                    stdout="/data/out/upper.txt",
                    stderr="/data/out/err.txt",
                )
            ],
            "outputs": [
                {"path": "/data/out/upper.txt", "url": (out / "upper.txt").as_uri()},
                {"path": "/data/out/err.txt", "url": (out / "err.txt").as_uri()},
            ],
        },
    )
    assert task["state"] == "COMPLETE", system_logs(task)
    assert (out / "upper.txt").read_text() == "LINE ONE\nLINE TWO\n"
    assert (out / "err.txt").read_text() == "warned\n"
    sizes = {o["path"]: o["size_bytes"] for o in task["logs"][0]["outputs"]}
    assert sizes == {"/data/out/upper.txt": "18", "/data/out/err.txt": "7"}
    # The captured stdout is what the executor wrote there.
    assert stdouts(task) == ["LINE ONE\nLINE TWO\n"]


def test_file_and_directory_inputs_and_a_directory_output(on: On) -> None:
    src = on.allowed / uid()
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "file.txt").write_text("payload")
    (src / "dir" / "a.txt").write_text("A")
    (src / "dir" / "sub" / "b.txt").write_text("B")
    dest = on.allowed / uid() / "res"
    url = dest.as_uri()
    task = run(
        on.tes,
        {
            "inputs": [
                {"path": "/inputs/file.txt", "url": (src / "file.txt").as_uri()},
                {"path": "/inputs/dir", "url": (src / "dir").as_uri()},
            ],
            "executors": [
                sh(
                    CD + "find inputs/dir -type f | sort; cat inputs/dir/a.txt inputs/dir/sub/b.txt"
                    " && mkdir -p outputs/res/sub/deeper && md5sum < inputs/file.txt > "
                    "outputs/res/sum && printf bb > outputs/res/sub/b.txt && "
                    ": > outputs/res/sub/deeper/empty"
                )
            ],
            "outputs": [{"path": "/outputs/res", "url": url}],
        },
    )
    assert task["state"] == "COMPLETE", system_logs(task)
    assert stdouts(task) == ["inputs/dir/a.txt\ninputs/dir/sub/b.txt\nAB"]
    # The types are filled in by the server.
    assert [i["type"] for i in task["inputs"]] == ["FILE", "DIRECTORY"]
    assert task["outputs"][0]["type"] == "DIRECTORY"
    assert (dest / "sum").read_text().split()[0] == hashlib.md5(b"payload").hexdigest()
    assert (dest / "sub" / "b.txt").read_text() == "bb"
    assert (dest / "sub" / "deeper" / "empty").read_bytes() == b""
    logs = sorted(task["logs"][0]["outputs"], key=lambda o: o["path"])
    assert logs == [
        {
            "url": f"{url}/sub/b.txt",
            "path": "/outputs/res/sub/b.txt",
            "size_bytes": "2",
        },
        {
            "url": f"{url}/sub/deeper/empty",
            "path": "/outputs/res/sub/deeper/empty",
            "size_bytes": "0",
        },
        {
            "url": f"{url}/sum",
            "path": "/outputs/res/sum",
            "size_bytes": str((dest / "sum").stat().st_size),
        },
    ]


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_a_running_task(on: On) -> None:
    marker = sleep_marker()
    job = create(on.tes, {"executors": [sh(f"sleep {marker}"), sh("echo never")]})
    wait_state(on.tes, job, {"RUNNING"}, timeout=30)
    wait_procs(marker, present=True, timeout=30)  # every test backend runs it on this machine
    assert on.tes.post(f"/tasks/{job}:cancel").status_code == 200
    task = wait_final(on.tes, job, timeout=30)
    assert task["state"] == "CANCELED"
    assert_tes_shape(task)
    assert "never\n" not in all_stdouts(task)  # no later executor started
    wait_procs(marker, present=False, timeout=30)  # nor is the canceled one left running


def test_cancel_a_queued_task_is_immediate(on: On) -> None:
    if on.site.slots is None:
        pytest.skip(
            "the gateway hands tasks to the scheduler at once; canceling a task that waits "
            "in the scheduler's queue is the backend's own test"
        )
    # Tasks taking every slot of the site keep the next one queued.
    marker = sleep_marker()
    blockers = [
        create(on.tes, sh_task(f"sleep {marker}", cpu_cores=1)) for _ in range(on.site.slots)
    ]
    try:
        for blocker in blockers:
            wait_state(on.tes, blocker, {"RUNNING"})
        queued = create(on.tes, sh_task("echo should-not-run"))
        assert on.tes.get(f"/tasks/{queued}").json()["state"] == "QUEUED"
        r = on.tes.post(f"/tasks/{queued}:cancel")
        assert r.status_code == 200 and r.json() == {}
        task = on.tes.get(f"/tasks/{queued}", params={"view": "FULL"}).json()
        assert task["state"] == "CANCELED"
        assert_tes_shape(task)
        assert all_stdouts(task) == []  # it never ran
        time.sleep(0.3)  # the dispatcher does not pick it up later either
        assert on.tes.get(f"/tasks/{queued}").json()["state"] == "CANCELED"
    finally:
        for blocker in blockers:
            on.tes.post(f"/tasks/{blocker}:cancel")
    for blocker in blockers:
        assert wait_final(on.tes, blocker)["state"] == "CANCELED"
    wait_procs(marker, present=False, timeout=30)


# -- what the logs say -----------------------------------------------------------------------


def test_system_logs_and_metadata_name_the_backend_and_runtime(on: On) -> None:
    task = run(on.tes, sh_task("true"))
    meta = task["logs"][0]["metadata"]
    assert meta["backend"] == on.site.backend
    assert meta["attempt"] == "1"
    if on.site.runtime is not None:
        assert meta["runtime"] == on.site.runtime
    if on.site.native_id is not None:
        assert meta[on.site.native_id], meta
