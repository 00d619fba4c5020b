"""A local OpenID Connect provider for tests: discovery, authorization (code flow, PKCE
S256 required), token (checks the client secret, the redirect URI and the code verifier),
userinfo and JWKS, with an RSA key made at start. One thread, on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "ordinal-test"
CLIENT_SECRET = "stub-client-secret-0123456789"  # noqa: S105 - a test stub's


@dataclass
class Grant:
    redirect_uri: str
    challenge: str
    nonce: str
    claims: dict[str, Any]


@dataclass
class OidcStub:
    """`user` is who signs in at the next authorization (claims of the ID token and
    userinfo); `token_requests` records what the relying party sent to /token."""

    user: dict[str, Any] = field(default_factory=lambda: {"sub": "u-1", "preferred_username": "ada",
                                                           "email": "ada@example.com", "groups": []})
    token_requests: list[dict[str, str]] = field(default_factory=list)
    forge_issuer: str | None = None

    def __post_init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.grants: dict[str, Grant] = {}
        self.access: dict[str, dict[str, Any]] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                stub.handle_get(self)

            def do_POST(self) -> None:  # noqa: N802
                stub.handle_post(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ endpoints

    def handle_get(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/.well-known/openid-configuration":
            return self.json(request, 200, {
                "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "userinfo_endpoint": f"{self.issuer}/userinfo",
                "jwks_uri": f"{self.issuer}/jwks", "code_challenge_methods_supported": ["S256"]})
        if url.path == "/jwks":
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
            return self.json(request, 200, {"keys": [{**jwk, "kid": "stub", "alg": "RS256", "use": "sig"}]})
        if url.path == "/authorize":
            return self.authorize(request, query)
        if url.path == "/userinfo":
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            claims = self.access.get(token)
            return self.json(request, 200 if claims else 401, claims or {"error": "invalid_token"})
        return self.json(request, 404, {"error": "not_found"})

    def authorize(self, request: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        if (query.get("client_id") != CLIENT_ID or query.get("response_type") != "code"
                or query.get("code_challenge_method") != "S256" or not query.get("code_challenge")):
            return self.json(request, 400, {"error": "invalid_request", "query": query})
        code = secrets.token_urlsafe(16)
        self.grants[code] = Grant(query["redirect_uri"], query["code_challenge"], query.get("nonce", ""),
                                  dict(self.user))
        request.send_response(302)
        request.send_header("Location", f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}")
        request.send_header("Content-Length", "0")
        request.end_headers()

    def handle_post(self, request: BaseHTTPRequestHandler) -> None:
        if urlsplit(request.path).path != "/token":
            return self.json(request, 404, {"error": "not_found"})
        body = request.rfile.read(int(request.headers.get("Content-Length", 0))).decode()
        form = {k: v[0] for k, v in parse_qs(body).items()}
        self.token_requests.append(form)
        grant = self.grants.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if (grant is None or form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET
                or form.get("redirect_uri") != grant.redirect_uri or challenge != grant.challenge):
            return self.json(request, 400, {"error": "invalid_grant"})
        now = int(time.time())
        id_token = jwt.encode({"iss": self.forge_issuer or self.issuer, "aud": CLIENT_ID, "iat": now,
                               "exp": now + 300, "nonce": grant.nonce, **grant.claims},
                              self.key, algorithm="RS256", headers={"kid": "stub"})
        access = secrets.token_urlsafe(16)
        self.access[access] = grant.claims
        return self.json(request, 200, {"access_token": access, "id_token": id_token, "token_type": "Bearer",
                                        "expires_in": 300})

    @staticmethod
    def json(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
