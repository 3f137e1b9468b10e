"""Live views under ``/api/v1``: job events as Server-Sent Events, executors' output.

- ``GET /jobs/{id}/events/stream`` and ``GET /events/stream``: each state change as
  ``id: <seq>`` / ``event: state`` / ``data: <json>`` (the items of ``/jobs/{id}/events``).
  Resume with the ``Last-Event-ID`` header (what browsers send on reconnect) or
  ``?after=<seq>``; the header wins. A job's stream starts from its creation unless
  resumed and ends after its final state; the all-jobs stream starts live unless resumed.
  A comment line is sent at once (the stream is live from then on) and every
  ``JOBGATE_SSE_HEARTBEAT`` idle seconds.
- ``GET /jobs/{id}/logs?stream=stdout|stderr&executor=N&follow=true``: the executor's
  output; with ``follow`` the response goes on until the job is final.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse

from jobgate.api.deps import Services, services
from jobgate.api.jobs import event_view
from jobgate.api.security import Acc
from jobgate.domain import jsontext
from jobgate.domain.models import JobEvent
from jobgate.errors import InvalidRequest
from jobgate.service.feed import follow_events
from jobgate.service.jobs import MAX_SEQ
from jobgate.service.logs import Stream

Svc = Annotated[Services, Depends(services)]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)]
After = Annotated[int | None, Query(ge=0, le=MAX_SEQ, description="resume after this event seq")]
NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
EVENT_DATA = {
    "type": "object",
    "required": ["seq", "job_id", "at", "state", "source"],
    "properties": {
        "seq": {"type": "integer"},
        "job_id": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
        "from_state": {"anyOf": [{"$ref": "#/components/schemas/State"}, {"type": "null"}]},
        "state": {"$ref": "#/components/schemas/State"},
        "detail": {"type": ["string", "null"]},
        "app_status": {"type": ["string", "null"]},
        "source": {"type": "string"},
    },
}
SSE_EVENT = {
    # Under text/event-stream, an OpenAPI 3.1 schema describes one event of the stream.
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "description": "the event's seq: resume after it"},
        "event": {"const": "state"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": EVENT_DATA,
        },
    },
}
SSE_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One `state` event per state change (and `:` comment heartbeats)",
        "content": {"text/event-stream": {"schema": SSE_EVENT}},
    }
}
LOG_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The executor's output as text",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


def resume_point(last_event_id: str | None, after: int | None) -> int | None:
    """``Last-Event-ID`` if sent (a browser reconnecting), else ``after``."""
    if last_event_id is None or not last_event_id.strip():
        return after
    try:
        value = int(last_event_id)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEQ:
        raise InvalidRequest(
            "invalid Last-Event-ID",
            errors=[{"where": "header.Last-Event-ID", "what": "an event seq from this stream"}],
        )
    return value


def sse(event: JobEvent | None) -> bytes:
    """One SSE message; ``None`` is a heartbeat comment."""
    if event is None:
        return b": keep-alive\n\n"
    data = jsontext.dumps(event_view(event), separators=(",", ":"), ensure_ascii=False, default=str)
    return f"id: {event.seq}\nevent: state\ndata: {data}\n\n".encode()


def _event_stream(feed: AsyncIterator[JobEvent | None]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        async for event in feed:
            yield sse(event)

    return StreamingResponse(body(), media_type="text/event-stream", headers=NO_BUFFERING)


def make_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["streams"])

    @router.get(
        "/jobs/{job_id}/events/stream",
        summary="A job's state changes as Server-Sent Events, until its final state",
        response_class=StreamingResponse,
        responses=SSE_ANSWER,
    )
    async def job_events(
        job_id: str,
        svc: Svc,
        acc: Acc,
        last_event_id: LastEventId = None,
        after: After = None,
    ) -> StreamingResponse:
        await acc.job(job_id)  # a 404 before the stream starts
        start = resume_point(last_event_id, after)
        feed = follow_events(
            svc.jobs.store,
            svc.events,
            after=0 if start is None else start,
            job_id=job_id,
            heartbeat=svc.settings.sse_heartbeat,
        )
        return _event_stream(feed)

    @router.get(
        "/events/stream",
        summary="State changes of all the caller's jobs as Server-Sent Events",
        response_class=StreamingResponse,
        responses=SSE_ANSWER,
    )
    async def all_events(
        svc: Svc, acc: Acc, last_event_id: LastEventId = None, after: After = None
    ) -> StreamingResponse:
        feed = follow_events(
            svc.jobs.store,
            svc.events,
            after=resume_point(last_event_id, after),
            owner=acc.policy.events_owner(acc.caller),
            heartbeat=svc.settings.sse_heartbeat,
        )
        return _event_stream(feed)

    @router.get(
        "/jobs/{job_id}/logs",
        summary="An executor's stdout or stderr; follow=true streams it until the job ends",
        response_class=StreamingResponse,
        responses=LOG_ANSWER,
    )
    async def logs(
        job_id: str,
        svc: Svc,
        acc: Acc,
        stream: Stream = "stdout",
        follow: bool = False,
        executor: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    ) -> StreamingResponse:
        await acc.job(job_id)
        job = await svc.logs.check(job_id, executor)
        return StreamingResponse(
            svc.logs.read(job, executor, stream, follow=follow),
            media_type="text/plain; charset=utf-8",
            headers=NO_BUFFERING,
        )

    return router
