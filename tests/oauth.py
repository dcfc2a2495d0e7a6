"""A token issuer of the tests' own: RSA (and EC) keys made with `cryptography`, a JWKS served over HTTP,
tokens minted with PyJWT. Keys can be added (rotation) while the server runs."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "payments-api"
ALL_SCOPES = "payments:write payments:read"


class Issuer:
    def __init__(self, issuer: str = "https://issuer.test") -> None:
        self.issuer = issuer
        self.private: dict[str, Any] = {}  # kid -> private key
        self.published: list[dict[str, Any]] = []  # the JWKS's keys
        self.fetches = 0
        self._server: ThreadingHTTPServer | None = None

    def add_rsa(self, kid: str | None = None, *, publish: bool = True) -> str:
        kid = kid or f"rsa-{uuid.uuid4().hex[:8]}"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private[kid] = key
        if publish:
            self.publish(kid)
        return kid

    def add_ec(self, kid: str | None = None) -> str:
        kid = kid or f"ec-{uuid.uuid4().hex[:8]}"
        key = ec.generate_private_key(ec.SECP256R1())
        self.private[kid] = key
        self.publish(kid)
        return kid

    def publish(self, kid: str) -> None:
        key = self.private[kid]
        if isinstance(key, rsa.RSAPrivateKey):
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            jwk["alg"] = "RS256"
        else:
            jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
            jwk["alg"] = "ES256"
        self.published.append({**jwk, "kid": kid, "use": "sig"})

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self.published)}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "aud": AUDIENCE, "sub": "client-a", "iat": now,
                                  "nbf": now, "exp": now + 300, "scope": ALL_SCOPES}
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, kid: str | None = None, *, alg: str | None = None, headers: dict[str, Any] | None = None,
              **claims: Any) -> str:
        kid = kid or next(iter(self.private))
        key = self.private[kid]
        alg = alg or ("RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256")
        header = {name: value for name, value in {"kid": kid, **(headers or {})}.items() if value is not None}
        return jwt.encode(self.claims(**claims), key, algorithm=alg, headers=header)

    # -- the JWKS over HTTP ----------------------------------------------------------------------

    def serve(self) -> str:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def unsigned(claims: dict[str, Any], kid: str) -> str:
    """An `alg: none` token."""
    return jwt.encode(claims, None, algorithm="none", headers={"kid": kid})


def hs256(claims: dict[str, Any], kid: str, secret: str) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})
