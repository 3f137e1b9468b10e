"""Task validation in the domain model (shared by every front end)."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from jobgate.domain.models import TaskSpec, new_job_id

EX = {"image": "alpine", "command": ["true"]}


def test_minimal_task_dumps_only_what_was_sent() -> None:
    spec = TaskSpec.model_validate({"executors": [EX], "unknown_field": 1})
    assert spec.model_dump(mode="json", exclude_none=True) == {"executors": [EX]}


@pytest.mark.parametrize(
    ("task", "where"),
    [
        ({"executors": []}, "executors"),
        ({"executors": [{"image": "a", "command": []}]}, "executors"),
        ({"executors": [{**EX, "workdir": "rel"}]}, "workdir"),
        ({"executors": [EX], "inputs": [{"path": "/a/../b", "content": "x"}]}, "path"),
        ({"executors": [EX], "inputs": [{"path": "/a"}]}, "inputs"),
        ({"executors": [EX], "outputs": [{"path": "/a/*.txt", "url": "file:///x"}]}, "outputs"),
        ({"executors": [EX], "volumes": ["vol"]}, "volumes"),
        ({"executors": [{**EX, "env": {"A=B": "1"}}]}, "env"),
        ({"executors": [EX], "resources": {"cpu_cores": 0}}, "cpu_cores"),
    ],
)
def test_invalid_tasks_are_rejected_with_a_location(task: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        TaskSpec.model_validate(task)
    assert any(where in ".".join(map(str, e["loc"])) for e in info.value.errors())


def test_job_ids_are_time_ordered_uuid7() -> None:
    ids = [new_job_id() for _ in range(50)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert len(set(ids)) == 50
    # Millisecond prefix never goes backwards.
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)
