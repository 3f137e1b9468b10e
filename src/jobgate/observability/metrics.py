"""The service's Prometheus metrics, one process-wide set in the default registry.

Every label takes values from a bounded set (states, backend names an operator configured,
URL schemes, route templates, HTTP statuses), so the number of series stays small whatever
users send. Recording is a dictionary lookup and an addition: cheap enough for hot paths.
The number of jobs per state is not counted here per request; a periodic grouped query
(``service/jobcounts.py``) sets it through :func:`set_job_counts`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Job latencies run from well under a second (local) to days (a batch queue).
_JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
# Calls to a backend, a database transaction, an HTTP request.
_CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Schemes that get their own label value; any other is "other" (bounded cardinality).
_SCHEMES = frozenset({"file", "http", "https", "s3", "ftp", "ftps", "sandbox", "content"})

SUBMISSIONS = Counter(
    "jobgate_submissions", "Jobs accepted (committed to the store), by backend.", ["backend"]
)
TRANSITIONS = Counter(
    "jobgate_transitions",
    "State changes recorded, by from and to state (from 'none' at creation).",
    ["from_state", "to_state"],
)
QUEUE_WAIT = Histogram(
    "jobgate_job_queue_wait_seconds",
    "Time from a job's creation to the dispatcher taking it from the gateway's queue.",
    ["backend"],
    buckets=_JOB_BUCKETS,
)
SUBMIT_LATENCY = Histogram(
    "jobgate_job_submit_latency_seconds",
    "Time from a job's creation to its backend accepting it.",
    ["backend"],
    buckets=_JOB_BUCKETS,
)
FIRST_RUN_LATENCY = Histogram(
    "jobgate_job_first_run_latency_seconds",
    "Time from a job's creation to the first time it is seen RUNNING.",
    ["backend"],
    buckets=_JOB_BUCKETS,
)
STAGING_BYTES = Counter(
    "jobgate_staging_bytes",
    "Bytes moved by data staging, by direction (in, out) and URL scheme.",
    ["direction", "scheme"],
)
STAGING_ERRORS = Counter(
    "jobgate_staging_errors",
    "Transfers that failed after their retries, by direction and URL scheme.",
    ["direction", "scheme"],
)
BACKEND_CALLS = Histogram(
    "jobgate_backend_call_seconds",
    "Duration of calls to a backend (submit, poll), by backend and call.",
    ["backend", "call"],
    buckets=_CALL_BUCKETS,
)
BACKEND_ERRORS = Counter(
    "jobgate_backend_errors",
    "Calls to a backend that raised, by backend and call.",
    ["backend", "call"],
)
WEBHOOKS = Counter(
    "jobgate_webhook_deliveries",
    "Webhook events handled, by outcome (delivered, failed: given up after the retries).",
    ["outcome"],
)
WEBHOOK_ATTEMPTS = Counter(
    "jobgate_webhook_attempts",
    "Webhook POSTs, by outcome (ok, error: connection error, timeout or non-2xx).",
    ["outcome"],
)
HTTP_REQUESTS = Counter(
    "jobgate_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "jobgate_http_request_seconds",
    "Time to answer an HTTP request (to the end of its body), by method and route template.",
    ["method", "route"],
    buckets=_CALL_BUCKETS,
)
DB_TRANSACTIONS = Histogram(
    "jobgate_db_transaction_seconds",
    "Duration of store transactions, by kind (read, write), waiting for a connection included.",
    ["kind"],
    buckets=_CALL_BUCKETS,
)
DB_COMMITS = Counter(
    "jobgate_db_commits",
    "Write transactions committed; several store writes share one under load (group commit).",
)


def scheme_label(url: str) -> str:
    """A URL's scheme as a label value (``other`` for any scheme not known here)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else "file"
    return scheme if scheme in _SCHEMES else "other"


def elapsed_since(start: datetime, end: datetime) -> float:
    """Seconds from ``start`` to ``end``, never negative (clocks of replicas may differ)."""
    return max(0.0, (end - start).total_seconds())


def count_transitions(events: Iterable[object]) -> None:
    """A store listener: count each recorded state change (events are ``JobEvent``s)."""
    for e in events:
        TRANSITIONS.labels(_state(getattr(e, "from_state", None)), _state(e.to_state)).inc()  # type: ignore[attr-defined]


def _state(state: object) -> str:
    """A state (an enum member or its value, as events hold either) as a label value."""
    return "none" if state is None else str(getattr(state, "value", state))


class _JobCounts(Collector):
    """``jobgate_jobs{backend,state}``: the last counts :func:`set_job_counts` gave."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._age: float | None = None

    def set(self, counts: Mapping[tuple[str, str], int], at: float) -> None:
        with self._lock:
            self._counts = dict(counts)
            self._age = at

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, at = dict(self._counts), self._age
        family = GaugeMetricFamily(
            "jobgate_jobs", "Jobs in the store, by backend and state.", labels=["backend", "state"]
        )
        for (backend, state), n in sorted(counts.items()):
            family.add_metric([backend, state], n)
        yield family
        updated = GaugeMetricFamily(
            "jobgate_jobs_counted_timestamp_seconds",
            "When jobgate_jobs was last counted (Unix time; 0 before the first count).",
        )
        updated.add_metric([], at or 0.0)
        yield updated


_JOBS = _JobCounts()
REGISTRY.register(_JOBS)


def set_job_counts(counts: Mapping[tuple[str, str], int], at: float) -> None:
    """Replace the per (backend, state) job counts, as counted at Unix time ``at``."""
    _JOBS.set(counts, at)
