"""A root service keeps tasks from its own files, from each other and from the host.

Through HTTP against real servers run as root: tasks run as unprivileged host uids of
their own, a process limit bounds a fork bomb, and the data directory is closed to other
users. Every test here needs root (it is what the service is protecting against).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import Server
from tests.support import create, requires_bwrap, wait_final, wait_state

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the service runs as root here"),
    # One worker: the sites' servers share the task uid range below, which the process
    # counts of the fork bomb test read.
    pytest.mark.xdist_group("isolation"),
]

# Apart from other servers' default range: two services must never share task uids.
# Each test process (xdist worker) and each site its own block: the fork bomb test counts
# the processes of these uids, which no other server may run tasks as.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
UID_BASE = 1_900_500_000 + 1000 * (int(_WORKER) if _WORKER.isdigit() else 0)
UID_COUNT = 16
SITE_UIDS = {"bwrap": UID_BASE, "process": UID_BASE + 100}
MAX_PIDS = 48

HOSTILE = r"""
import json, os, socket, sys, time

data, victim, port = os.environ["DATA"], os.environ["VICTIM"], int(os.environ["PORT"])
found = {}

def attempt(name, act):
    try:
        act()
        found[name] = "succeeded"
    except OSError as exc:
        found[name] = type(exc).__name__

for _ in range(200):  # the test plants a root-owned file into this task's directory
    if os.path.exists("data/planted"):
        break
    time.sleep(0.05)
attempt("planted", lambda: open("data/planted").read())
for name in ("admin-token", "secret.key", "jobgate.db", "webhook-secret"):
    attempt(name, lambda name=name: open(os.path.join(data, name), "rb").read())
attempt("list data dir", lambda: os.listdir(data))
attempt("list tasks", lambda: os.listdir(os.path.join(data, "jobs")))
attempt("victim", lambda: open(victim).read())
attempt("/proc/1/environ", lambda: open("/proc/1/environ", "rb").read())
attempt("gateway port", lambda: socket.create_connection(("127.0.0.1", port), 2).close())
for path in ("/hostile", "/usr/hostile", "/etc/hostile", os.path.join(data, "hostile")):
    attempt("write " + path, lambda path=path: open(path, "w").write("x"))
found["uid"] = os.getuid()
found["own file uid"] = os.stat("data/hostile.py").st_uid
found["uid_map"] = [line.split() for line in open("/proc/self/uid_map")]
print(json.dumps(found))
"""

# Forks for two seconds, ignoring every failure, then exits 0: only the limit can fail it.
BOMB = r"""
import os, sys, time
started = failed = 0
end = time.monotonic() + 2
while time.monotonic() < end:
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        started += 1
    except OSError:
        failed += 1
        time.sleep(0.005)
print(started, failed)
"""


def _env(runtime: str) -> dict[str, str | None]:
    return {
        "JOBGATE_RUNTIME": runtime,
        "JOBGATE_AUTH": "token",
        "JOBGATE_TASK_UID_BASE": str(SITE_UIDS[runtime]),
        "JOBGATE_TASK_UID_COUNT": str(UID_COUNT),
        "JOBGATE_TASK_MAX_PIDS": str(MAX_PIDS),
    }


def _runtimes() -> list[Any]:
    return [pytest.param("bwrap", marks=requires_bwrap), "process"]


@pytest.fixture(scope="module", params=_runtimes())
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    # pytest's own directories are 0700; the process runtime's executors reach their
    # directories by host path, so that site's data dir lives where others may traverse.
    parent = Path(tempfile.mkdtemp(prefix="jobgate-iso-"))
    os.chmod(parent, 0o711)
    srv = Server(parent / "data", _env(request.param))
    srv.runtime = request.param  # type: ignore[attr-defined]
    srv.start(timeout=60)
    yield srv
    srv.stop()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture()
def tes(site: Server) -> Iterator[httpx.Client]:
    token = (site.data_dir / "admin-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=site.url + "/ga4gh/tes/v1", headers=headers, timeout=30) as c:
        yield c


def _task(script: str, **extra: Any) -> dict[str, Any]:
    return {"executors": [{"image": "alpine", "command": ["sh", "-c", script], **extra}]}


def _wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _host_uid(uid: int, uid_map: list[list[str]]) -> int:
    """The host uid behind ``uid`` as a process's /proc/self/uid_map maps it."""
    for inside, outside, count in ((int(a), int(b), int(c)) for a, b, c in uid_map):
        if inside <= uid < inside + count:
            return outside + uid - inside
    raise AssertionError(f"uid {uid} is not mapped: {uid_map}")


def _in_range(uid: int) -> bool:
    return any(base <= uid < base + UID_COUNT for base in SITE_UIDS.values())


def test_a_hostile_task_reaches_nothing_of_the_gateway_or_other_tasks(
    site: Server, tes: httpx.Client
) -> None:
    jobs = site.data_dir / "jobs"
    victim = create(
        tes, {**_task("echo topsecret > data/secret.txt; sleep 30"), "volumes": ["/data"]}
    )
    victim_file = jobs / victim / "root" / "data" / "secret.txt"
    _wait_for(victim_file)
    # In bwrap a task's working directory is its container path; the process runtime
    # starts it in its task root. Relative paths below work in both.
    hostile = create(
        tes,
        {
            "inputs": [{"path": "/data/hostile.py", "content": HOSTILE}],
            "executors": [
                {
                    "image": "alpine",
                    "command": ["python3", "data/hostile.py"],
                    "env": {
                        "DATA": str(site.data_dir),
                        "VICTIM": str(victim_file),
                        "PORT": str(site.port),
                    },
                }
            ],
            "volumes": ["/data"],
        },
    )
    wait_state(tes, hostile, {"RUNNING"})
    own = jobs / hostile / "root" / "data"
    _wait_for(own / "hostile.py")
    planted = own / "planted"
    planted.write_text("root's secret")
    os.chmod(planted, 0o600)
    os.chown(planted, 0, 0)

    victim_owner = victim_file.stat().st_uid
    done = wait_final(tes, hostile)
    assert done["state"] == "COMPLETE", done["logs"][-1]["logs"]
    found = json.loads(done["logs"][-1]["logs"][0]["stdout"])
    tes.post(f"/tasks/{victim}:cancel")
    print(f"hostile task ({site.runtime}): {found}")  # type: ignore[attr-defined]

    # Not host root, nor mapped onto it: an unprivileged uid of the task range.
    assert _in_range(found["uid"]) or _in_range(_host_uid(found["uid"], found["uid_map"]))
    assert _host_uid(found["uid"], found["uid_map"]) != 0
    # Its files on the host belong to that uid; the victim's to another.
    hostile_owner = found["own file uid"]  # no user namespace: as the host sees it
    assert _in_range(hostile_owner) and _in_range(victim_owner)
    assert hostile_owner != victim_owner
    attempts = {k: v for k, v in found.items() if k not in ("uid", "uid_map", "own file uid")}
    if site.runtime == "process":  # type: ignore[attr-defined]
        # Unisolated: the host's network is its own (README), and the host paths exist.
        attempts.pop("gateway port")
        assert attempts["admin-token"] == "PermissionError"
        assert attempts["victim"] == "PermissionError"
    failed = {k: v for k, v in attempts.items() if v == "succeeded"}
    assert not failed, found
    assert attempts["planted"] == "PermissionError"
    assert attempts["/proc/1/environ"] == "PermissionError"


def test_a_fork_bomb_stops_at_the_process_limit_and_the_gateway_keeps_answering(
    site: Server, tes: httpx.Client
) -> None:
    task = {
        "inputs": [{"path": "/work/bomb.py", "content": BOMB}],
        "executors": [{"image": "alpine", "command": ["python3", "work/bomb.py"]}],
    }
    task_id = create(tes, task)
    wait_state(tes, task_id, {"RUNNING"}, timeout=20)
    peak = 0
    latencies: list[float] = []
    stop = threading.Event()

    def count() -> None:
        nonlocal peak
        while not stop.is_set():
            per_uid: dict[int, int] = {}  # the bomb's uid, apart from other tasks'
            for p in psutil.process_iter(["uids", "status"]):
                uids = p.info["uids"]
                if uids and _in_range(uids.real) and p.info["status"] != psutil.STATUS_ZOMBIE:
                    per_uid[uids.real] = per_uid.get(uids.real, 0) + 1
            peak = max([peak, *per_uid.values()])
            time.sleep(0.05)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            assert httpx.get(site.url + "/healthz", timeout=5).status_code == 200
            latencies.append(time.monotonic() - t0)
            time.sleep(0.05)
    finally:
        stop.set()
        counter.join()
    done = wait_final(tes, task_id)
    log = done["logs"][-1]
    started, failed = (int(x) for x in log["logs"][0]["stdout"].split())
    print(
        f"fork bomb: peak {peak} processes, {started} forks, {failed} refused; "
        f"healthz max {max(latencies) * 1000:.0f} ms over {len(latencies)} calls"
    )
    assert done["state"] == "EXECUTOR_ERROR"
    assert log["logs"][0]["exit_code"] == 0  # the limit, not the program, failed it
    assert any(f"limit of {MAX_PIDS} processes" in s for s in log["system_logs"]), log
    assert failed > 0 and started < MAX_PIDS
    assert 0 < peak <= MAX_PIDS
    assert max(latencies) < 1.0


def test_the_data_dir_and_its_files_are_the_services_alone(site: Server, tes: httpx.Client) -> None:
    task_id = create(tes, _task("echo out; echo err >&2"))
    assert wait_final(tes, task_id)["state"] == "COMPLETE"
    d = site.data_dir

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    top = 0o711 if site.runtime == "process" else 0o700  # type: ignore[attr-defined]
    assert mode(d) == top
    for name in ("jobgate.db", "admin-token", "secret.key", "webhook-secret"):
        assert mode(d / name) == 0o600, name
    assert mode(d / "logs") == 0o700
    for kept in (d / "logs" / task_id).iterdir():
        assert mode(kept) == 0o600 and kept.stat().st_uid == 0
    if site.runtime == "bwrap":  # type: ignore[attr-defined]
        assert mode(d / "sandbox-etc") == 0o755  # copies of world-readable /etc files


def test_a_loose_data_dir_left_by_an_earlier_run_is_tightened_at_start(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    srv = Server(data, {"JOBGATE_AUTH": "none"}).start(timeout=60)
    srv.stop()
    for p in (data, data / "jobs", data / "logs"):
        p.mkdir(exist_ok=True)
        os.chmod(p, 0o755)
    (data / "logs" / "old.stdout").write_text("old output")
    for name in ("jobgate.db", "webhook-secret"):
        os.chmod(data / name, 0o644)
    srv.start(timeout=60)
    try:
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for name in ("jobs", "logs"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o700
        for name in ("jobgate.db", "webhook-secret"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
        lines = [x for x in srv.log().splitlines() if "restricted the permissions" in x]
        line = lines[-1]  # this start's (the first one's tightened what the test made)
        assert "jobgate.db 0644->0600" in line and "logs 0755->0700" in line
    finally:
        srv.stop()
