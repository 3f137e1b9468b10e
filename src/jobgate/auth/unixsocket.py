"""The UNIX socket's caller: whoever may open the socket file (mode 0600) is its owner."""

from __future__ import annotations

import os
import pwd

from jobgate.auth.identity import Caller, Scope, expand
from jobgate.auth.namespaces import UNIX, namespace_of, qualify


def default_owner(uid: int | None = None) -> str:
    """The server's user name (its uid when it has no name)."""
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class SocketOwner:
    """Every request through the socket is ``owner`` (``unix:<name>`` for a bare name).

    The socket file's mode lets only the server's user (and root) connect; the peer's
    uid, from the kernel (``SO_PEERCRED``), is checked again, so a socket file whose mode
    was widened later does not let other users in.
    """

    def __init__(self, owner: str | None = None, scope: str = "admin") -> None:
        name = owner or default_owner()
        full = name if namespace_of(name) is not None else qualify(UNIX, name)
        self.caller = Caller(full, "unix", expand({Scope(scope)}))
        self.uids = frozenset({os.getuid(), 0})

    def authenticate(self, peer_uid: int | None) -> Caller | None:
        """The owner, or None when the peer is another user."""
        if peer_uid is not None and peer_uid not in self.uids:
            return None
        return self.caller
