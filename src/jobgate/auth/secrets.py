"""Encryption of secrets kept at rest (credentials jobs carry to their backends).

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``). The key is
``JOBGATE_SECRET_KEY`` or, unset, a key generated once into ``<data_dir>/secret.key``
(mode 0600). Losing the key makes stored credentials unreadable, nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "secret.key"


class SecretBox:
    """Encrypts and decrypts short strings with one Fernet key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._key = key

    def derived_key(self, purpose: str) -> bytes:
        """A key for ``purpose`` (e.g. signing job tokens) derived from this one."""
        return hmac.new(self._key, purpose.encode(), hashlib.sha256).digest()

    @classmethod
    def from_settings(cls, key: str | None, data_dir: Path) -> SecretBox:
        if key:
            return cls(key.encode())
        return cls(load_or_create_key(data_dir / KEY_FILE))

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, cipher: str) -> str | None:
        """The plain text, or None if ``cipher`` was not made with this key."""
        try:
            return self._fernet.decrypt(cipher.encode()).decode()
        except InvalidToken:
            return None


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``; a new one written there (0600, created exclusively) if none."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` by a file only its owner can read (0600 from its creation)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
