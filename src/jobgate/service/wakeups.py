"""Wake-ups across processes: an API worker tells the dispatchers that a job was
submitted or a cancel was asked for, so they need not wait for their next poll.

On PostgreSQL through ``NOTIFY jobgate`` (every dispatcher ``LISTEN``s, on any host); on
SQLite, whose processes share one host, through UNIX datagram sockets, one per dispatcher
in ``<data dir>/run/wake/``. Either is only a hint: a dispatcher still polls the database
(``JOBGATE_POLL_INTERVAL``), so a lost wake-up delays a job, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

CHANNEL = "jobgate"
SUBMIT = "submit"
CANCEL = "cancel "


class Wakeups:
    """The service's dispatch notifier in a process that runs no dispatcher."""

    def __init__(self, engine: AsyncEngine, wake_dir: Path) -> None:
        self.engine = engine
        self.wake_dir = wake_dir
        self.postgres = engine.dialect.name == "postgresql"
        self._sock: socket.socket | None = None
        self._sending: asyncio.Task[None] | None = None
        self._again = False
        self._cancels: list[str] = []

    def job_submitted(self) -> None:
        if self.postgres:
            self._notify_soon()
        else:
            self._datagram(SUBMIT)

    def cancel_requested(self, job_id: str) -> None:
        if self.postgres:
            self._cancels.append(job_id)
            self._notify_soon()
        else:
            self._datagram(CANCEL + job_id)

    # -- PostgreSQL: one NOTIFY in flight; submissions meanwhile share the next one ------

    def _notify_soon(self) -> None:
        if self._sending is not None and not self._sending.done():
            self._again = True
            return
        self._sending = asyncio.get_running_loop().create_task(self._notify(), name="wake-up")

    async def _notify(self) -> None:
        try:
            while True:
                self._again = False
                cancels, self._cancels = self._cancels, []
                async with self.engine.begin() as conn:
                    await conn.execute(
                        text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": SUBMIT}
                    )
                    for job_id in cancels:
                        await conn.execute(
                            text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": CANCEL + job_id}
                        )
                if not self._again and not self._cancels:
                    return
        except Exception as exc:  # a hint only: the dispatchers' polls find the job
            log.warning("could not wake the dispatchers: %s", exc)

    # -- SQLite: a datagram to each dispatcher's socket -----------------------------------

    def _datagram(self, message: str) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        try:
            entries = list(os.scandir(self.wake_dir))
        except OSError:
            return  # no dispatcher has started yet
        data = message.encode()
        for entry in entries:
            try:
                self._sock.sendto(data, entry.path)
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:  # its dispatcher is gone
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                # EAGAIN: its queue is full, so it has wake-ups pending anyway


class WakeupListener:
    """A dispatcher's end: calls ``on_submit()`` and ``on_cancel(job_id)`` on the loop."""

    def __init__(
        self,
        engine: AsyncEngine,
        wake_dir: Path,
        name: str,
        on_submit: Callable[[], None],
        on_cancel: Callable[[str], None],
    ) -> None:
        self.engine = engine
        self.path = wake_dir / f"{name}.sock"
        self.on_submit = on_submit
        self.on_cancel = on_cancel
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    def _message(self, payload: str) -> None:
        if payload == SUBMIT:
            self.on_submit()
        elif payload.startswith(CANCEL):
            self.on_cancel(payload[len(CANCEL) :])

    async def start(self) -> None:
        if self.engine.dialect.name == "postgresql":
            self._task = asyncio.create_task(self._listen(), name="wake-up listener")
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.path))
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(512)
            except BlockingIOError:
                return
            except OSError:
                return
            self._message(data.decode(errors="replace"))

    async def _listen(self) -> None:
        url = self.engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, p: self._message(p))
                self.on_submit()  # anything submitted while not listening
                await lost.wait()
                log.warning("lost the wake-up connection to PostgreSQL; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot listen for wake-ups (%s); polling meanwhile", exc)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            with contextlib.suppress(OSError):
                self.path.unlink()


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _conn: event.set()
