"""Where the client finds its server and token.

Precedence, first wins: explicit arguments, then the environment (``JOBGATE_URL``,
``JOBGATE_TOKEN``, ``JOBGATE_USER``/``JOBGATE_PASSWORD``), then the config file, then
``http://127.0.0.1:8000`` (what ``jobgate serve`` listens on by default). The config file
is ``$JOBGATE_CONFIG`` if set, else ``$XDG_CONFIG_HOME/jobgate/config.toml``
(``~/.config/jobgate/config.toml``)::

    url = "https://jobs.example.org"
    token = "…"            # a bearer token (service token or OIDC access token), or
    user = "alice"         # HTTP basic credentials
    password = "…"

A bearer token wins over basic credentials. With neither, and the default local URL, the
client uses the admin token a local ``jobgate serve`` wrote into its data directory
(``$JOBGATE_DATA_DIR/admin-token``), so a fresh ``make run`` is usable at once.
"""

from __future__ import annotations

import base64
import os
import tomllib
from dataclasses import dataclass, field
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
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    def authorization(self) -> str | None:
        """The ``Authorization`` header value, if any credentials are configured."""
        if self.token:
            return f"Bearer {self.token}"
        if self.user is not None:
            pair = f"{self.user}:{self.password or ''}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        return None

    def headers(self) -> dict[str, str]:
        """The headers every request to the server carries."""
        from jobgate import __version__

        headers = {"user-agent": f"jobgate-client/{__version__}", "accept": "application/json"}
        auth = self.authorization()
        if auth:
            headers["authorization"] = auth
        return headers


def local_admin_token() -> str | None:
    """The admin token a local server wrote (``<data dir>/admin-token``), if readable."""
    from jobgate.datadir import default_data_dir

    data_dir = Path(os.environ.get("JOBGATE_DATA_DIR") or default_data_dir()).expanduser()
    try:
        return (data_dir / "admin-token").read_text().strip() or None
    except OSError:
        return None


def _read_file(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the jobgate config file {path}: {exc}") from exc
    out = {}
    for key in ("url", "token", "user", "password"):
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
    url: str | None = None,
    token: str | None = None,
    *,
    user: str | None = None,
    password: str | None = None,
    path: Path | None = None,
) -> ClientConfig:
    """The effective URL and credentials (see the module docstring for the order)."""
    env = os.environ
    url = url or env.get("JOBGATE_URL") or None
    token = token or env.get("JOBGATE_TOKEN") or None
    user = user or env.get("JOBGATE_USER") or None
    password = password or env.get("JOBGATE_PASSWORD") or None
    if url is None or (token is None and user is None):
        file = _read_file(path or config_path())
        url = url or file.get("url")
        if token is None and user is None:
            token = file.get("token")
            user = file.get("user")
            password = password or file.get("password")
    final_url = normalize_url(url or DEFAULT_URL)
    if token is None and user is None and final_url == DEFAULT_URL:
        token = local_admin_token()
    return ClientConfig(final_url, token, user, password)
