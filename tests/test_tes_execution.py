"""What TES tasks do when they run on the local backend: processes, inputs and outputs
(URL forms, staging rules), cancel, memory limits. What every backend and runtime must do
alike (executors, env, workdir, volumes, directories, cancel) is in ``test_contract.py``.

Real HTTP against the session's ``jobgate serve`` subprocess; real processes. Commands use
paths relative to ``/`` (``data/x``) where they can, which reach the same file under every
runtime; tests that need the sandbox's absolute paths are marked ``requires_bwrap``.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import pytest

from jobgate.runtimes.cgroups import CgroupLayout
from tests.support import (
    assert_error,
    assert_tes_shape,
    create,
    exit_codes,
    requires_bwrap,
    run,
    sh,
    sleep_marker,
    stdouts,
    system_logs,
    uid,
    wait_final,
    wait_procs,
    wait_procs_gone_now,
    wait_state,
)

# -- helpers ----------------------------------------------------------------------------


# -- executors ----------------------------------------------------------------------------


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
