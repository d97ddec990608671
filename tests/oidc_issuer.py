"""A real, tiny OIDC issuer on 127.0.0.1 for tests: discovery, JWKS, and tokens it signs.

Keys are generated in the test with cryptography; `rotate()` publishes a new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "gpuctl"


class SigningKey:
    def __init__(self, kid: str, alg: str = "RS256") -> None:
        self.kid, self.alg = kid, alg
        self.private: Any = (ec.generate_private_key(ec.SECP256R1()) if alg == "ES256"
                             else rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        to_jwk = ECAlgorithm.to_jwk if self.alg == "ES256" else RSAAlgorithm.to_jwk
        data: dict[str, Any] = to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return bytes(self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(secret: bytes, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """An HS256 JWT built by hand (PyJWT refuses to HMAC with a PEM key: the confusion attack needs it)."""
    head = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def unsigned_token(claims: dict[str, Any]) -> str:
    return f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}."


class Issuer:
    """`tls`: serve https with this (cert, key) pair; `bearer`: answer 401 to requests without
    `Authorization: Bearer <bearer>` (as the Kubernetes API server may)."""

    def __init__(self, *, tls: tuple[Path, Path] | None = None, bearer: str | None = None) -> None:
        self.keys = [SigningKey("key-1")]
        self.jwks_requests = 0
        self.refused_requests = 0
        self.discovery_override: dict[str, Any] = {}
        self.bearer = bearer
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if issuer.bearer is not None and self.headers.get("authorization") != f"Bearer {issuer.bearer}":
                    issuer.refused_requests += 1
                    self.send_error(401)
                    return
                if self.path == "/.well-known/openid-configuration":
                    body: dict[str, Any] = {"issuer": issuer.url, "jwks_uri": issuer.url + "/keys",
                                            **issuer.discovery_override}
                elif self.path == "/keys":
                    issuer.jwks_requests += 1
                    body = {"keys": [k.jwk() for k in issuer.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Issuer:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def rotate(self, kid: str, alg: str = "RS256") -> SigningKey:
        key = SigningKey(kid, alg)
        self.keys.append(key)
        return key

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.url, "aud": AUDIENCE, "sub": "u-123", "preferred_username": "alice",
                                  "groups": ["gpu-researchers", "team:vision"], "iat": now, "nbf": now,
                                  "exp": now + 300}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, key: SigningKey | None = None, **overrides: Any) -> str:
        key = key or self.keys[0]
        return jwt.encode(self.claims(**overrides), key.private, algorithm=key.alg, headers={"kid": key.kid})
