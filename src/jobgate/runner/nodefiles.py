"""The files a batch job's task directory holds besides the task, shared by the gateway
(which writes the first two) and the node runner (which writes the last two).

- ``node.json`` (gateway, before submission): the task and how to run it.
- ``submission.json`` (gateway, before submission): the scheduler job name, and the
  element index when the job is one element of an array. A gateway that lost the
  scheduler's reply finds the job again by that name, never submitting it twice.
- ``started.json`` (node runner, first thing): the scheduler's id for this run, the host.
- ``result.json`` (node runner, last thing): the final state and every executor's log.

Each is written whole (write, rename), so a reader sees all of a file or none of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

NODE_FILE = "node.json"
SUBMISSION_FILE = "submission.json"
STARTED_FILE = "started.json"
RESULT_FILE = "result.json"


def write_json(path: Path, data: dict[str, Any], *, sync: bool = True) -> None:
    """Atomically (write, rename): a reader sees the whole file or none. ``sync`` also
    fsyncs it first, for files that must outlive a crash of the machine."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The object in ``path``, or None when it is absent, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
