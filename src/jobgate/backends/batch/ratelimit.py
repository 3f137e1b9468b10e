"""A token bucket with a pause: sites throttle bursts of sbatch, and say so when hit."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; :meth:`pause` stops all takers
    for a while (after the controller answered "Submission rate too high")."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._resume_at = 0.0
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        """Wait for one token (callers are served in arrival order)."""
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self._resume_at:
                    await asyncio.sleep(self._resume_at - now)
                    continue
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)

    def pause(self, seconds: float) -> None:
        """No token for ``seconds`` from now; the bucket restarts empty afterwards."""
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)
        self._tokens = 0.0
