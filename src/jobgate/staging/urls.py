"""URL helpers shared by the stores: scheme, redaction, joining a file name onto a base."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

INPUT_SCHEMES = ("file", "http", "https", "s3", "ftp", "sandbox")
OUTPUT_SCHEMES = ("file", "s3", "ftp", "http", "https")
"""http(s) outputs are PUT only under the prefixes the operator lists."""


def scheme_of(url: str) -> str:
    """The lower-cased scheme; a bare absolute path counts as ``file``."""
    return "file" if url.startswith("/") else urlsplit(url).scheme.lower()


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``: URLs end up in logs users share."""
    if url.startswith("/"):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def join(base: str, rel: str) -> str:
    """The URL of ``rel`` (a POSIX path, unquoted) below the directory URL ``base``.

    ``rel`` is percent-quoted: a file named ``a#b`` or ``50%`` must still be a URL of that
    file. An empty ``rel`` is ``base`` itself.
    """
    if not rel:
        return base
    return base.rstrip("/") + "/" + quote(rel)


def safe_relative(rel: str) -> bool:
    """True for a relative POSIX path with no empty, ``.`` or ``..`` part (a store listing
    may hold keys like ``a/../../x``: those must never steer a write)."""
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts)
