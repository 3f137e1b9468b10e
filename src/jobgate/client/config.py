"""Where the client finds its server and token.

Precedence, first wins: explicit arguments, then the environment (``JOBGATE_URL``,
``JOBGATE_TOKEN``), then the config file, then ``http://127.0.0.1:8000`` (what
``jobgate serve`` listens on by default). The config file is ``$JOBGATE_CONFIG`` if set,
else ``$XDG_CONFIG_HOME/jobgate/config.toml`` (``~/.config/jobgate/config.toml``)::

    url = "https://jobs.example.org"
    token = "…"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from jobgate.client.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8000"


def config_path() -> Path:
    """The config file the client reads (it need not exist)."""
    explicit = os.environ.get("JOBGATE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "jobgate" / "config.toml"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    url: str
    token: str | None = None


def _read_file(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the jobgate config file {path}: {exc}") from exc
    out = {}
    for key in ("url", "token"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}: {key!r} must be a string")
        if value:
            out[key] = value
    return out


def normalize_url(url: str) -> str:
    """``host:8000`` → ``http://host:8000``; no trailing slash."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the jobgate URL must be http:// or https://, got {url!r}")
    return url.rstrip("/")


def resolve(
    url: str | None = None, token: str | None = None, *, path: Path | None = None
) -> ClientConfig:
    """The effective URL and token (see the module docstring for the order)."""
    url = url or os.environ.get("JOBGATE_URL") or None
    token = token or os.environ.get("JOBGATE_TOKEN") or None
    if url is None or token is None:
        file = _read_file(path or config_path())
        url = url or file.get("url")
        token = token or file.get("token")
    return ClientConfig(normalize_url(url or DEFAULT_URL), token)
