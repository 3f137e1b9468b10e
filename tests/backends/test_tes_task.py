"""Translating jobs to remote TES tasks and remote tasks back (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime

from jobgate.backends.tes.task import final_status, remote_task
from jobgate.domain.models import Job
from jobgate.domain.states import State


def test_remote_task_keeps_the_spec_drops_the_gateway_routing_key_and_tags_the_job() -> None:
    job = Job.model_validate(
        {
            "id": "j1",
            "creation_time": datetime.now(UTC),
            "name": "n",
            "executors": [{"image": "alpine", "command": ["true"]}],
            "resources": {"cpu_cores": 2, "backend_parameters": {"backend": "ch"}},
            "tags": {"project": "p"},
            "_routed": True,
        }
    )
    task = remote_task(job, "gw-1")
    assert task["resources"] == {"cpu_cores": 2}
    assert task["tags"] == {"project": "p", "jobgate.job": "j1", "jobgate.gateway": "gw-1"}
    assert set(task) == {"name", "executors", "resources", "tags"}


def test_final_status_reads_the_last_attempt() -> None:
    remote = {
        "id": "r1",
        "state": "EXECUTOR_ERROR",
        "logs": [
            {"logs": [{"exit_code": 9}]},
            {
                "logs": [{"exit_code": 3, "stdout": "o", "stderr": "e"}],
                "outputs": [{"url": "s3://b/x", "path": "/x", "size_bytes": "5"}],
                "system_logs": ["oops"],
                "metadata": {"runtime": "bwrap"},
            },
        ],
    }
    st = final_status(remote, "ch", "http://r/ga4gh/tes/v1")
    assert st.state == State.EXECUTOR_ERROR
    assert [(e.exit_code, e.stdout, e.stderr) for e in st.executor_logs] == [(3, "o", "e")]
    assert st.outputs[0].url == "s3://b/x" and st.outputs[0].size_bytes == "5"
    assert st.system_logs == ["ch: oops"]
    assert st.metadata["remote.runtime"] == "bwrap"
    assert st.metadata["remote_id"] == "r1"


def test_an_unknown_final_state_is_a_system_error() -> None:
    st = final_status({"id": "r", "state": "WEIRD"}, "ch", "u")
    assert st.state == State.SYSTEM_ERROR
