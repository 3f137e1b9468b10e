"""TES tasks in podman containers, through the HTTP API of a real ``jobgate serve``.

The executors run in a busybox image imported locally (there is no registry here) and
mapped from the names tasks use (``alpine``). Each test asserts what a user of a container
runtime relies on: their image, their paths, their limits, and no container left behind.
What every runtime does alike (executors, env, workdir, volumes, files) is tested on podman
too, by ``tests/test_contract.py``.
"""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import httpx

from tests.conftest import Server
from tests.containers.servers import PodmanSite, containers_named, podman, requires_podman
from tests.support import (
    assert_tes_shape,
    create,
    exit_codes,
    run,
    sh,
    stderrs,
    stdouts,
    system_logs,
    uid,
    wait_final,
    wait_state,
)

pytestmark = requires_podman


# -- the runtime ---------------------------------------------------------------------------


def test_runtime_is_reported_in_service_info_and_task_logs(
    ptes: httpx.Client, podman_site: PodmanSite
) -> None:
    info = ptes.get("/service-info").json()
    assert "runtime: podman" in info["description"]
    health = httpx.get(podman_site.server.url + "/healthz").json()
    assert health["backends"]["local"]["runtime"] == "podman"
    task = run(ptes, {"executors": [sh("true")]})
    meta = task["logs"][0]["metadata"]
    assert meta["runtime"] == "podman"
    assert meta["isolated"] == "true"
    assert meta["network"] == "none"


def test_executor_runs_in_its_image_as_an_unprivileged_user(ptes: httpx.Client) -> None:
    # The busybox image has /bin/busybox and no /usr: the host's dirs are not there.
    task = run(ptes, {"executors": [sh("id -u; id -g; ls /bin/busybox; ls /usr 2>&1 || true")]})
    assert task["state"] == "COMPLETE", task
    out = stdouts(task)[0].splitlines()
    assert out[:3] == ["65534", "65534", "/bin/busybox"]
    assert "No such file" in out[3]


def test_network_is_off(ptes: httpx.Client) -> None:
    task = run(ptes, {"executors": [sh("cat /proc/net/dev")]})
    assert task["state"] == "COMPLETE", task
    interfaces = [
        line.split(":")[0].strip() for line in stdouts(task)[0].splitlines() if ":" in line
    ]
    assert interfaces == ["lo"]


# -- executors -----------------------------------------------------------------------------


def test_exit_code_of_a_signal_killed_executor(ptes: httpx.Client) -> None:
    # The executor is the container's PID 1, which ignores signals it has no handler for
    # (as under ``podman run``): a child killed by one reports 128 + N through it.
    task = run(
        ptes,
        {
            "executors": [
                sh("kill -TERM $$; echo pid-1-ignores-it", ignore_error=True),
                sh("sh -c 'kill -TERM $$'; exit $?"),
            ]
        },
    )
    assert task["state"] == "EXECUTOR_ERROR"
    assert stdouts(task)[0] == "pid-1-ignores-it\n"
    assert exit_codes(task) == [0, 128 + 15]


# -- inputs and outputs --------------------------------------------------------------------


def test_inputs_are_readable_but_the_image_is_not_writable(ptes: httpx.Client) -> None:
    task = run(
        ptes,
        {
            "inputs": [{"path": "/data/in.txt", "content": "x"}],
            "executors": [sh("cat /data/in.txt; echo no > /bin/evil 2>/dev/null || echo denied")],
        },
    )
    assert task["state"] == "COMPLETE", task
    assert stdouts(task) == ["xdenied\n"]


# -- containers are removed ----------------------------------------------------------------


def test_finished_tasks_leave_no_container(ptes: httpx.Client) -> None:
    task = run(ptes, {"executors": [sh("echo a"), sh("exit 1")]})
    assert task["state"] == "EXECUTOR_ERROR"
    assert containers_named(f"jobgate-{task['id']}") == []


def test_cancel_stops_and_removes_the_container(ptes: httpx.Client) -> None:
    task_id = create(ptes, {"executors": [sh("echo started; sleep 300"), sh("echo never")]})
    wait_state(ptes, task_id, {"RUNNING"})
    name = f"jobgate-{task_id}-0"
    deadline = time.monotonic() + 30
    while not podman("ps", "--filter", f"name={name}", "--format", "{{.Names}}").stdout.strip():
        assert time.monotonic() < deadline, "the container never started"
        time.sleep(0.1)
    assert ptes.post(f"/tasks/{task_id}:cancel").status_code == 200
    task = wait_final(ptes, task_id, timeout=30)
    assert task["state"] == "CANCELED"
    assert_tes_shape(task)
    assert containers_named(name) == []
    assert "never\n" not in stdouts(task)


def test_leftover_containers_are_removed_when_the_service_starts(
    tmp_path: Path, busybox_image: str
) -> None:
    data = tmp_path / "data"
    # The label the service puts on its containers: host name and data directory.
    instance = hashlib.sha256(f"{socket.gethostname()}:{data.resolve()}".encode()).hexdigest()[:16]
    name = f"jobgate-leftover-{uid()}"
    podman(
        "create",
        "--name",
        name,
        "--label",
        f"org.jobgate.instance={instance}",
        busybox_image,
        "true",
    )
    other = f"jobgate-other-{uid()}"  # another service's container stays
    podman(
        "create",
        "--name",
        other,
        "--label",
        "org.jobgate.instance=someone-else",
        busybox_image,
        "true",
    )
    try:
        srv = Server(data, {"JOBGATE_RUNTIME": "podman"}).start()
        srv.stop()
        assert containers_named(name) == []
        assert containers_named(other) == [other]
        assert "removed 1 containers left over" in srv.log()
    finally:
        podman("rm", "--force", "--ignore", name, other, check=False)


# -- resources -----------------------------------------------------------------------------


def test_ram_gb_is_a_container_memory_limit(ptes: httpx.Client) -> None:
    hog = 'x=$(head -c 300000000 /dev/zero | tr "\\0" a); echo survived'
    task = run(ptes, {"resources": {"ram_gb": 0.05}, "executors": [sh(hog)]})
    assert task["state"] == "EXECUTOR_ERROR", task
    assert exit_codes(task) == [137]
    assert "survived" not in stdouts(task)[0]
    logs = system_logs(task)
    assert "memory limit" in logs and "ram_gb=0.05" in logs, logs
    assert containers_named(f"jobgate-{task['id']}") == []


def test_cpu_cores_and_ram_gb_are_the_containers_cgroup_limits(ptes: httpx.Client) -> None:
    # cgroup v1 (these machines) or v2, as the container sees its own group.
    cg = "/sys/fs/cgroup"
    script = (
        f"cat {cg}/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 {cg}/cpu.max;"
        f"cat {cg}/memory/memory.limit_in_bytes 2>/dev/null || cat {cg}/memory.max"
    )
    task = run(ptes, {"resources": {"cpu_cores": 2, "ram_gb": 0.1}, "executors": [sh(script)]})
    assert task["state"] == "COMPLETE", task
    quota, memory = stdouts(task)[0].split()
    assert int(quota) == 2 * 100_000  # two cores' worth of each 100 ms period
    assert abs(int(memory) - int(0.1 * 1024**3)) < 4096  # rounded down to whole pages


# -- images --------------------------------------------------------------------------------


def test_missing_image_is_a_system_error_with_the_runtimes_message(ptes: httpx.Client) -> None:
    image = f"no-such-image-{uid()}:1.0"
    task = run(ptes, {"executors": [{"image": image, "command": ["true"]}]})
    assert task["state"] == "SYSTEM_ERROR", task
    logs = system_logs(task)
    assert image in logs
    assert "podman pull" in logs
    assert "Error:" in logs  # podman's own words follow
    assert task["logs"][0]["logs"] == []  # no executor ran


def test_image_saved_in_the_image_dir_is_loaded(
    ptes: httpx.Client, podman_site: PodmanSite
) -> None:
    task = run(ptes, {"executors": [{"image": "archived", "command": ["echo", "loaded"]}]})
    assert task["state"] == "COMPLETE", system_logs(task)
    assert stdouts(task) == ["loaded\n"]
    assert podman("image", "exists", podman_site.archived_ref, check=False).returncode == 0


def test_root_filesystem_tarball_in_the_image_dir_is_imported(
    ptes: httpx.Client, podman_site: PodmanSite
) -> None:
    task = run(ptes, {"executors": [{"image": "rootfs-tar", "command": ["echo", "imported"]}]})
    assert task["state"] == "COMPLETE", system_logs(task)
    assert stdouts(task) == ["imported\n"]
    assert podman("image", "exists", podman_site.rootfs_tar_ref, check=False).returncode == 0


def test_unpacked_root_directory_is_the_containers_root(
    ptes: httpx.Client, podman_site: PodmanSite
) -> None:
    marker = podman_site.rootfs / "etc" / "jobgate-marker"
    marker.write_text("from the directory\n")
    before = sorted(p.name for p in podman_site.rootfs.iterdir())
    task = run(
        ptes,
        {
            "inputs": [{"path": "/inputs/in.txt", "content": "in"}],
            "volumes": ["/scratch"],
            "executors": [
                {
                    "image": "unpacked",
                    "command": ["sh", "-c", "cat /etc/jobgate-marker /inputs/in.txt; touch /x"],
                }
            ],
        },
    )
    assert task["state"] == "COMPLETE", task
    assert stdouts(task) == ["from the directory\nin"]
    # Writes go to the overlay: the directory is left as it was, with no /x and no
    # mount points (/inputs, /scratch, /proc, ...).
    assert sorted(p.name for p in podman_site.rootfs.iterdir()) == before


def test_an_image_removed_behind_the_services_back_is_fetched_again(
    ptes: httpx.Client, podman_site: PodmanSite
) -> None:
    task = {"executors": [{"image": "archived", "command": ["echo", "ok"]}]}
    assert run(ptes, task)["state"] == "COMPLETE"
    podman("rmi", "--force", podman_site.archived_ref)
    # The service believed it present: this task meets the engine's error …
    failed = run(ptes, task)
    assert failed["state"] == "EXECUTOR_ERROR"
    assert exit_codes(failed) == [125]
    assert "image" in stderrs(failed)[0].lower()
    # … and the next one loads it from the image directory again.
    again = run(ptes, task)
    assert again["state"] == "COMPLETE", system_logs(again)
    assert stdouts(again) == ["ok\n"]
