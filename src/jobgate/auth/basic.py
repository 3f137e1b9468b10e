"""HTTP basic users from a file, for small sites.

One user per line, ``name:bcrypt-hash[:group,group]``; ``#`` starts a comment. Apache's
``htpasswd -B`` writes compatible lines (without groups); ``jobgate user set`` writes them
with groups. The file is read again when it changes, so users can be added without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from jobgate.auth.identity import Caller, Scope, expand, plain_group
from jobgate.auth.namespaces import BASIC, GroupRule, qualify
from jobgate.auth.secrets import write_private

CACHE_SECONDS = 300.0
"""How long a checked password is remembered (bcrypt costs ~0.2 s a check, on purpose)."""


@dataclass(frozen=True, slots=True)
class BasicUser:
    name: str
    password_hash: bytes
    groups: frozenset[str]


class UsersFileError(ValueError):
    """The users file has a line that is not ``name:hash[:groups]``."""


def parse_users(text: str, source: str = "users file") -> dict[str, BasicUser]:
    users: dict[str, BasicUser] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("$2"):
            raise UsersFileError(f"{source} line {n}: expected name:bcrypt-hash[:groups]")
        groups = frozenset(plain_group(g) for g in (parts[2] if len(parts) == 3 else "").split(","))
        users[parts[0]] = BasicUser(parts[0], parts[1].encode(), groups - {""})
    return users


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def set_user(path: Path, name: str, password: str, groups: list[str]) -> None:
    """Add or replace ``name`` in the users file (created 0600 if missing)."""
    if not name or any(c in name for c in ":\n") or any(c in ",:\n" for g in groups for c in g):
        raise UsersFileError("user and group names must not contain ':', ',' or newlines")
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    entry = f"{name}:{hash_password(password)}"
    if groups:
        entry += ":" + ",".join(groups)
    kept = [ln for ln in lines if ln.split(":", 1)[0].strip() != name]
    write_private(path, "\n".join([*kept, entry]) + "\n")


class BasicUsers:
    """Checks ``Authorization: Basic`` credentials against the users file.

    The caller is ``basic:<user>``; their groups (the operator's own) stay bare.
    """

    def __init__(self, path: Path, admin_groups: GroupRule) -> None:
        self.path = path
        self.admin_groups = admin_groups
        self._users: dict[str, BasicUser] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked: dict[tuple[str, bytes], float] = {}
        self.load()

    def names(self) -> frozenset[str]:
        """The user names of the file as last read."""
        return frozenset(self._users)

    def load(self) -> None:
        """(Re)read the file if it changed since the last read; raises if it is invalid."""
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._users = parse_users(self.path.read_text(), str(self.path))
            self._stamp = stamp
            self._checked.clear()

    async def authenticate(self, name: str, password: str) -> Caller | None:
        # On a failed read keep serving the users last read (the file is being rewritten).
        with contextlib.suppress(OSError, UsersFileError):
            self.load()
        user = self._users.get(name)
        if user is None:
            # The same work as for a known user: no timing difference tells names apart.
            await asyncio.to_thread(bcrypt.checkpw, password.encode(), _dummy_hash())
            return None
        key = (name, hmac.digest(user.password_hash, password.encode(), hashlib.sha256))
        seen = self._checked.get(key)
        if seen is None or time.monotonic() - seen > CACHE_SECONDS:
            ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), user.password_hash)
            if not ok:
                return None
            self._checked[key] = time.monotonic()
        scopes = {Scope.SUBMIT}
        if self.admin_groups.any(user.groups):
            scopes.add(Scope.ADMIN)
        return Caller(qualify(BASIC, user.name), "basic", expand(scopes), user.groups)


@functools.cache
def _dummy_hash() -> bytes:
    return bcrypt.hashpw(b"not a password", bcrypt.gensalt())
