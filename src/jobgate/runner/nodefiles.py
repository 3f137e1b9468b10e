"""The files a batch job's task directory holds besides the task, shared by the gateway
(which writes the first two) and the node runner (which writes the last two).

- ``node.json`` (gateway, before submission): the task and how to run it.
- ``submission.json`` (gateway, before submission): the scheduler job name, and the
  element index when the job is one element of an array. A gateway that lost the
  scheduler's reply finds the job again by that name, never submitting it twice.
- ``started.json`` (node runner, first thing): the scheduler's id for this run, the host.
- ``result.json`` (node runner, last thing): the final state and every executor's log.

Each is written whole (write, rename), so a reader sees all of a file or none of it.
Standard library only: the node runner imports this at every batch job's start.
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from os import PathLike
    from typing import Any

    StrPath = str | PathLike[str]

NODE_FILE = "node.json"
SUBMISSION_FILE = "submission.json"
STARTED_FILE = "started.json"
RESULT_FILE = "result.json"


def write_json(path: StrPath, data: dict[str, Any], *, sync: bool = True) -> None:
    """Atomically (write, rename): a reader sees the whole file or none. ``sync`` also
    fsyncs it first, for files that must outlive a crash of the machine."""
    parent, name = os.path.split(os.fspath(path))
    tmp = os.path.join(parent, f".{name}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: StrPath) -> dict[str, Any] | None:
    """The object in ``path``, or None when it is absent, unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
