"""One thread hop (or one greenlet) per store operation, and one commit for many writes.

Store operations are plain synchronous functions over a SQLAlchemy ``Connection``. On
SQLite they run on dedicated threads with the stdlib driver (one writer thread — SQLite
has one writer anyway — and a few readers, which WAL lets run beside it); on PostgreSQL
they run through the async engine's ``run_sync``. Profiling showed async-per-statement
access costing 3 to 4 thread hops per statement on SQLite.

Writes are group-committed: while one write transaction runs, the writes queued behind it
wait, and the next transaction runs all of them, each in a SAVEPOINT of its own, with one
commit. A write that raises is rolled back to its savepoint alone; should the batch fail
as a whole (its commit, a savepoint), each of its writes is run again in a transaction of
its own. Either way a caller's write is committed when ``write`` returns, and not
before: its result is handed over only after the commit that holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine

from jobgate.observability.metrics import DB_COMMITS, DB_TRANSACTIONS
from jobgate.store.database import is_sqlite, json_dumps, sqlite_pragmas

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")
_READS = DB_TRANSACTIONS.labels("read")
_WRITES = DB_TRANSACTIONS.labels("write")
MAX_BATCH = 256
"""Most writes sharing one commit (bounds the time the first of them waits)."""


@dataclass(slots=True)
class _Write:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    value: Any = None
    error: BaseException | None = None


def _settle(done: list[_Write]) -> None:
    """On the caller's loop: hand each write its result (unless it gave up waiting)."""
    for w in done:
        if w.future.done():
            continue
        if w.error is not None:
            w.future.set_exception(w.error)
        else:
            w.future.set_result(w.value)
        w.error = None  # no reference cycle through the traceback


def _run_batch(conn: Connection, batch: list[_Write]) -> None:
    """Each write in a savepoint of ``conn``'s transaction; a write that raises is rolled
    back alone and keeps its exception. A savepoint that cannot be released or rolled
    back raises: the caller then runs the writes one by one."""
    for w in batch:
        savepoint = conn.begin_nested()
        try:
            w.value = w.fn(conn, *w.args, **w.kwargs)
        except Exception as exc:
            savepoint.rollback()
            w.value, w.error = None, exc
        else:
            savepoint.commit()


class Database:
    """Runs store functions; safe to share across tasks of one event loop."""

    def __init__(self, engine: AsyncEngine, *, sqlite_synchronous: str = "NORMAL") -> None:
        self.engine = engine
        self._sync: Engine | None = None
        self._queue: deque[_Write] = deque()
        self._pg_drain: asyncio.Task[None] | None = None
        if is_sqlite(engine):
            url = engine.url.set(drivername="sqlite+pysqlite")
            self._sync = create_engine(
                url,
                json_serializer=json_dumps,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=3,
                max_overflow=0,
            )
            sqlite_pragmas(self._sync, sqlite_synchronous)
            self._write_engine = create_engine(
                url,
                json_serializer=json_dumps,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=1,
                max_overflow=0,
            )
            sqlite_pragmas(self._write_engine, sqlite_synchronous)
            _explicit_transactions(self._write_engine)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="jobgate-db-write")
            self._readers = ThreadPoolExecutor(3, thread_name_prefix="jobgate-db-read")

    async def read(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, …)`` in a read transaction."""
        started = time.perf_counter()
        try:
            if self._sync is None:
                async with self.engine.connect() as conn:
                    return await conn.run_sync(fn, *args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(
                self._readers, self._read_sync, fn, args, kwargs
            )
        finally:
            _READS.observe(time.perf_counter() - started)

    async def write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, …)`` in a write transaction, committed when this returns.

        ``fn`` may share its transaction with other writes (each in its own savepoint)
        and may be run a second time, in a transaction of its own, when the shared one
        fails: it must depend only on its arguments and the database.
        """
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        w = _Write(fn, args, kwargs, loop, loop.create_future())
        self._queue.append(w)
        try:
            if self._sync is not None:
                self._writer.submit(self._drain_sqlite)
            elif self._pg_drain is None or self._pg_drain.done():
                self._pg_drain = loop.create_task(self._drain_pg(), name="jobgate-db-write")
            return await w.future  # type: ignore[no-any-return]
        finally:
            _WRITES.observe(time.perf_counter() - started)

    def _take(self) -> list[_Write]:
        # One consumer (the writer thread, or the drain task): popleft never races.
        batch: list[_Write] = []
        while self._queue and len(batch) < MAX_BATCH:
            batch.append(self._queue.popleft())
        return batch

    def _read_sync(self, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
        assert self._sync is not None
        with self._sync.begin() as conn:
            return fn(conn, *args, **kwargs)

    # -- SQLite: the writer thread --------------------------------------------------------

    def _drain_sqlite(self) -> None:
        # One drain is submitted per write; a drain finding the queue empty (an earlier one
        # took its write along) has nothing to do.
        batch = self._take()
        if not batch:
            return
        if len(batch) > 1:
            try:
                with self._write_engine.begin() as conn:
                    _run_batch(conn, batch)
                DB_COMMITS.inc()
            except Exception:
                log.warning("a group commit of %d writes failed; one by one", len(batch))
                for w in batch:
                    self._one_sqlite(w)
        else:
            self._one_sqlite(batch[0])
        by_loop: dict[asyncio.AbstractEventLoop, list[_Write]] = {}
        for w in batch:
            by_loop.setdefault(w.loop, []).append(w)
        for loop, done in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, done)

    def _one_sqlite(self, w: _Write) -> None:
        w.value = w.error = None
        try:
            with self._write_engine.begin() as conn:
                w.value = w.fn(conn, *w.args, **w.kwargs)
            DB_COMMITS.inc()
        except Exception as exc:
            w.value, w.error = None, exc

    # -- PostgreSQL: one connection at a time, on the event loop ---------------------------

    async def _drain_pg(self) -> None:
        while batch := self._take():
            if len(batch) > 1:
                try:
                    async with self.engine.begin() as conn:
                        await conn.run_sync(_run_batch, batch)
                    DB_COMMITS.inc()
                except Exception:
                    log.warning("a group commit of %d writes failed; one by one", len(batch))
                    for w in batch:
                        await self._one_pg(w)
            else:
                await self._one_pg(batch[0])
            _settle(batch)

    async def _one_pg(self, w: _Write) -> None:
        w.value = w.error = None
        try:
            async with self.engine.begin() as conn:
                w.value = await conn.run_sync(w.fn, *w.args, **w.kwargs)
            DB_COMMITS.inc()
        except Exception as exc:
            w.value, w.error = None, exc

    def close(self) -> None:
        if self._sync is not None:
            self._writer.shutdown(wait=True)
            self._readers.shutdown(wait=True)
            self._sync.dispose()
            self._write_engine.dispose()


def _explicit_transactions(engine: Engine) -> None:
    """The writer's transactions begin with ``BEGIN IMMEDIATE``, issued by us.

    The stdlib driver would begin a transaction only at the first INSERT/UPDATE/DELETE, so
    a SAVEPOINT before it would start one itself, and releasing it would commit. IMMEDIATE
    takes the write lock at once, where the busy timeout applies, rather than at a first
    write after reads, where another process's commit makes SQLite refuse it outright.
    """

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Straight to the driver: SQLAlchemy's execution path costs more than the statement.
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
