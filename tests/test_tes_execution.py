"""What TES tasks do when they run: executors, inputs, outputs, cancel, memory limits.

Real HTTP against the session's ``jobgate serve`` subprocess; real processes. Commands use
paths relative to ``/`` (``data/x``) where they can, which reach the same file under every
runtime; tests that need the sandbox's absolute paths are marked ``requires_bwrap``.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import psutil
import pytest

from jobgate.runtimes.cgroups import CgroupLayout
from tests.conftest import requires_bwrap, wait_final, wait_state
from tests.test_tes_api import assert_error, assert_tes_shape

# -- helpers ----------------------------------------------------------------------------


def uid() -> str:
    return uuid.uuid4().hex[:12]


def sh(script: str, **extra: Any) -> dict[str, Any]:
    return {"image": "alpine", "command": ["sh", "-c", script], **extra}


def create(tes: httpx.Client, task: dict[str, Any]) -> str:
    r = tes.post("/tasks", json=task)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def run(tes: httpx.Client, task: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    final = wait_final(tes, create(tes, task), timeout)
    assert_tes_shape(final)
    return final


def exit_codes(task: dict[str, Any]) -> list[int]:
    return [e["exit_code"] for e in task["logs"][-1]["logs"]]


def stdouts(task: dict[str, Any]) -> list[str]:
    return [e.get("stdout", "") for e in task["logs"][-1]["logs"]]


def system_logs(task: dict[str, Any]) -> str:
    return "\n".join(line for tl in task.get("logs", []) for line in tl.get("system_logs", []))


def sleep_marker() -> str:
    """A ``sleep`` argument no other process on the machine has in its command line."""
    return f"300.{random.randrange(10**8):08d}"


def procs_with(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line contains ``marker``."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if marker in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def wait_procs(marker: str, present: bool, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bool(procs_with(marker)) == present:
            return
        time.sleep(0.05)
    state = "appeared" if present else "died"
    raise AssertionError(f"processes with {marker!r} never {state}: {procs_with(marker)}")


def wait_procs_gone_now(marker: str, grace: float = 2.0) -> None:
    """The processes are gone at once (reaping may lag the kill by a moment)."""
    deadline = time.monotonic() + grace
    while procs_with(marker):
        assert time.monotonic() < deadline, f"still alive: {procs_with(marker)}"
        time.sleep(0.05)


# -- executors ----------------------------------------------------------------------------


@pytest.mark.parametrize("ignore_error", [None, False])
def test_executor_error_stops_later_executors(tes: httpx.Client, ignore_error: bool | None) -> None:
    first = sh("echo first; exit 3")
    if ignore_error is not None:
        first["ignore_error"] = ignore_error
    task = run(tes, {"executors": [first, sh("echo second")]})
    assert task["state"] == "EXECUTOR_ERROR"
    assert exit_codes(task) == [3]  # the second executor never ran
    assert stdouts(task) == ["first\n"]


def test_ignore_error_continues(tes: httpx.Client) -> None:
    task = run(
        tes,
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


def test_executors_run_in_order(tes: httpx.Client) -> None:
    task = run(
        tes,
        {
            "executors": [
                sh("echo one > data/log"),
                sh("echo two >> data/log"),
                sh("cat data/log"),
            ],
            "volumes": ["/data"],
        },
    )
    assert task["state"] == "COMPLETE", task
    assert stdouts(task)[2] == "one\ntwo\n"
    starts = [e["start_time"] for e in task["logs"][0]["logs"]]
    assert starts == sorted(starts)


def test_stdin_stdout_stderr_files(tes: httpx.Client, allowed_dir: Path) -> None:
    out = allowed_dir / uid()
    task = run(
        tes,
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


def test_env_is_set_and_host_env_is_not_leaked(tes: httpx.Client) -> None:
    task = run(
        tes,
        {
            "executors": [
                sh(
                    'printf "%s|%s|%s" "$GREETING" "${EMPTY-unset}" '
                    '"${JOBGATE_ALLOWED_DIRS-hidden}"',
                    env={"GREETING": "hello world", "EMPTY": ""},
                )
            ]
        },
    )
    assert task["state"] == "COMPLETE"
    assert stdouts(task) == ["hello world||hidden"]


def test_env_is_per_executor(tes: httpx.Client) -> None:
    task = run(
        tes,
        {"executors": [sh("true", env={"ONLY_FIRST": "1"}), sh('printf %s "${ONLY_FIRST-no}"')]},
    )
    assert stdouts(task)[1] == "no"


@requires_bwrap
def test_workdir(tes: httpx.Client, allowed_dir: Path) -> None:
    url = (allowed_dir / uid() / "rel.txt").as_uri()
    task = run(
        tes,
        {
            "executors": [sh("pwd; echo relative > rel.txt", workdir="/data/wd")],
            "outputs": [{"path": "/data/wd/rel.txt", "url": url}],
        },
    )
    assert task["state"] == "COMPLETE", system_logs(task)
    assert stdouts(task) == ["/data/wd\n"]
    assert Path(url.removeprefix("file://")).read_text() == "relative\n"


@requires_bwrap
def test_volumes_are_shared_between_executors(tes: httpx.Client) -> None:
    task = run(
        tes,
        {
            "volumes": ["/vol/shared"],
            "executors": [sh("echo from-first > /vol/shared/x"), sh("cat /vol/shared/x")],
        },
    )
    assert task["state"] == "COMPLETE", task
    assert stdouts(task)[1] == "from-first\n"


@requires_bwrap
def test_tmp_is_shared_by_executors_and_private_to_the_task(tes: httpx.Client) -> None:
    name = f"jobgate-test-{uid()}"
    task = run(tes, {"executors": [sh(f"echo t > /tmp/{name}"), sh(f"cat /tmp/{name}")]})
    assert task["state"] == "COMPLETE", task
    assert stdouts(task)[1] == "t\n"
    assert not (Path("/tmp") / name).exists()  # not the host's /tmp
    other = run(tes, {"executors": [sh(f"cat /tmp/{name}")]})
    assert other["state"] == "EXECUTOR_ERROR"  # nor another task's


@requires_bwrap
def test_task_paths_under_host_system_dirs_are_a_clear_system_error(tes: httpx.Client) -> None:
    task = run(
        tes,
        {"inputs": [{"path": "/etc/my.conf", "content": "x"}], "executors": [sh("true")]},
    )
    assert task["state"] == "SYSTEM_ERROR"
    assert "/etc" in system_logs(task)


def test_exit_code_of_a_signal_killed_executor(tes: httpx.Client) -> None:
    task = run(
        tes,
        {"executors": [sh("kill -TERM $$", ignore_error=True), sh("kill -KILL $$")]},
    )
    assert task["state"] == "EXECUTOR_ERROR"
    assert exit_codes(task) == [128 + 15, 128 + 9]


def test_missing_command_is_an_executor_error(tes: httpx.Client) -> None:
    task = run(tes, {"executors": [{"image": "alpine", "command": ["no-such-command-xyz"]}]})
    # The user's mistake, not the system's: an executor error that says what went wrong.
    assert task["state"] == "EXECUTOR_ERROR"
    assert exit_codes(task)[0] != 0
    assert "no-such-command-xyz" in task["logs"][0]["logs"][0]["stderr"]


def test_processes_left_behind_die_with_the_executor(tes: httpx.Client) -> None:
    marker = sleep_marker()
    # The pause lets the background sleep exec before its parent exits.
    task = run(tes, {"executors": [sh(f"sleep {marker} & sleep 0.3; echo started")]})
    assert task["state"] == "COMPLETE"
    assert stdouts(task) == ["started\n"]
    wait_procs_gone_now(marker)


# -- inputs -----------------------------------------------------------------------------


def test_content_input(tes: httpx.Client) -> None:
    content = "inline ✓\n" + "x" * (128 * 1024)  # the spec asks servers for at least 128 KiB
    task = run(
        tes,
        {
            "inputs": [{"path": "/data/sub/c.txt", "content": content}],
            "executors": [sh("head -c 10 data/sub/c.txt; echo; wc -c < data/sub/c.txt")],
        },
    )
    assert task["state"] == "COMPLETE", system_logs(task)
    assert stdouts(task) == [f"inline ✓\n{len(content.encode())}\n"]


def test_file_input(tes: httpx.Client, allowed_dir: Path) -> None:
    src = allowed_dir / uid()
    src.mkdir()
    (src / "a.txt").write_text("from-file-url\n")
    (src / "b.txt").write_text("from-bare-path\n")
    task = run(
        tes,
        {
            "inputs": [
                {"path": "/data/a.txt", "url": (src / "a.txt").as_uri()},
                {"path": "/data/b.txt", "url": str(src / "b.txt")},  # the spec allows a path
            ],
            "executors": [sh("cat data/a.txt data/b.txt")],
        },
    )
    assert task["state"] == "COMPLETE", system_logs(task)
    assert stdouts(task) == ["from-file-url\nfrom-bare-path\n"]
    assert [i["type"] for i in task["inputs"]] == ["FILE", "FILE"]


def test_directory_input(tes: httpx.Client, allowed_dir: Path) -> None:
    src = allowed_dir / uid() / "dir"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.txt").write_text("B")
    task = run(
        tes,
        {
            "inputs": [{"path": "/data/d", "url": src.as_uri()}],
            "executors": [sh("find data/d -type f | sort; cat data/d/a.txt data/d/sub/b.txt")],
        },
    )
    assert task["state"] == "COMPLETE", system_logs(task)
    assert stdouts(task) == ["data/d/a.txt\ndata/d/sub/b.txt\nAB"]
    assert task["inputs"][0]["type"] == "DIRECTORY"  # filled in by the server


def test_http_input(tes: httpx.Client, http_files: tuple[str, Path]) -> None:
    base, root = http_files
    name = f"{uid()}.txt"
    (root / name).write_bytes(b"over http\n" * 1000)
    task = run(
        tes,
        {
            "inputs": [{"path": "/data/h.txt", "url": f"{base}/{name}"}],
            "executors": [sh("md5sum < data/h.txt")],
        },
    )
    assert task["state"] == "COMPLETE", system_logs(task)
    assert stdouts(task)[0].split()[0] == hashlib.md5(b"over http\n" * 1000).hexdigest()


def test_http_input_not_found_is_system_error(
    tes: httpx.Client, http_files: tuple[str, Path]
) -> None:
    url = f"{http_files[0]}/missing-{uid()}.txt"
    task = run(tes, {"inputs": [{"path": "/data/h", "url": url}], "executors": [sh("true")]})
    assert task["state"] == "SYSTEM_ERROR"
    assert url in system_logs(task)
    assert "404" in system_logs(task)
    assert exit_codes(task) == []  # nothing ran


def test_file_input_outside_allowed_dirs_is_refused(
    tes: httpx.Client, allowed_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(f"secret-{uid()}\n")
    inside = allowed_dir / uid()
    inside.mkdir()
    (inside / "link").symlink_to(secret)  # a symlink out of an allowed directory
    urls = [
        secret.as_uri(),
        f"file://{inside}/../../{secret.relative_to('/')}",  # dot-dot out of it
        (inside / "link").as_uri(),
        f"file://{allowed_dir}-sibling/x.txt",  # shares the prefix, not the directory
    ]
    for url in urls:
        task = run(
            tes, {"inputs": [{"path": "/data/s", "url": url}], "executors": [sh("cat data/s")]}
        )
        assert task["state"] == "SYSTEM_ERROR", (url, task)
        assert url in system_logs(task), (url, system_logs(task))
        assert exit_codes(task) == []
        assert "secret-" not in str(task)


def test_unsupported_input_scheme_fails_at_run_time(tes: httpx.Client) -> None:
    url = f"gs://bucket-{uid()}/key"  # no Google Cloud Storage here
    task_id = create(tes, {"inputs": [{"path": "/data/x", "url": url}], "executors": [sh("true")]})
    task = wait_final(tes, task_id)
    assert_tes_shape(task)
    assert task["state"] == "SYSTEM_ERROR"
    assert url in system_logs(task)
    assert "'gs'" in system_logs(task)


def test_missing_input_file_is_system_error(tes: httpx.Client, allowed_dir: Path) -> None:
    url = (allowed_dir / uid() / "nope.txt").as_uri()
    task = run(tes, {"inputs": [{"path": "/data/x", "url": url}], "executors": [sh("true")]})
    assert task["state"] == "SYSTEM_ERROR"
    assert url in system_logs(task)


# -- outputs ----------------------------------------------------------------------------


def test_file_output(tes: httpx.Client, allowed_dir: Path) -> None:
    dest = allowed_dir / uid() / "deep" / "out.txt"  # parents are created
    task = run(
        tes,
        {
            "executors": [sh("printf hello > data/out.txt")],
            "outputs": [{"path": "/data/out.txt", "url": dest.as_uri()}],
        },
    )
    assert task["state"] == "COMPLETE", system_logs(task)
    assert dest.read_text() == "hello"
    assert task["logs"][0]["outputs"] == [
        {"url": dest.as_uri(), "path": "/data/out.txt", "size_bytes": "5"}
    ]
    assert task["outputs"][0]["type"] == "FILE"


def test_directory_output_is_recursive(tes: httpx.Client, allowed_dir: Path) -> None:
    dest = allowed_dir / uid() / "res"
    url = dest.as_uri()
    task = run(
        tes,
        {
            "executors": [
                sh(
                    "mkdir -p data/res/sub/deeper && printf a > data/res/a.txt && "
                    "printf bb > data/res/sub/b.txt && : > data/res/sub/deeper/empty"
                )
            ],
            "outputs": [{"path": "/data/res", "url": url}],
        },
    )
    assert task["state"] == "COMPLETE", system_logs(task)
    assert (dest / "a.txt").read_text() == "a"
    assert (dest / "sub" / "b.txt").read_text() == "bb"
    assert (dest / "sub" / "deeper" / "empty").read_bytes() == b""
    logs = sorted(task["logs"][0]["outputs"], key=lambda o: o["path"])
    assert logs == [
        {"url": f"{url}/a.txt", "path": "/data/res/a.txt", "size_bytes": "1"},
        {"url": f"{url}/sub/b.txt", "path": "/data/res/sub/b.txt", "size_bytes": "2"},
        {
            "url": f"{url}/sub/deeper/empty",
            "path": "/data/res/sub/deeper/empty",
            "size_bytes": "0",
        },
    ]
    assert task["outputs"][0]["type"] == "DIRECTORY"


def test_wildcard_output_strips_path_prefix(tes: httpx.Client, allowed_dir: Path) -> None:
    base = allowed_dir / uid()
    task = run(
        tes,
        {
            "executors": [
                sh(
                    "mkdir -p data/w/deep data/v/deep && printf 1 > data/w/x1.txt && "
                    "printf 22 > data/w/x2.txt && printf no > data/w/skip.log && "
                    "printf 333 > data/w/deep/x3.txt && printf 4444 > data/v/deep/x4.txt"
                )
            ],
            "outputs": [
                {
                    "path": "/data/w/*.txt",
                    "path_prefix": "/data/w/",
                    "url": (base / "top").as_uri(),
                },
                {
                    "path": "/data/*/deep/x?.txt",
                    "path_prefix": "/data/",
                    "url": (base / "nested").as_uri() + "/",
                },
            ],
        },
    )
    assert task["state"] == "COMPLETE", system_logs(task)
    files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    assert files == ["nested/v/deep/x4.txt", "nested/w/deep/x3.txt", "top/x1.txt", "top/x2.txt"]
    assert (base / "nested" / "v" / "deep" / "x4.txt").read_text() == "4444"
    logs = sorted(task["logs"][0]["outputs"], key=lambda o: o["path"])
    nested = (base / "nested").as_uri()
    assert logs == [
        {"url": f"{nested}/v/deep/x4.txt", "path": "/data/v/deep/x4.txt", "size_bytes": "4"},
        {"url": f"{nested}/w/deep/x3.txt", "path": "/data/w/deep/x3.txt", "size_bytes": "3"},
        {"url": (base / "top" / "x1.txt").as_uri(), "path": "/data/w/x1.txt", "size_bytes": "1"},
        {"url": (base / "top" / "x2.txt").as_uri(), "path": "/data/w/x2.txt", "size_bytes": "2"},
    ]


def test_output_log_urls_lead_to_the_uploaded_files(tes: httpx.Client, allowed_dir: Path) -> None:
    """Each logs.outputs url is a URL of the file it describes, whatever the file's name."""
    base = allowed_dir / uid()
    names = ["plain.txt", "sp ace.txt", "pct%41.txt", "h#sh.txt", "q?.txt"]
    script = "mkdir -p data/res && cd data/res && " + " && ".join(
        f"printf %s {shlex.quote(n)} > {shlex.quote(n)}" for n in names
    )
    task = run(
        tes,
        {
            "executors": [sh(script)],
            "outputs": [
                {"path": "/data/res", "url": (base / "dir").as_uri()},
                {
                    "path": "/data/res/*.txt",
                    "path_prefix": "/data/res",
                    "url": (base / "w").as_uri(),
                },
                {"path": "/data/res/sp ace.txt", "url": (base / "single one.txt").as_uri()},
            ],
        },
    )
    assert task["state"] == "COMPLETE", system_logs(task)
    logs = task["logs"][0]["outputs"]
    assert len(logs) == 2 * len(names) + 1
    for olog in logs:
        parsed = urlparse(olog["url"])
        assert parsed.scheme == "file" and not parsed.query and not parsed.fragment, olog
        host = Path(unquote(parsed.path))
        assert host.is_file(), olog
        assert host.read_text() == Path(olog["path"]).name or olog["path"].endswith("sp ace.txt")
        assert str(host.stat().st_size) == olog["size_bytes"], olog


def test_missing_output_after_success_is_system_error(tes: httpx.Client, allowed_dir: Path) -> None:
    url = (allowed_dir / uid() / "x").as_uri()
    task = run(
        tes, {"executors": [sh("true")], "outputs": [{"path": "/data/nothing.txt", "url": url}]}
    )
    assert task["state"] == "SYSTEM_ERROR"
    assert exit_codes(task) == [0]
    assert "/data/nothing.txt" in system_logs(task)


def test_missing_output_after_executor_error_stays_executor_error(
    tes: httpx.Client, allowed_dir: Path
) -> None:
    url = (allowed_dir / uid() / "x").as_uri()
    task = run(
        tes, {"executors": [sh("exit 2")], "outputs": [{"path": "/data/nothing.txt", "url": url}]}
    )
    assert task["state"] == "EXECUTOR_ERROR"
    assert exit_codes(task) == [2]


def test_outputs_are_uploaded_after_executor_error(tes: httpx.Client, allowed_dir: Path) -> None:
    """What a failed task wrote (e.g. its logs) is still delivered for debugging."""
    dest = allowed_dir / uid() / "partial.txt"
    task = run(
        tes,
        {
            "executors": [sh("echo partial > data/p.txt; exit 1")],
            "outputs": [{"path": "/data/p.txt", "url": dest.as_uri()}],
        },
    )
    assert task["state"] == "EXECUTOR_ERROR"
    assert dest.read_text() == "partial\n"


def test_symlinks_do_not_leak_host_files(
    tes: httpx.Client, allowed_dir: Path, tmp_path: Path
) -> None:
    """A task can plant symlinks to host paths; staging out must not follow them."""
    token = f"host-secret-{uid()}"
    secret = tmp_path / "secret.txt"
    secret.write_text(token)
    base = allowed_dir / uid()
    depth = "../" * 30
    outputs = {
        "abs-file": {"path": "/data/abs", "url": (base / "abs").as_uri()},
        "rel-file": {"path": "/data/rel", "url": (base / "rel").as_uri()},
        "in-dir": {"path": "/data/d", "url": (base / "d").as_uri()},
        "wildcard": {"path": "/data/w/*", "path_prefix": "/data/w", "url": (base / "w").as_uri()},
        "passwd": {"path": "/data/pw", "url": (base / "pw").as_uri()},
    }
    # && chains: exit code 0 proves every link was planted (the test cannot pass vacuously).
    script = (
        f"ln -s {secret} data/abs && ln -s {depth}{str(secret).lstrip('/')} data/rel && "
        f"mkdir -p data/d data/w && echo ok > data/d/ok.txt && ln -s {secret} data/d/link && "
        f"ln -s {tmp_path} data/d/dirlink && ln -s {secret} data/w/link && "
        "ln -s /etc/passwd data/pw"
    )
    for key, out in outputs.items():
        task = run(tes, {"executors": [sh(script)], "outputs": [out]})
        assert exit_codes(task) == [0], (key, task)
        leaked = [
            p for p in base.rglob("*") if p.is_file() and token in p.read_text(errors="replace")
        ]
        assert not leaked, (key, leaked, task)
        passwd = Path("/etc/passwd").read_text()
        assert not any(p.is_file() and p.read_text() == passwd for p in base.rglob("*")), key
        listed = [o["path"] for o in task["logs"][0]["outputs"]]
        assert not any(p.endswith(("link", "abs", "rel", "pw")) for p in listed), (key, task)


def test_output_url_outside_allowed_dirs_is_refused(
    tes: httpx.Client, allowed_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    inside = allowed_dir / uid()
    inside.mkdir()
    (inside / "escape").symlink_to(outside, target_is_directory=True)
    for url in [
        (outside / "direct.txt").as_uri(),
        (inside / "escape" / "via-link.txt").as_uri(),
        f"file://{inside}/../../{outside.relative_to('/')}/dotdot.txt",
    ]:
        task = run(
            tes,
            {"executors": [sh("echo x > data/o")], "outputs": [{"path": "/data/o", "url": url}]},
        )
        assert task["state"] == "SYSTEM_ERROR", (url, task)
        assert url in system_logs(task)
    assert list(outside.iterdir()) == []


def test_unsupported_output_scheme_is_system_error(tes: httpx.Client) -> None:
    url = f"gs://bucket-{uid()}/out"
    task = run(
        tes, {"executors": [sh("echo x > data/o")], "outputs": [{"path": "/data/o", "url": url}]}
    )
    assert task["state"] == "SYSTEM_ERROR"
    assert url in system_logs(task)


# -- cancel -----------------------------------------------------------------------------


def test_cancel_queued_task_is_immediate(tes: httpx.Client) -> None:
    # One task taking all 4 slots of the test server keeps the next one queued.
    blocker_marker = sleep_marker()
    blocker = create(
        tes, {"resources": {"cpu_cores": 4}, "executors": [sh(f"sleep {blocker_marker}")]}
    )
    try:
        wait_state(tes, blocker, {"RUNNING"})
        queued = create(tes, {"executors": [sh("echo should-not-run")]})
        assert tes.get(f"/tasks/{queued}").json()["state"] == "QUEUED"
        r = tes.post(f"/tasks/{queued}:cancel")
        assert r.status_code == 200 and r.json() == {}
        task = tes.get(f"/tasks/{queued}", params={"view": "FULL"}).json()
        assert task["state"] == "CANCELED"
        assert_tes_shape(task)
        assert not any(tl["logs"] for tl in task.get("logs", []))  # it never ran
        time.sleep(0.3)  # the dispatcher does not pick it up later either
        assert tes.get(f"/tasks/{queued}").json()["state"] == "CANCELED"
    finally:
        tes.post(f"/tasks/{blocker}:cancel")
    assert wait_final(tes, blocker)["state"] == "CANCELED"
    wait_procs_gone_now(blocker_marker)


def test_cancel_running_task_kills_its_process(tes: httpx.Client) -> None:
    marker = sleep_marker()
    task_id = create(tes, {"executors": [sh(f"sleep {marker}"), sh("echo never")]})
    wait_state(tes, task_id, {"RUNNING"})
    wait_procs(marker, present=True)
    r = tes.post(f"/tasks/{task_id}:cancel")
    assert r.status_code == 200 and r.json() == {}
    assert tes.get(f"/tasks/{task_id}").json()["state"] in ("CANCELING", "CANCELED")
    assert tes.post(f"/tasks/{task_id}:cancel").status_code == 200  # again: harmless
    task = wait_final(tes, task_id, timeout=10)
    assert task["state"] == "CANCELED"
    assert_tes_shape(task)
    wait_procs_gone_now(marker)
    assert "never\n" not in stdouts(task)  # no later executor started
    time.sleep(0.3)
    assert tes.get(f"/tasks/{task_id}").json()["state"] == "CANCELED"


def test_cancel_kills_the_whole_process_tree(tes: httpx.Client) -> None:
    a, b = sleep_marker(), sleep_marker()
    task_id = create(tes, {"executors": [sh(f"sleep {a} & sleep {b}; wait")]})
    wait_state(tes, task_id, {"RUNNING"})
    wait_procs(f"sleep {a}", present=True)
    wait_procs(f"sleep {b}", present=True)
    assert tes.post(f"/tasks/{task_id}:cancel").status_code == 200
    assert wait_final(tes, task_id, timeout=10)["state"] == "CANCELED"
    wait_procs_gone_now(a)
    wait_procs_gone_now(b)


def test_cancel_finished_task_changes_nothing(tes: httpx.Client) -> None:
    task_id = create(tes, {"executors": [sh("echo done")]})
    before = wait_final(tes, task_id)
    assert before["state"] == "COMPLETE"
    r = tes.post(f"/tasks/{task_id}:cancel")
    assert r.status_code == 200 and r.json() == {}
    assert tes.get(f"/tasks/{task_id}", params={"view": "FULL"}).json() == before


def test_cancel_unknown_task_is_404(tes: httpx.Client) -> None:
    assert_error(tes.post(f"/tasks/{uuid.uuid4()}:cancel"), 404)


@contextlib.contextmanager
def hanging_http() -> Iterator[tuple[str, list[socket.socket]]]:
    """An HTTP endpoint that accepts connections and never answers: (base URL, accepted)."""
    accepted: list[socket.socket] = []
    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.05)

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_cancel_while_inputs_are_staged(tes: httpx.Client) -> None:
    """A task stuck downloading an input can be canceled; its executors never start."""
    with hanging_http() as (base, accepted):
        task_id = create(
            tes,
            {"inputs": [{"path": "/data/x", "url": f"{base}/slow"}], "executors": [sh("true")]},
        )
        deadline = time.monotonic() + 15
        while not accepted:
            assert time.monotonic() < deadline, "the server never fetched the input"
            time.sleep(0.02)
        assert tes.get(f"/tasks/{task_id}").json()["state"] == "INITIALIZING"
        assert tes.post(f"/tasks/{task_id}:cancel").status_code == 200
        task = wait_final(tes, task_id, timeout=5)
    assert task["state"] == "CANCELED"
    assert_tes_shape(task)
    assert not any(tl["logs"] for tl in task.get("logs", []))  # nothing ran


# -- resources ----------------------------------------------------------------------------


def _cgroups_writable() -> bool:
    layout = CgroupLayout.detect(name=f"jgtest-probe-{uid()}")
    try:
        return layout.version != 0
    finally:
        layout.close()


def test_ram_gb_is_enforced(tes: httpx.Client) -> None:
    if not _cgroups_writable():
        pytest.skip("cgroups are not writable here: ram_gb falls back to an rlimit")
    script = "import sys; x = b'a' * (200 * 1024 * 1024); sys.exit(0)"
    task = run(
        tes,
        {
            "resources": {"ram_gb": 0.05},
            "executors": [{"image": "python", "command": ["python3", "-c", script]}],
        },
    )
    assert task["state"] == "EXECUTOR_ERROR", task
    assert exit_codes(task)[0] != 0
    assert any(w in system_logs(task).lower() for w in ("memory", "oom")), system_logs(task)


def test_ram_gb_leaves_room_for_tasks_within_it(tes: httpx.Client) -> None:
    script = "x = b'a' * (20 * 1024 * 1024)"
    task = run(
        tes,
        {
            "resources": {"ram_gb": 0.5},
            "executors": [{"image": "python", "command": ["python3", "-c", script]}],
        },
    )
    assert task["state"] == "COMPLETE", task
