"""Host directories shown in every task (``JOBGATE_HOST_MOUNTS``), inputs bound in place
rather than copied, and every image on the host root (``JOBGATE_IMAGE_MAP='*=dir:/'``)."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from jobgate.config import Settings
from jobgate.domain.models import Job, now
from jobgate.runner.taskdir import container_paths
from jobgate.runtimes.apptainer import ApptainerRuntime
from jobgate.runtimes.base import ExecSpec, Mount, UnsupportedTask
from jobgate.runtimes.bwrap import BwrapRuntime
from jobgate.runtimes.hostmounts import HostMount, in_place, parse_host_mounts
from jobgate.runtimes.images import ImageCatalog
from jobgate.runtimes.oci import PodmanRuntime
from tests.engines.conftest import ENGINE_USER, EngineSite
from tests.support import requires_bwrap, run, sh, system_logs, tes_client


@pytest.fixture()
def tes(engine_site: EngineSite) -> httpx.Client:
    with tes_client(engine_site.server) as client:
        yield client  # type: ignore[misc]


def task(script: str, image: str = "quay.io/any/image:1", **fields: object) -> dict[str, object]:
    return {"executors": [sh(script, image=image)], **fields}


# -- settings -----------------------------------------------------------------------------


def test_host_mounts_parse_with_their_modes() -> None:
    assert parse_host_mounts("/gpfs:rw, /opt/venvs:ro,/srv/x/") == (
        HostMount("/gpfs", True),
        HostMount("/opt/venvs", False),
        HostMount("/srv/x", False),
    )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("gpfs:rw", "absolute"),
        ("/a/../etc:rw", "'..'"),
        ("/:rw", "not /"),
        ("/proc/x:ro", "/proc"),
        ("/tmp:rw", "/tmp"),
        ("/a:rx", "rw or ro"),
        ("/a:rw,/a:ro", "twice"),
    ],
)
def test_bad_host_mounts_are_refused_at_start(value: str, says: str) -> None:
    with pytest.raises(ValidationError, match="host_mounts") as err:
        Settings(host_mounts=value)
    assert says in str(err.value)


def test_in_place_means_the_same_path_under_a_mount() -> None:
    mounts = (HostMount("/w", True), HostMount("/ro", False))
    assert in_place(mounts, "file:///w/js", "/w/js", writable=True)
    assert in_place(mounts, "file:///w/js/", "/w/js", writable=True)
    assert in_place(mounts, "file:///ro/x", "/ro/x", writable=False)
    assert not in_place(mounts, "file:///ro/x", "/ro/x", writable=True)
    assert not in_place(mounts, "file:///w/js", "/data/js", writable=False)
    assert not in_place(mounts, "file:///elsewhere", "/elsewhere", writable=False)
    assert not in_place(mounts, "file://otherhost/w/js", "/w/js", writable=False)
    assert not in_place(mounts, "http://x/w/js", "/w/js", writable=False)


def test_star_maps_every_image_not_named() -> None:
    catalog = ImageCatalog({"*": "dir:/", "alpine": "localhost/busybox"})
    assert catalog.resolve("snakemake/snakemake:v9").rootfs == Path("/")
    assert catalog.resolve("alpine").ref == "localhost/busybox"


def test_container_runtimes_bind_host_mounts(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    spec = ExecSpec(
        argv=["true"],
        image="alpine",
        root=tmp_path,
        mounts=[Mount(Path("/gpfs"), "/gpfs"), Mount(Path("/opt/v"), "/opt/v", readonly=True)],
        name=f"jobgate-{uuid.uuid4().hex}-0",
    )
    for runtime, flag in (
        (PodmanRuntime(executable=sys.executable, catalog=ImageCatalog()), "--volume"),
        (ApptainerRuntime(executable=sys.executable, cache_dir=tmp_path / "c"), "--bind"),
    ):
        argv = runtime.command(spec).argv
        binds = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]
        assert "/gpfs:/gpfs" in binds and "/opt/v:/opt/v:ro" in binds


def test_in_place_inputs_are_not_bound_from_the_task_root() -> None:
    job = Job.model_validate(
        {
            "id": "t",
            "creation_time": now(),
            "inputs": [
                {"url": "file:///w/js", "path": "/w/js", "type": "DIRECTORY"},
                {"content": "x", "path": "/data/in"},
            ],
            "executors": [{"image": "a", "command": ["true"]}],
        }
    )
    assert container_paths(job, (HostMount("/w", True),)) == ("/data/in",)


# -- a live server (bwrap) ------------------------------------------------------------------


def test_service_info_lists_the_read_write_mounts(
    engine_site: EngineSite, tes: httpx.Client
) -> None:
    shared = engine_site.shared.as_uri()
    assert shared in tes.get("/service-info").json()["storage"]
    legacy = httpx.get(f"{engine_site.server.url}/v1/tasks/service-info", timeout=30).json()
    assert shared in legacy["storage"]
    assert engine_site.readonly.as_uri() not in legacy["storage"]


def test_tasks_share_the_read_write_mount_and_read_the_read_only_one(
    engine_site: EngineSite, tes: httpx.Client
) -> None:
    shared, ro = engine_site.shared, engine_site.readonly
    name = f"w-{uuid.uuid4().hex}"
    done = run(
        tes,
        task(
            f"id -u; cat {ro}/tool.txt; echo one > {shared}/{name}; "
            f"if echo x > {ro}/new 2>/dev/null; then echo WROTE; fi"
        ),
    )
    assert done["state"] == "COMPLETE", system_logs(done)
    out = done["logs"][0]["logs"][0]["stdout"]
    assert out == f"{ENGINE_USER[0]}\nfrom the host\n"  # JOBGATE_TASK_USER
    assert (shared / name).read_text() == "one\n"
    assert (shared / name).stat().st_uid == ENGINE_USER[0]
    assert not (ro / "new").exists()
    # The next task changes what the first one wrote.
    again = run(tes, task(f"echo two >> {shared}/{name}"))
    assert again["state"] == "COMPLETE", system_logs(again)
    assert (shared / name).read_text() == "one\ntwo\n"


def test_a_directory_input_in_place_is_the_host_directory_itself(
    engine_site: EngineSite, tes: httpx.Client
) -> None:
    store = engine_site.shared / f"js-{uuid.uuid4().hex}"
    store.mkdir()
    (store / "state").write_text("0\n")
    for path in (store, store / "state"):
        os.chown(path, *ENGINE_USER)  # the engine's leader made it
    out = store / "result.txt"
    done = run(
        tes,
        task(
            f"echo 1 >> {store}/state && echo made > {out}",
            inputs=[{"url": store.as_uri(), "path": str(store), "type": "DIRECTORY"}],
            outputs=[{"url": out.as_uri(), "path": str(out), "type": "FILE"}],
        ),
    )
    assert done["state"] == "COMPLETE", system_logs(done)
    # Bound, not copied: the task's change is in the host's directory.
    assert (store / "state").read_text() == "0\n1\n"
    assert out.read_text() == "made\n"
    assert done["logs"][0]["outputs"] == [
        {"url": out.as_uri(), "path": str(out), "size_bytes": "5"}
    ]


def test_a_copy_into_a_host_mount_is_refused_with_the_reason(
    engine_site: EngineSite, tes: httpx.Client
) -> None:
    target = f"{engine_site.shared}/copied-{uuid.uuid4().hex}"
    done = run(tes, task("true", inputs=[{"content": "x", "path": target}]))
    assert done["state"] == "SYSTEM_ERROR"
    assert f"input {target} lies in the read-write host directory" in system_logs(done)
    assert not os.path.exists(target)


def test_any_image_runs_on_the_host_root_read_only_and_sandboxed(
    engine_site: EngineSite, tes: httpx.Client
) -> None:
    probe = engine_site.readonly / "tool.txt"
    done = run(
        tes,
        task(
            "id -u; test -e /etc/shadow && echo SHADOW; test -S /run/munge/munge.socket.2 "
            f"&& echo MUNGE; cat {probe}; touch /usr/x 2>/dev/null && echo WROTE; "
            "echo ok > /tmp/t && cat /tmp/t",
            image="snakemake/snakemake:v9.27.1",
        ),
    )
    assert done["state"] == "COMPLETE", system_logs(done)
    lines = done["logs"][0]["logs"][0]["stdout"].splitlines()
    assert lines[0] != "0"  # an unprivileged task uid
    assert lines[1:] == ["from the host", "ok"]


@requires_bwrap
def test_bwrap_mounts_over_system_dirs_only_where_the_mount_point_exists(tmp_path: Path) -> None:
    runtime = BwrapRuntime(etc_dir=tmp_path / "etc", run_as=None)
    (tmp_path / "root" / "tmp").mkdir(parents=True)

    def argv(container: str, image: str = "any") -> list[str]:
        spec = ExecSpec(
            argv=["true"],
            image=image,
            root=tmp_path / "root",
            mounts=[Mount(Path("/usr/share"), container, readonly=True)],
        )
        return runtime.command(spec).argv

    assert "/usr/share" in argv("/usr/share")  # exists in the host's /usr
    assert "/srv/new/place" in argv("/srv/new/place")  # outside: bwrap makes it
    with pytest.raises(UnsupportedTask, match="/usr/no-such-dir"):
        argv("/usr/no-such-dir")
    with pytest.raises(UnsupportedTask, match="/etc/slurm"):
        argv("/etc/slurm")  # the sandbox's /etc is its own copy
