"""Runs a task's transfers: a shared limit on transfers at once, retries, and errors that
name the URL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from jobgate.errors import StagingError
from jobgate.observability import metrics
from jobgate.staging.base import Store
from jobgate.staging.transfer import RetryPolicy, describe

T = TypeVar("T")


class Mover:
    """``parallel`` transfers at once across every task that shares this mover."""

    def __init__(self, parallel: int, retry: RetryPolicy) -> None:
        self.slots = asyncio.Semaphore(parallel)
        self.retry = retry

    async def attempt(self, what: str, store: Store, rel: str, op: Callable[[], Awaitable[T]]) -> T:
        """``op`` with retries; any failure becomes a :class:`StagingError` that names
        ``what`` ("input"/"output") and the URL of ``rel`` in ``store``."""
        try:
            return await self.retry.run(op)
        except Exception as exc:
            raise StagingError(f"{what} {store.url_of(rel)}: {describe(exc)}") from exc

    async def transfer(
        self, what: str, store: Store, rel: str, op: Callable[[], Awaitable[T]]
    ) -> T:
        """As :meth:`attempt`, holding one of the shared transfer slots. Counts the bytes
        (``op``'s result, when an int) and the failures by direction and scheme."""
        direction = "in" if what == "input" else "out"
        scheme = metrics.scheme_label(store.url)
        async with self.slots:
            try:
                result = await self.attempt(what, store, rel, op)
            except StagingError:
                metrics.STAGING_ERRORS.labels(direction, scheme).inc()
                raise
        if isinstance(result, int):
            metrics.STAGING_BYTES.labels(direction, scheme).inc(result)
        return result
