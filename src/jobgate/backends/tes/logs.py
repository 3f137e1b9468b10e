"""Live executor output of a remote TES task, read from its FULL view.

The spec's ``tesExecutorLog.stdout``/``stderr`` is a *tail* of the stream, so each read
fetches the task and passes on what follows the part already delivered (found by the
longest overlap between the end of that part and the start of the new tail). Reads are
spaced by ``interval``: the log endpoints ask every 0.1 s, the remote is asked far less.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

KEEP = 64 * 1024
"""Characters of the delivered text kept to find the overlap with the next tail."""

Fetch = Callable[[], Awaitable[dict[str, Any] | None]]


def new_part(delivered: str, tail: str) -> str:
    """What ``tail`` (the end of a stream) adds after ``delivered`` (its start, or the
    end of what was read so far)."""
    if tail.startswith(delivered):
        return tail[len(delivered) :]
    for k in range(min(len(delivered), len(tail)), 0, -1):
        if delivered.endswith(tail[:k]):
            return tail[k:]
    return tail  # no overlap: more was written between two reads than a tail holds


def stream_of(task: dict[str, Any], executor: int, stream: str) -> str | None:
    """The executor's ``stream`` tail in a FULL task document (None if not there yet)."""
    logs = task.get("logs")
    if not isinstance(logs, list) or not logs or not isinstance(logs[-1], dict):
        return None
    entries = logs[-1].get("logs")
    if not isinstance(entries, list) or executor >= len(entries):
        return None
    entry = entries[executor]
    value = entry.get(stream) if isinstance(entry, dict) else None
    return value if isinstance(value, str) else None


class RemoteLogReader:
    """A ``LogReader`` over one executor stream of a remote task."""

    def __init__(self, fetch: Fetch, executor: int, stream: str, *, interval: float) -> None:
        self.fetch = fetch
        self.executor = executor
        self.stream = stream
        self.interval = interval
        self._delivered = ""
        self._pending = b""
        self._next = 0.0

    async def read(self, size: int) -> bytes:
        if not self._pending and time.monotonic() >= self._next:
            self._next = time.monotonic() + self.interval
            task = await self.fetch()
            tail = stream_of(task, self.executor, self.stream) if task else None
            if tail:
                fresh = new_part(self._delivered, tail)
                self._delivered = (self._delivered + fresh)[-KEEP:]
                self._pending = fresh.encode()
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def close(self) -> None:
        self._pending = b""
