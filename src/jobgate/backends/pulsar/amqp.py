"""The Pulsar backend over its message queue (``pulsar/messaging/bind_amqp.py``).

A Pulsar server with ``message_queue_url`` consumes, per manager, the queues
``<prefix>_setup`` (a job to launch: the same dict as the REST submit) and
``<prefix>_kill`` (``{"job_id": …}``), and publishes every state change of its jobs to
``<prefix>_status_update`` (the status dict of the REST ``/status``), all on the durable
direct exchange ``pulsar`` with the queue's name as routing key; ``<prefix>`` is
``pulsar_`` for the manager ``_default_``, else ``pulsar_<manager>_``.

The files still travel over REST (setup, the task tar up, the result tar down). Status
comes from the queue; the REST poll remains as a safety net for lost messages, at most
every ``safety_interval`` seconds per job. One gateway should own a manager's
``status_update`` queue: updates of jobs it does not follow are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from jobgate.backends.base import BackendStatus
from jobgate.backends.pulsar.backend import PulsarBackend, PulsarConfig
from jobgate.backends.pulsar.client import PulsarError
from jobgate.domain.states import State

log = logging.getLogger(__name__)

EXCHANGE = "pulsar"
_ACTIVE = frozenset({State.INITIALIZING, State.QUEUED, State.RUNNING})


def queue_prefix(manager: str) -> str:
    return "pulsar_" if manager == "_default_" else f"pulsar_{manager}_"


class AmqpPulsarBackend(PulsarBackend):
    def __init__(
        self,
        config: PulsarConfig,
        amqp_url: str,
        *,
        name: str = "pulsar",
        safety_interval: float = 30.0,
    ) -> None:
        super().__init__(config, name=name)
        self.amqp_url = amqp_url
        self.safety_interval = safety_interval
        self.prefix = queue_prefix(config.manager)
        self._conn: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._lock = asyncio.Lock()
        self._checked: dict[str, float] = {}
        """Per Pulsar job: when REST was last asked about it (monotonic)."""
        self._cancelling: set[str] = set()
        """Jobs killed but not seen final yet: REST is asked at every poll."""
        self._nudger: asyncio.Task[None] | None = None

    async def _ensure(self) -> AbstractExchange:
        async with self._lock:
            if self._exchange is None:
                try:
                    self._conn = await aio_pika.connect_robust(self.amqp_url, timeout=10)
                    self._channel = await self._conn.channel(publisher_confirms=True)
                    self._exchange = await self._channel.declare_exchange(
                        EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
                    )
                except Exception as exc:  # aio-pika raises many kinds; all mean "not now"
                    await self._drop()
                    raise PulsarError(
                        f"message queue {_safe(self.amqp_url)} unreachable: {exc!r}",
                        transient=True,
                    ) from None
            return self._exchange

    async def _drop(self) -> None:
        conn, self._conn, self._channel, self._exchange = self._conn, None, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _publish(self, queue: str, body: dict[str, Any]) -> None:
        exchange = await self._ensure()
        key = f"{self.prefix}_{queue}"
        message = aio_pika.Message(
            json.dumps(body).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await exchange.publish(message, routing_key=key, timeout=10)
        except Exception as exc:
            raise PulsarError(
                f"publishing to {key} on {_safe(self.amqp_url)} failed: {exc!r}", transient=True
            ) from None

    async def _launch(
        self,
        pid: str,
        command: str,
        params: dict[str, Any],
        env: list[dict[str, str]],
        remote_staging: dict[str, Any],
    ) -> None:
        # Pulsar ignores a second setup message of a job it has launched (a redelivery),
        # so a publish whose confirmation was lost may be sent again.
        body = {
            "job_id": pid,
            "command_line": command,
            "submit_params": params,
            "env": env,
            "remote_staging": remote_staging,
        }
        await self._publish("setup", body)
        self._checked[pid] = time.monotonic()

    async def cancel(self, native_id: str) -> None:
        try:
            await self._publish("kill", {"job_id": native_id})
        except PulsarError as exc:
            log.warning("kill message for %s not sent (%s): cancelling over REST", native_id, exc)
            await super().cancel(native_id)
        # Pulsar publishes no update for a killed job: REST says when it is cancelled.
        self._cancelling.add(native_id)
        if self._nudger is None or self._nudger.done():
            self._nudger = asyncio.get_running_loop().create_task(self._nudge())

    async def _nudge(self) -> None:
        """Poll soon and often while cancels wait for Pulsar to confirm them."""
        while self._cancelling:
            await asyncio.sleep(0.3)
            self.changed.set()

    def updates(self) -> AsyncIterator[dict[str, BackendStatus]]:
        return self._updates()

    async def _updates(self) -> AsyncIterator[dict[str, BackendStatus]]:
        queue_name = f"{self.prefix}_status_update"
        await self.check_health()
        while True:
            try:
                await self._ensure()
                assert self._channel is not None and self._exchange is not None
                queue = await self._channel.declare_queue(queue_name, durable=True)
                await queue.bind(self._exchange, routing_key=queue_name)
                async with queue.iterator() as messages:
                    async for message in messages:
                        batch = await self._message(message.body)
                        await message.ack()
                        if batch:
                            yield batch
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("status updates from %s stopped (%r); reconnecting", queue_name, exc)
                await self._drop()
                await asyncio.sleep(2)

    async def _message(self, body: bytes) -> dict[str, BackendStatus]:
        try:
            raw = json.loads(body)
            pid = str(raw["job_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed status update: %r", body[:200])
            return {}
        try:
            return {pid: await self.on_status(pid, raw)}
        except PulsarError as exc:
            # The results could not be fetched now: the safety-net poll tries again.
            log.warning("status update of %s not applied: %s", pid, exc)
            self._checked.pop(pid, None)
            return {}

    async def poll(self, native_ids: Sequence[str]) -> dict[str, BackendStatus]:
        now = time.monotonic()
        due = [
            p
            for p in native_ids
            if p in self._cancelling or now - self._checked.get(p, 0.0) >= self.safety_interval
        ]
        for pid in due:
            self._checked[pid] = now
        out = await self._poll_many(due) if due else {}
        self._cancelling -= {p for p, st in out.items() if st.state not in _ACTIVE}
        for pid in native_ids:
            if pid not in out:
                out[pid] = (
                    self._final.get(pid)
                    or self._last.get(pid)
                    or BackendStatus(State.QUEUED, detail="Pulsar: submitted")
                )
        return out

    def forget(self, native_id: str) -> None:
        self._checked.pop(native_id, None)
        self._cancelling.discard(native_id)
        super().forget(native_id)

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "pulsar_transport": "amqp"}

    async def close(self) -> None:
        self._cancelling.clear()
        if self._nudger is not None:
            self._nudger.cancel()
        await super().close()
        await self._drop()


def _safe(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://…@{rest.rsplit('@', 1)[1]}"
