"""A real OIDC issuer for tests: discovery document and JWKS over HTTP, RSA keys made per run."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


class Issuer:
    """Serves ``/.well-known/openid-configuration`` and ``/jwks``; signs tokens."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []
        self.jwks_fetches = 0
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body: dict[str, Any] = {
                        "issuer": issuer.url,
                        "jwks_uri": issuer.url + "/jwks",
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }
                elif self.path == "/jwks":
                    issuer.jwks_fetches += 1
                    body = {"keys": [issuer.public_jwk(k) for k in issuer.published]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
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
