"""Webhooks: every state change of a job with a ``callback`` URL is POSTed to that URL.

What a receiver gets
    A JSON body ``{"event_seq", "job_id", "state", "previous_state", "detail", "time",
    "source", "app_status", "name", "labels"}`` (``previous_state`` is null for the creation
    event; ``name``/``labels`` are the job's when the event was routed) with the headers

    - ``X-Jobgate-Event-Id``: the event's sequence number (``event_seq``) — deliveries
      are at least once, so receivers drop ids they have already seen;
    - ``X-Jobgate-Signature-256: sha256=<hex>``: HMAC-SHA256 over the raw body, keyed with
      the UTF-8 bytes of the webhook secret (``JOBGATE_WEBHOOK_SECRET``; when unset, a
      random one generated at the first start and kept in ``<data dir>/webhook-secret``);
    - ``X-Jobgate-Delivery-Attempt``: 1 for the first try of this event, 2 for the next, …

Delivery
    A 2xx answer delivers the event. Connection errors, timeouts, 408, 429 and 5xx answers
    are retried after ``webhook_backoff · 2^(n-1)`` seconds (with jitter, capped at
    ``webhook_backoff_max``; a ``Retry-After`` in seconds is honoured up to that cap), at
    most ``webhook_max_attempts`` times in all. Any other answer (4xx, or 3xx: redirects are
    not followed) gives the event up at once. A given-up event is logged and skipped; the
    job's next event follows. A job whose stored row cannot be read has its events given
    up (logged) rather than holding up the batch they were routed in. One job's events go
    out one at a time, in order; jobs are independent of each other, so a slow receiver
    only delays its own jobs. At most
    :data:`MAX_IN_FLIGHT` requests are open at once.

Never in the way of dispatch
    The store publishes committed events to the in-process :class:`EventBus` without
    waiting; one consumer task here routes them (one small store read per batch, for jobs
    whose callback it does not know yet) to per-job delivery tasks.

Restarts
    The database's ``webhooks`` cursor (the ``cursors`` table; before it,
    ``<data dir>/webhooks.cursor``, taken over once) holds a sequence number S such that
    every event up to S was delivered or given up, so whichever process sends next, on any
    host, resumes from it. It is written about once a second and at shutdown. At start,
    the events after S are read back from the store and delivered before live ones, so a
    restart or crash loses no event; events delivered after the last cursor write are sent
    again (hence the dedup on ``X-Jobgate-Event-Id``). The very first start begins at the
    newest event: history from before webhooks were enabled is not sent. One gap remains on
    PostgreSQL, where concurrent transactions may commit out of sequence order: an event
    that commits after a higher-numbered one was delivered and saved, and is not delivered
    before a crash, is not read back.

Other formats
    A front end that serves another API's callbacks (psik_api's) stores ``_hook:
    {"format": NAME, ...}`` in the job's spec and gives the sender a :class:`Format` under
    that NAME: it renders the body and headers of each event, or skips an event its API
    would not report. Delivery, retries, ordering and the host checks stay as above; the
    event-id and attempt headers are sent with every format.

Callback hosts
    Callback URLs are http(s) without a user name or password, to global addresses only,
    as for staging (:mod:`jobgate.staging.guard`): loopback, private, link-local, metadata
    and other non-global addresses are refused unless the operator lists the host (or
    ``host:port``) in ``JOBGATE_WEBHOOK_ALLOWED_HOSTS``. Submission refuses addresses and
    loopback names (400); every delivery resolves the name, checks every address it
    resolves to and connects to a checked one. A refused delivery is given up at once
    (logged with the reason, not retried); the job's other events are tried as usual.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import random
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
from pydantic import SecretStr

from jobgate import __version__
from jobgate.config import Settings
from jobgate.domain import jsontext
from jobgate.domain.models import JobEvent, rfc3339
from jobgate.observability import metrics
from jobgate.service.events import EventBus, Overflow, Subscription
from jobgate.staging.guard import Guard, GuardedTransport, Refused
from jobgate.staging.urls import redact
from jobgate.store.access import Database
from jobgate.store.jobs import JobStore, NewJob
from jobgate.store.webhooks import (
    Target,
    callback_targets,
    load_cursor,
    max_event_seq,
    save_cursor,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Jobgate-Signature-256"
EVENT_ID_HEADER = "X-Jobgate-Event-Id"
ATTEMPT_HEADER = "X-Jobgate-Delivery-Attempt"
ALLOWED_HOSTS_SETTING = "JOBGATE_WEBHOOK_ALLOWED_HOSTS"
SECRET_FILE = "webhook-secret"
CURSOR_FILE = "webhooks.cursor"
MAX_IN_FLIGHT = 32
CURSOR_INTERVAL = 1.0
_BATCH = 1000
_NO_CALLBACK_MEMORY = 50_000  # job ids known to have no callback (an LRU)
_SEEN_MEMORY = 20_000  # (job id, seq) pairs routed: covers a replay overlapping the live feed


# -- pure parts --------------------------------------------------------------------------


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value for ``body``: ``sha256=`` + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """What a receiver does: compare in constant time against the header it got."""
    return hmac.compare_digest(sign(secret, body), header)


def payload(event: JobEvent, target: Target) -> bytes:
    """The request body for ``event``: compact JSON, signed as these exact bytes."""
    body = {
        "event_seq": event.seq,
        "job_id": event.job_id,
        "state": event.to_state,
        "previous_state": event.from_state,
        "detail": event.detail,
        "time": rfc3339(event.at),
        "source": event.source,
        "app_status": event.app_status,
        "name": target.name,
        "labels": target.labels,
    }
    return jsontext.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class Format(Protocol):
    """Another API's callback body: ``(body, headers)`` for an event, None to skip it."""

    def render(self, event: JobEvent, target: Target) -> tuple[bytes, dict[str, str]] | None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff: float = 1.0
    backoff_max: float = 300.0
    timeout: float = 10.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max)
        full = min(self.backoff * 2.0 ** (attempt - 1), self.backoff_max)
        # Jitter: receivers that failed together don't all come back at the same instant.
        return full * (0.5 + random.random() / 2)


def retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _retry_after(value: str | None) -> float | None:
    # Only the delta-seconds form; an HTTP date falls back to our own backoff.
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) else None


def webhook_guard(settings: Settings) -> Guard:
    """The SSRF guard for callback URLs, with the operator's allow-list."""
    return Guard.from_entries(settings.webhook_allowed_hosts, ALLOWED_HOSTS_SETTING)


def refusal(url: str, guard: Guard) -> str | None:
    """Why ``url`` is no callback to send to, as far as is known without DNS (or None).

    Submission checks the same; this covers callbacks stored before those checks existed.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"not a valid URL: {exc}"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "not an http(s) URL"
    if parsed.userinfo:
        return "a callback URL must not carry a user name or password"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return guard.precheck(parsed.host, port)


# -- files under the data directory --------------------------------------------------------


def load_secret(data_dir: Path, configured: SecretStr | None = None) -> bytes:
    """The signing key: ``configured`` if set, else the one kept in ``data_dir``.

    Generated (32 random bytes, hex) at the first start and never changed, so signatures
    stay valid across restarts. Created atomically: two processes starting at once agree.
    """
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value().encode()
    path = data_dir / SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if another process won the race: use its secret
            log.warning("generated a webhook signing secret in %s (give it to receivers)", path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    value = path.read_text().strip()
    if not value:
        raise RuntimeError(f"{path} is empty: delete it or set JOBGATE_WEBHOOK_SECRET")
    return value.encode()


class Cursor:
    """A sequence number in a file, replaced atomically (write, fsync, rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The periodic save and the final one at stop may run in two threads at once;
        # they share the temporary file.
        self._lock = threading.Lock()

    def load(self) -> int | None:
        """The saved number, or None when there is none (or it is unreadable)."""
        try:
            return int(self.path.read_text().strip())
        except FileNotFoundError:
            return None
        except ValueError:
            log.error("%s is corrupt; webhooks resume from the newest event", self.path)
            return None

    def save(self, seq: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with self._lock:
            with tmp.open("w") as f:
                f.write(f"{seq}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)


class StoredCursor:
    """The cursor in the database, shared by every process that may send; a ``legacy``
    file's number is taken over when the database holds none yet."""

    def __init__(self, db: Database, name: str = "webhooks", legacy: Cursor | None = None) -> None:
        self.db = db
        self.name = name
        self.legacy = legacy

    async def load(self) -> int | None:
        seq = await load_cursor(self.db, self.name)
        if seq is None and self.legacy is not None:
            seq = await asyncio.to_thread(self.legacy.load)
        return seq

    async def save(self, seq: int) -> None:
        await save_cursor(self.db, self.name, seq)


# -- the sender ----------------------------------------------------------------------------


class _Stopping(Exception):
    """The sender is stopping: leave the event for the next start."""


@dataclass(eq=False)
class _JobQueue:
    """One job's undelivered events, oldest first, and the task delivering them."""

    items: deque[tuple[JobEvent, Target]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    sending: bool = False
    """A request is open (not waiting between attempts): worth letting finish at stop."""


class _LruSet:
    """A set that forgets its oldest members beyond ``size``."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[object, None] = OrderedDict()
        self._size = size

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def add(self, item: object) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        if len(self._items) > self._size:
            self._items.popitem(last=False)


class Webhooks:
    """Delivers job events to callback URLs; see the module docstring for the contract.

    ``start`` resumes from the cursor and returns at once; ``stop`` lets deliveries in
    progress finish for up to ``grace`` seconds, then saves the cursor.
    """

    def __init__(
        self,
        store: JobStore,
        bus: EventBus,
        *,
        secret: bytes,
        cursor: Cursor | StoredCursor,
        policy: RetryPolicy | None = None,
        guard: Guard | None = None,
        formats: Mapping[str, Format] | None = None,
    ) -> None:
        """``guard`` decides which hosts may be sent to (default: global addresses only);
        ``formats`` render the callbacks of jobs whose spec names one in ``_hook``."""
        self.store = store
        self.formats = dict(formats or {})
        self.bus = bus
        self.secret = secret
        self.cursor = cursor
        self.policy = policy or RetryPolicy()
        self.guard = guard or Guard(setting=ALLOWED_HOSTS_SETTING)
        # No redirects: a 3xx would turn the POST into a GET to a host nobody chose.
        self.http = httpx.AsyncClient(
            transport=GuardedTransport(self.guard, httpx.AsyncHTTPTransport()),
            timeout=self.policy.timeout,
            follow_redirects=False,
            trust_env=False,  # a proxy would connect on our behalf, past the guard
            headers={"User-Agent": f"jobgate/{__version__}"},
        )
        self._jobs: dict[str, _JobQueue] = {}
        self._outstanding: set[int] = set()
        self._no_callback = _LruSet(_NO_CALLBACK_MEMORY)
        # Jobs created in this process are known at once: their events need no lookup.
        store.creating.append(self._created)
        self._seen = _LruSet(_SEEN_MEMORY)
        self._routed = 0
        self._saved: int | None = None
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @classmethod
    def from_settings(
        cls,
        store: JobStore,
        bus: EventBus,
        settings: Settings,
        formats: Mapping[str, Format] | None = None,
    ) -> Webhooks:
        return cls(
            store,
            bus,
            secret=load_secret(settings.data_dir, settings.webhook_secret),
            cursor=StoredCursor(store.db, legacy=Cursor(settings.data_dir / CURSOR_FILE)),
            policy=RetryPolicy(
                max_attempts=settings.webhook_max_attempts,
                backoff=settings.webhook_backoff,
                backoff_max=settings.webhook_backoff_max,
                timeout=settings.webhook_timeout,
            ),
            guard=webhook_guard(settings),
            formats=formats,
        )

    async def start(self) -> None:
        saved = await self._load_cursor()
        newest = await max_event_seq(self.store.db)
        if saved is not None and saved > newest:
            # Not this database's cursor (a new or restored database under the same data
            # dir): numbers below it would be skipped. Start at its newest event instead.
            log.warning("webhook cursor %d is past the newest event %d; reset", saved, newest)
            saved = None
        if saved is None:
            saved = newest
            await self._save_cursor(saved)
        self._routed = self._saved = saved
        self._tasks = [
            asyncio.create_task(self._route_forever(), name="webhooks-router"),
            asyncio.create_task(self._save_forever(), name="webhooks-cursor"),
        ]

    async def stop(self, grace: float = 2.0) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Requests under way get ``grace`` seconds; waits between attempts end now. What is
        # not delivered stays below the cursor and is sent again after the restart.
        workers = [q.task for q in self._jobs.values() if q.task is not None]
        for q in self._jobs.values():
            if q.task is not None and not q.sending:
                q.task.cancel()
        if workers:
            _done, pending = await asyncio.wait(workers, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        await self._save()
        await self.http.aclose()

    @property
    def pending(self) -> int:
        """Events routed but not yet delivered or given up."""
        return len(self._outstanding)

    def watermark(self) -> int:
        """Every event up to this sequence number is delivered or given up."""
        return min(self._outstanding) - 1 if self._outstanding else self._routed

    def _created(self, new_jobs: Sequence[NewJob]) -> None:
        for job in new_jobs:
            # What :func:`callback_targets` would find: a target needs a string URL.
            if not isinstance(job.spec.get("callback"), str):
                self._no_callback.add(job.id)

    # -- routing -----------------------------------------------------------------------

    async def _route_forever(self) -> None:
        while True:
            try:
                async with self.bus.subscribe() as sub:
                    # Subscribed first, then read back: nothing falls between the two;
                    # what both deliver is dropped by ``_seen``.
                    await self._catch_up(self._routed)
                    await self._live(sub)
            except Overflow:
                log.warning("webhooks fell behind the event bus; reading back from the store")
            except Exception:
                log.exception("webhook routing failed; retrying from the store")
                await asyncio.sleep(1.0)

    async def _catch_up(self, after: int) -> None:
        while events := await self.store.events_after(after, limit=_BATCH):
            await self._route(events)
            after = max(after, *(e.seq or 0 for e in events))

    async def _live(self, sub: Subscription) -> None:
        while True:
            first = await self.bus.next(sub)
            batch = [] if first is None else [first]
            while len(batch) < _BATCH:
                try:
                    event = sub.queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if event is not None:
                    batch.append(event)
            await self._route(batch)
            if sub.overflowed:
                raise Overflow

    async def _route(self, events: Iterable[JobEvent]) -> None:
        # Keyed with the job id too: SQLite hands out a deleted newest event's seq again.
        fresh = [e for e in events if e.seq is not None and (e.job_id, e.seq) not in self._seen]
        if not fresh:
            return
        unknown = list({e.job_id: None for e in fresh if e.job_id not in self._no_callback})
        targets = await self._targets(unknown)
        for job_id in unknown:
            if job_id not in targets:
                # The callback is fixed at submission: a job without one never gains one.
                self._no_callback.add(job_id)
        for event in fresh:
            assert event.seq is not None
            self._seen.add((event.job_id, event.seq))
            self._routed = max(self._routed, event.seq)
            target = targets.get(event.job_id)
            if target is None or not target.url.startswith(("http://", "https://")):
                continue
            self._outstanding.add(event.seq)
            queue = self._jobs.get(event.job_id)
            if queue is None:
                queue = self._jobs[event.job_id] = _JobQueue()
                queue.task = asyncio.create_task(
                    self._drain(event.job_id, queue), name=f"webhooks-{event.job_id}"
                )
            queue.items.append((event, target))

    async def _targets(self, job_ids: list[str]) -> dict[str, Target]:
        """The callback targets of ``job_ids``; a job whose row cannot be read has none.

        One lookup for the batch; should it fail, one per job, so a single row the store
        cannot read gives up its own events (logged) and never stalls everybody else's.
        A store that fails even a trivial read is down, not holding a bad row: that raises,
        and the router retries the batch later.
        """
        try:
            return await callback_targets(self.store.db, job_ids)
        except Exception:
            log.exception("reading the callbacks of %d job(s) failed", len(job_ids))
        out: dict[str, Target] = {}
        bad: dict[str, str] = {}
        for job_id in job_ids:
            try:
                out.update(await callback_targets(self.store.db, [job_id]))
            except Exception as exc:
                bad[job_id] = f"{type(exc).__name__}: {exc}"
        if bad:
            await max_event_seq(self.store.db)  # raises while the store is unreachable
        for job_id, why in bad.items():
            log.error(
                "gave up the webhook events of job %s: its row cannot be read (%s)", job_id, why
            )
        return out

    # -- delivery ----------------------------------------------------------------------

    async def _drain(self, job_id: str, queue: _JobQueue) -> None:
        # The queue exists exactly as long as this task runs: the router appends to it or
        # starts a new one, and no await separates "empty" from "removed".
        while queue.items:
            event, target = queue.items[0]
            try:
                await self._deliver(event, target, queue)
            except _Stopping:
                return  # the event stays undelivered (and below the cursor)
            except Exception:
                log.exception("webhook for event %s of job %s failed", event.seq, job_id)
            queue.items.popleft()
            self._outstanding.discard(event.seq or 0)
        del self._jobs[job_id]

    async def _deliver(self, event: JobEvent, target: Target, queue: _JobQueue) -> bool:
        """POST ``event`` until it is accepted or the policy gives up; True if delivered
        (or skipped by its format)."""
        rendered = self._render(event, target)
        if rendered is None:
            return True
        body, headers = rendered
        headers[EVENT_ID_HEADER] = str(event.seq)
        policy = self.policy
        refused = refusal(target.url, self.guard)
        why = f"refused: {refused}" if refused else ""
        for attempt in range(1, (0 if refused else policy.max_attempts) + 1):
            retry_after = None
            if self._stopping:
                raise _Stopping
            try:
                queue.sending = True
                async with (
                    self._slots,
                    asyncio.timeout(policy.timeout),
                    self.http.stream(
                        "POST",
                        target.url,
                        content=body,
                        headers={**headers, ATTEMPT_HEADER: str(attempt)},
                    ) as resp,
                ):
                    status = resp.status_code  # the body is not read: nobody needs it
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
            except Refused as exc:
                why = str(exc)  # "<host> resolves to <address>, which is …: refused (…)"
                break  # the same answer next time: not retried
            except (httpx.HTTPError, TimeoutError) as exc:
                why = f"{type(exc).__name__}: {exc}".rstrip(": ")
                metrics.WEBHOOK_ATTEMPTS.labels("error").inc()
            else:
                if 200 <= status < 300:
                    metrics.WEBHOOK_ATTEMPTS.labels("ok").inc()
                    metrics.WEBHOOKS.labels("delivered").inc()
                    return True
                why = f"HTTP {status}"
                metrics.WEBHOOK_ATTEMPTS.labels("error").inc()
                if not retryable(status):
                    break
            finally:
                queue.sending = False
            if attempt < policy.max_attempts:
                if self._stopping:
                    raise _Stopping
                await asyncio.sleep(policy.delay(attempt, retry_after))
        metrics.WEBHOOKS.labels("failed").inc()
        log.warning(
            "gave up webhook event %s (job %s, %s) to %s: %s",
            event.seq,
            event.job_id,
            event.to_state,
            redact(target.url),
            why,
        )
        return False

    def _render(self, event: JobEvent, target: Target) -> tuple[bytes, dict[str, str]] | None:
        kind = (target.hook or {}).get("format")
        fmt = self.formats.get(kind) if isinstance(kind, str) else None
        if fmt is not None:
            return fmt.render(event, target)
        if kind is not None:
            log.warning(
                "job %s asks for webhook format %r, which is not served", event.job_id, kind
            )
        body = payload(event, target)
        return body, {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, body)}

    # -- cursor ------------------------------------------------------------------------

    async def _save_forever(self) -> None:
        while True:
            await asyncio.sleep(CURSOR_INTERVAL)
            try:
                await self._save()
            except Exception as exc:  # a file or the database: retried at the next tick
                log.error("cannot save the webhook cursor: %s", exc)

    async def _save(self) -> None:
        if self._saved is None:
            return  # never started: the cursor on disk stays as it is
        mark = self.watermark()
        if mark != self._saved:
            await self._save_cursor(mark)
            self._saved = mark

    async def _load_cursor(self) -> int | None:
        if isinstance(self.cursor, StoredCursor):
            return await self.cursor.load()
        return await asyncio.to_thread(self.cursor.load)

    async def _save_cursor(self, seq: int) -> None:
        if isinstance(self.cursor, StoredCursor):
            await self.cursor.save(seq)
        else:
            await asyncio.to_thread(self.cursor.save, seq)
