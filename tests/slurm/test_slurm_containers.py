"""Executors of Slurm jobs run in their image on the node, as with the local backend."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, wait_final
from tests.containers.servers import (
    build_rootfs,
    busybox_ref,
    containers_named,
    import_image,
    podman,
    requires_podman,
)
from tests.slurm.cluster import SlurmCluster
from tests.slurm.servers import slurm_env

pytestmark = requires_podman


def test_podman_runs_the_executor_in_its_image_on_the_node(
    slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory, allowed_dir: Path
) -> None:
    base = tmp_path_factory.mktemp("slurmpodman")
    image = busybox_ref()
    import_image(build_rootfs(base / "root"), image)
    env = slurm_env(
        slurm_cluster,
        base / "shared",
        JOBGATE_RUNTIME="podman",
        JOBGATE_IMAGE_MAP=f"alpine={image}",
        JOBGATE_ALLOWED_DIRS=str(allowed_dir),
    )
    srv = Server(base / "data", env).start()
    try:
        with httpx.Client(base_url=srv.url + "/ga4gh/tes/v1", timeout=30) as tes:
            task = {
                "inputs": [{"path": "/data/in.txt", "content": "hi\n"}],
                "executors": [
                    {
                        "image": "alpine",
                        # The image's own /etc/passwd (podman adds the user), not the node's.
                        "command": [
                            "sh",
                            "-c",
                            "id -u; tr a-z A-Z < /data/in.txt; cat /etc/passwd",
                        ],
                    }
                ],
            }
            r = tes.post("/tasks", json=task)
            assert r.status_code == 200, r.text
            task_id = r.json()["id"]
            final = wait_final(tes, task_id, timeout=120)
            assert final["state"] == "COMPLETE", final
            log = final["logs"][-1]
            assert log["metadata"]["backend"] == "slurm"
            assert log["metadata"]["runtime"] == "podman"
            out = log["logs"][0]["stdout"].splitlines()
            assert out[:3] == ["65534", "HI", "root:x:0:0:root:/root:/bin/sh"], out
            assert not any(line.startswith("daemon:") for line in out), out  # a host user
            # The container was removed on the node.
            assert containers_named(f"jobgate-{task_id}") == []
    finally:
        srv.stop()
        podman("rmi", "--force", image, check=False)
