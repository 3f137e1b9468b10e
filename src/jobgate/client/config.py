"""Where the client finds its server and token.

Precedence, first wins: explicit arguments, then the environment (``JOBGATE_URL``,
``JOBGATE_TOKEN``, ``JOBGATE_USER``/``JOBGATE_PASSWORD``, ``JOBGATE_CERT``/``JOBGATE_KEY``),
then the config file, then ``http://127.0.0.1:8000`` (what ``jobgate serve`` listens on by
default). The config file is ``$JOBGATE_CONFIG`` if set, else
``$XDG_CONFIG_HOME/jobgate/config.toml`` (``~/.config/jobgate/config.toml``)::

    url = "https://jobs.example.org"   # or unix:///run/jobgate.sock (jobgate serve --uds)
    token = "…"            # a bearer token (service token or OIDC access token), or
    user = "alice"         # HTTP basic credentials
    password = "…"
    cert = "~/.globus/usercert.pem"    # a client certificate for mutual TLS (or a proxy
    key = "~/.globus/userkey.pem"      # file holding both; default: $X509_USER_PROXY)

Servers' certificates are checked against ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set,
else certifi's bundle (as httpx does).

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
from typing import TYPE_CHECKING, Any

from jobgate.client.errors import ConfigError

if TYPE_CHECKING:
    import ssl

DEFAULT_URL = "http://127.0.0.1:8000"
UNIX_PREFIX = "unix://"
UNIX_BASE_URL = "http://jobgate.sock"
"""The URL requests over a UNIX socket are made to (the host name is not used)."""


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
    cert: str | None = None
    key: str | None = None

    @property
    def uds(self) -> str | None:
        """The socket path of a ``unix:///path`` URL; None for http(s)."""
        return self.url[len(UNIX_PREFIX) :] if self.url.startswith(UNIX_PREFIX) else None

    @property
    def base_url(self) -> str:
        """The URL requests go to (over the socket for ``unix://``)."""
        return UNIX_BASE_URL if self.uds is not None else self.url

    def ssl_context(self) -> ssl.SSLContext:
        """Server certificates checked as httpx checks them, the client certificate (if
        any) loaded; raises ConfigError for an unreadable certificate or key."""
        import ssl  # only for https: plain commands start without it

        if os.environ.get("SSL_CERT_FILE"):
            ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
        elif os.environ.get("SSL_CERT_DIR"):
            ctx = ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
        else:
            import certifi

            ctx = ssl.create_default_context(cafile=certifi.where())
        if self.cert:
            cert = os.path.expanduser(self.cert)
            key = os.path.expanduser(self.key) if self.key else None
            try:
                ctx.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                what = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
                raise ConfigError(
                    f"cannot load the client certificate {cert}"
                    + (f" with key {key}" if key else "")
                    + f": {what}"
                ) from None
        return ctx

    def httpx_options(self) -> dict[str, Any]:
        """``base_url`` and ``verify`` for an httpx client of this config (its transport
        goes over :attr:`uds` when set)."""
        if self.url.startswith("https://"):
            return {"base_url": self.url, "verify": self.ssl_context()}
        return {"base_url": self.base_url}

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
    for key in ("url", "token", "user", "password", "cert", "key"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}: {key!r} must be a string")
        if value:
            out[key] = value
    return out


def normalize_url(url: str) -> str:
    """``host:8000`` → ``http://host:8000``; no trailing slash; ``unix:///path`` kept."""
    url = url.strip()
    if url.startswith(UNIX_PREFIX):
        if not url[len(UNIX_PREFIX) :].startswith("/"):
            raise ConfigError(f"a unix:// URL names the socket's absolute path: {url!r}")
        return url
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the jobgate URL must be http://, https:// or unix://, got {url!r}")
    return url.rstrip("/")


def resolve(
    url: str | None = None,
    token: str | None = None,
    *,
    user: str | None = None,
    password: str | None = None,
    path: Path | None = None,
    cert: str | None = None,
    key: str | None = None,
) -> ClientConfig:
    """The effective URL and credentials (see the module docstring for the order)."""
    env = os.environ
    url = url or env.get("JOBGATE_URL") or None
    token = token or env.get("JOBGATE_TOKEN") or None
    user = user or env.get("JOBGATE_USER") or None
    password = password or env.get("JOBGATE_PASSWORD") or None
    cert = cert or env.get("JOBGATE_CERT") or None
    key = key or env.get("JOBGATE_KEY") or None
    # A client certificate matters for https only: other URLs need the file as before.
    wants_cert = cert is None and (url is None or url.startswith("https://"))
    if url is None or (token is None and user is None) or wants_cert:
        file = _read_file(path or config_path())
        url = url or file.get("url")
        if token is None and user is None:
            token = file.get("token")
            user = file.get("user")
            password = password or file.get("password")
        if cert is None:
            cert, key = file.get("cert"), key or file.get("key")
    # Grid tools leave a proxy (certificate and key in one file) here; a stale variable
    # naming a removed file is no reason to fail.
    proxy = env.get("X509_USER_PROXY")
    if cert is None and proxy and os.path.isfile(proxy):
        cert = proxy
    final_url = normalize_url(url or DEFAULT_URL)
    if token is None and user is None and final_url == DEFAULT_URL:
        token = local_admin_token()
    return ClientConfig(final_url, token, user, password, cert, key)
