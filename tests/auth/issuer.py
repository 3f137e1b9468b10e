"""A real OIDC issuer for tests: discovery document and JWKS over HTTP, RSA keys made per run,
and the authorization code flow with PKCE for a person who consents at once."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


class Issuer:
    """Serves ``/.well-known/openid-configuration`` and ``/jwks``; signs tokens.

    ``/authorize`` signs ``login_as`` (with ``login_groups``) in without asking and sends
    the browser back with a code; ``/token`` redeems it for an access token when the PKCE
    verifier, client id and redirect URI match.
    """

    CLIENT_ID = "jobgate-dashboard"

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []
        self.jwks_fetches = 0
        self.login_as = "alice"
        self.login_groups: list[str] = []
        self.codes: dict[str, dict[str, str]] = {}
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == "/.well-known/openid-configuration":
                    body: dict[str, Any] = {
                        "issuer": issuer.url,
                        "jwks_uri": issuer.url + "/jwks",
                        "authorization_endpoint": issuer.url + "/authorize",
                        "token_endpoint": issuer.url + "/token",
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }
                elif path == "/jwks":
                    issuer.jwks_fetches += 1
                    body = {"keys": [issuer.public_jwk(k) for k in issuer.published]}
                elif path == "/authorize":
                    self.authorize({k: v[0] for k, v in parse_qs(query).items()})
                    return
                else:
                    self.send_error(404)
                    return
                self.answer(200, body)

            def authorize(self, q: dict[str, str]) -> None:
                ok = (
                    q.get("response_type") == "code"
                    and q.get("client_id") == issuer.CLIENT_ID
                    and q.get("code_challenge_method") == "S256"
                    and q.get("code_challenge")
                    and urlsplit(q.get("redirect_uri", "")).scheme == "http"
                )
                if not ok:
                    self.answer(400, {"error": "invalid_request"})
                    return
                code = uuid.uuid4().hex
                issuer.codes[code] = q
                target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]})
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if self.path != "/token" or form.get("grant_type") != "authorization_code":
                    self.answer(400, {"error": "unsupported_grant_type"})
                    return
                q = issuer.codes.pop(form.get("code", ""), None)
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                sent = base64.urlsafe_b64encode(digest).decode().rstrip("=")
                if (
                    q is None
                    or q["code_challenge"] != sent
                    or q["client_id"] != form.get("client_id")
                    or q["redirect_uri"] != form.get("redirect_uri")
                ):
                    self.answer(400, {"error": "invalid_grant"})
                    return
                token = issuer.token(issuer.login_as, groups=issuer.login_groups)
                self.answer(200, {"access_token": token, "token_type": "Bearer"})

            def answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.kid = self.new_key(publish=True)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def new_key(self, *, publish: bool) -> str:
        kid = uuid.uuid4().hex[:12]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.append(kid)
        return kid

    def public_jwk(self, kid: str) -> dict[str, Any]:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
        return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}

    def token(
        self,
        sub: str = "alice",
        *,
        groups: list[str] | None = None,
        aud: str | list[str] = "jobgate",
        iss: str | None = None,
        lifetime: float = 300,
        kid: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        alg: str = "RS256",
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": iss or self.url,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime),
            "wlcg.groups": ["/" + g for g in (groups or [])],
            **claims,
        }
        kid = kid or self.kid
        signing_key = key or self.keys[kid]
        return jwt.encode(payload, signing_key, algorithm=alg, headers={"kid": kid})
