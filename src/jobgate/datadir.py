"""The data directory's permissions: the service's files are for the service alone.

The database, logs, uploads, sandboxes and secrets hold every job's spec (environment
values, inline inputs, callback URLs with credentials) and output, so nothing under the
data directory is readable by other host users: directories 0700, files 0600 (the service
sets umask 077 for what it creates later).

Two exceptions, both readable only where nothing secret is: ``sandbox-etc`` (bwrap's
``/etc``: copies of world-readable host files, read inside every sandbox) keeps its modes;
and where executors run as task uids that reach their directory by its host path (the
``process`` runtime under a root service), the data and ``jobs`` directories are 0711:
traversable, not listable, and every task directory inside is closed to all but its uid.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

UMASK = 0o077
# Rebuilt at every start from world-readable host files; executors must read it.
PUBLIC_ENTRIES = frozenset({"sandbox-etc"})
JOBS_DIR = "jobs"


def _public(name: str) -> bool:
    # Also the copies beside sandbox-etc: one being built by another process, or one
    # replaced while running sandboxes may still show it as their /etc.
    return name in PUBLIC_ENTRIES or any(name.startswith(f".{p}-") for p in PUBLIC_ENTRIES)


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/jobgate`` (``~/.local/share/jobgate``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "jobgate"


def secure_data_dir(data_dir: Path, *, traversable: bool = False) -> list[str]:
    """Set umask 077, create ``data_dir`` (0700; 0711 if ``traversable``) and tighten
    what an earlier run or another tool left there: the directory itself and its entries
    (directories 0700, files lose all group and other bits; below them nothing is
    reachable any more). Returns what was changed, which is also logged once."""
    os.umask(UMASK)
    top_mode = 0o711 if traversable else 0o700
    data_dir.mkdir(parents=True, exist_ok=True, mode=top_mode)
    changed: list[str] = []
    _set(data_dir, top_mode, str(data_dir), changed)
    jobs = data_dir / JOBS_DIR
    if traversable and not jobs.exists():
        jobs.mkdir(mode=0o711)
    with os.scandir(data_dir) as entries:
        for entry in entries:
            if _public(entry.name) or entry.is_symlink():
                continue
            path = Path(entry.path)
            mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
            if entry.is_dir(follow_symlinks=False):
                want = 0o711 if traversable and entry.name == JOBS_DIR else 0o700
            else:
                want = mode & ~0o077
            _set(path, want, entry.name, changed, mode)
    if changed:
        log.warning(
            "restricted the permissions of the data directory %s: %s",
            data_dir,
            ", ".join(changed),
        )
    return changed


def closed_ancestor(path: Path) -> Path | None:
    """The first directory above ``path`` that other users cannot traverse, if any."""
    for parent in path.parents:
        try:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return parent
        except OSError:
            return parent
    return None


def _set(path: Path, want: int, label: str, changed: list[str], mode: int | None = None) -> None:
    if mode is None:
        mode = stat.S_IMODE(path.stat().st_mode)
    if mode != want:
        os.chmod(path, want)
        changed.append(f"{label} {mode:04o}->{want:04o}")
