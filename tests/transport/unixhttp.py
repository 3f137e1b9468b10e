"""One HTTP request over a UNIX socket with the standard library alone (no client of
jobgate's own in the way)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


def raw_unix_get(path: Path, target: str) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    result: dict[str, Any] = json.loads(body)
    return result
