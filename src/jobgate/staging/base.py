"""The contract each kind of storage implements for staging."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from jobgate.domain.models import FileType
from jobgate.staging.transfer import Budget
from jobgate.staging.urls import join, redact


@dataclass(frozen=True)
class Entry:
    """A file below a directory URL: its path relative to it (POSIX, unquoted)."""

    rel: str
    size: int | None = None


class Store(ABC):
    """One URL of a task (a file or a directory) on some storage.

    Methods raise plain exceptions (``FileNotFoundError``, connection errors, ...); the
    caller retries transient ones and turns the rest into a line naming the URL. ``rel``
    names a file below a directory URL; ``""`` is the URL itself.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = redact(url)

    def url_of(self, rel: str) -> str:
        """The URL of ``rel`` as logged (``logs.outputs``), password redacted."""
        return join(self.shown, rel)

    @abstractmethod
    async def kind(self) -> FileType:
        """FILE or DIRECTORY; ``FileNotFoundError`` if the URL names nothing."""

    @abstractmethod
    async def listing(self) -> list[Entry]:
        """Every file below a directory URL, recursively."""

    @abstractmethod
    async def download(self, rel: str, dest: Path, budget: Budget) -> int:
        """Write the file ``rel`` to the local file ``dest`` (replaced); returns its size."""

    @abstractmethod
    async def upload(self, src: Path, rel: str, budget: Budget) -> int:
        """Store the local file ``src`` as ``rel`` (parents created); returns its size."""
