"""More than one process: `jobgate dispatcher`, and `jobgate serve --workers N`.

The processes share nothing but the database (and, on one host, the data directory):
API workers accept and read jobs, dispatchers claim and run them. A claim is a
compare-and-set; each dispatcher holds a lease (:mod:`jobgate.dispatcher.lease`), so a
dead one's jobs are adopted by another; submissions wake the dispatchers across processes
(:mod:`jobgate.service.wakeups`); every process's event bus is fed from the database
(:mod:`jobgate.service.eventtail`); one dispatcher at a time sends webhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from jobgate.api.app import (
    announce_auth,
    components,
    legacy_owners,
    make_dispatcher,
    make_webhooks,
    wake_dir,
)
from jobgate.auth.tokens import ServiceTokens
from jobgate.backends.choice import tasks_reach_data_dir
from jobgate.config import Settings
from jobgate.datadir import secure_data_dir
from jobgate.service.wakeups import WakeupListener
from jobgate.store.access import Database
from jobgate.store.database import make_engine, migrate
from jobgate.store.leases import Leases
from jobgate.store.tokens import TokenStore

log = logging.getLogger("jobgate")

WEBHOOKS_ROLE = "webhooks"
STOP_GRACE = 45.0
"""Seconds the supervisor waits for its children after SIGTERM before it kills them."""
RESTART_DELAY = 1.0
EARLY_EXIT = 5.0
"""A child that exits this soon after its start is broken (settings, a port): give up."""


async def prepare(settings: Settings) -> None:
    """What must happen once, before several processes start: the data directory, the
    schema's migration and the first admin token."""
    secure_data_dir(settings.data_dir, traversable=tasks_reach_data_dir(settings))
    engine = make_engine(settings.db_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        await migrate(engine, legacy_owner=legacy_owners(settings).full)
        db = Database(engine, sqlite_synchronous=settings.sqlite_synchronous)
        try:
            await announce_auth(settings, ServiceTokens(TokenStore(db)))
        finally:
            db.close()
    finally:
        await engine.dispose()


async def run_dispatcher(settings: Settings, stop: asyncio.Event) -> None:
    """Claim and run jobs until ``stop`` is set."""
    async with components(settings, shared=True) as c:
        dispatcher = make_dispatcher(settings, c)
        webhooks = make_webhooks(settings, c)
        listener = WakeupListener(
            c.engine,
            wake_dir(settings),
            dispatcher.id,
            dispatcher.job_submitted,
            dispatcher.cancel_requested,
        )
        await dispatcher.start()
        await listener.start()
        log.info(
            "jobgate dispatcher %s: database %s, backends %s",
            dispatcher.id,
            c.engine.url.render_as_string(hide_password=True),
            {n: b.describe() for n, b in c.backends.items()},
        )
        sending = False
        leases = Leases(c.db)
        try:
            while not stop.is_set():
                if not sending:
                    try:
                        sending = await leases.take_role(dispatcher.id, WEBHOOKS_ROLE)
                    except Exception:
                        log.exception("could not check the webhook role")
                    if sending:
                        log.info("this dispatcher sends the webhooks")
                        await webhooks.start()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(dispatcher.lease.interval):
                        await stop.wait()
        finally:
            await listener.stop()
            await dispatcher.stop()
            if sending:
                await webhooks.stop()


def dispatcher_main(settings: Settings) -> None:
    """`jobgate dispatcher`: run until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_dispatcher(settings, stop)

    asyncio.run(main())


class Supervisor:
    """`jobgate serve --workers N --dispatchers M`: starts the children, restarts one
    that dies, and passes SIGTERM/SIGINT on to all of them."""

    def __init__(self, workers: Sequence[list[str]], dispatchers: Sequence[list[str]]) -> None:
        self.commands = [*workers, *dispatchers]
        self.names = [f"worker {i}" for i in range(len(workers))] + [
            f"dispatcher {i}" for i in range(len(dispatchers))
        ]
        self.children: list[subprocess.Popen[bytes] | None] = [None] * len(self.commands)
        self.started = [0.0] * len(self.commands)
        self.stopping = False
        self.failed = False

    def _start(self, index: int) -> None:
        child = subprocess.Popen(self.commands[index])
        self.children[index] = child
        self.started[index] = time.monotonic()
        log.info("started %s (pid %d)", self.names[index], child.pid)

    def _signal(self, signum: int, _frame: object) -> None:
        self.stopping = True
        for child in self.children:
            if child is not None and child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        for index in range(len(self.commands)):
            self._start(index)
        while not self.stopping:
            time.sleep(0.2)
            for index, child in enumerate(self.children):
                if self.stopping or child is None or child.poll() is None:
                    continue
                if time.monotonic() - self.started[index] < EARLY_EXIT:
                    log.error(
                        "%s exited with status %s right after its start; stopping",
                        self.names[index],
                        child.returncode,
                    )
                    self.failed = True
                    self._signal(signal.SIGTERM, None)
                    break
                log.error(
                    "%s (pid %d) exited with status %s; starting it again",
                    self.names[index],
                    child.pid,
                    child.returncode,
                )
                time.sleep(RESTART_DELAY)
                if not self.stopping:
                    self._start(index)
        deadline = time.monotonic() + STOP_GRACE
        status = 1 if self.failed else 0
        for child in self.children:
            if child is None:
                continue
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("pid %d did not stop within %ss; killing it", child.pid, STOP_GRACE)
                child.kill()
                child.wait()
            if child.returncode not in (0, -signal.SIGTERM):
                status = 1
        return status


def child_command(args: Sequence[str]) -> list[str]:
    """The command line of a child process running ``jobgate args…``."""
    return [sys.executable, "-m", "jobgate", *args]


def child_environment(overrides: dict[str, object]) -> None:
    """Hand the command-line settings on to the children through the environment."""
    for key, value in overrides.items():
        if isinstance(value, bool):
            os.environ[f"JOBGATE_{key.upper()}"] = "true" if value else "false"
        else:
            os.environ[f"JOBGATE_{key.upper()}"] = str(value)
