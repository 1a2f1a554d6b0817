"""A real OpenID Connect provider for the tests, served over HTTP on a loopback port.

Authlib's server side does the protocol: an `AuthorizationServer` with the
authorization-code grant, the OpenID Connect extension (RS256 ID tokens, nonces)
and PKCE, which this provider demands (S256) on every authorization request.
It publishes discovery and JWKS, answers userinfo, and serves GitHub's
`/user` and `/user/emails` API as well, so the GitHub flow runs against it too.

There is no login page: the authorization endpoint approves `provider.account`
at once. Tests change that account (email, email_verified) and can make the
provider misbehave (`id_token_claims` overrides, `break_signature`,
`email_in_id_token`) to see Backpack refuse.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from authlib.oauth2 import AuthorizationServer, OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Payload, grants, scope_to_list
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import AuthorizationCodeMixin, OpenIDCode, UserInfo
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc.jwk import KeySet, RSAKey

SCOPES = ("openid", "email", "profile", "read:user", "user:email")
Reply = tuple[int, list[tuple[str, str]], bytes]


@dataclass
class Account:
    """The person who signs in at this provider."""

    email: str
    email_verified: bool = True
    sub: str = field(default_factory=lambda: str(secrets.randbelow(10**12)))  # numeric, as GitHub's


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str
    redirect_uris: list[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str | None) -> str:
        return " ".join(s for s in scope_to_list(scope or "") if s in SCOPES)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(client_secret.encode(), self.client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    account: Account
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))
    expires: float = field(default_factory=lambda: time.time() + 600)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._data = dict(reversed(pairs))  # the first value of a repeated parameter
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in pairs:
            self._datalist[key].append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, method: str, uri: str, headers: Any, query: str, body: str) -> None:
        super().__init__(method, uri, headers=headers)
        self._args = dict(parse_qsl(query))
        self._form = dict(parse_qsl(body))
        self.payload = _Payload(parse_qsl(query) + parse_qsl(body))

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class OIDCProvider:
    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(4)})
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, Code] = {}
        self.tokens: dict[str, tuple[Account, str]] = {}  # access token → (account, scope)
        self.nonces: set[str] = set()
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.issuer = f"http://127.0.0.1:{self._http.server_address[1]}"
        self.server = _server(self)
        self.reset()

    def reset(self) -> None:
        """Back to a well-behaved provider approving a fresh account."""
        self.account = Account(f"p{secrets.token_hex(5)}@example.com")
        self.id_token_claims: dict[str, Any] = {}
        self.break_signature = False
        self.email_in_id_token = True

    def start(self) -> None:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def add_client(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> None:
        self.clients[client_id] = Client(client_id, client_secret, redirect_uris)

    def discovery(self) -> dict[str, Any]:
        metadata = OpenIDProviderMetadata(
            issuer=self.issuer,
            authorization_endpoint=f"{self.issuer}/authorize",
            token_endpoint=f"{self.issuer}/token",
            userinfo_endpoint=f"{self.issuer}/userinfo",
            jwks_uri=f"{self.issuer}/jwks",
            scopes_supported=list(SCOPES),
            response_types_supported=["code"],
            grant_types_supported=["authorization_code"],
            subject_types_supported=["public"],
            id_token_signing_alg_values_supported=["RS256"],
            token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post"],
            code_challenge_methods_supported=["S256"],
            claims_supported=["sub", "email", "email_verified", "name"],
        )
        metadata.validate()
        return dict(metadata)

    # HTTP

    def handle(self, method: str, target: str, headers: Any, body: str) -> Reply:
        parts = urlsplit(target)
        request = _Request(method, self.issuer + target, headers, parts.query, body)
        with self._lock:  # one request at a time: the stores are plain dicts
            match method, parts.path:
                case "GET", "/.well-known/openid-configuration":
                    return _json(200, self.discovery())
                case "GET", "/jwks":
                    return _json(200, KeySet([self.key]).as_dict(private=False))
                case "GET", "/authorize":
                    return self._authorize(request)
                case "POST", "/token":
                    return _reply(*self.server.create_token_response(request))
                case "GET", "/userinfo" | "/user" | "/user/emails":
                    return self._api(parts.path, headers)
            return _json(404, {"error": "not_found"})

    def _authorize(self, request: _Request) -> Reply:
        try:
            grant = self.server.get_consent_grant(request, end_user=self.account)
        except OAuth2Error as error:
            if error.redirect_uri:  # a known client and redirect URI: tell the client
                return _reply(*error())
            return _json(400, dict(error.get_body()))  # what a provider's error page says
        return _reply(
            *self.server.create_authorization_response(request, self.account, grant=grant)
        )

    def _api(self, path: str, headers: Any) -> Reply:
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        found = self.tokens.get(token) if scheme.lower() == "bearer" else None
        if found is None:
            return _json(401, {"message": "Bad credentials"})
        account, scope = found
        scopes = scope_to_list(scope)
        if path == "/userinfo" and "openid" in scopes:
            return _json(200, _claims(account, scope))
        if path == "/user" and "read:user" in scopes:
            return _json(200, {"id": int(account.sub), "login": account.email.split("@")[0]})
        if path == "/user/emails" and "user:email" in scopes:
            emails = [
                {"email": f"other-{account.email}", "primary": False, "verified": True},
                {"email": account.email, "primary": True, "verified": account.email_verified},
            ]
            return _json(200, emails)
        return _json(403, {"message": "The token's scopes do not allow this."})


def _claims(account: Account, scope: str) -> dict[str, Any]:
    info = UserInfo(
        sub=account.sub,
        email=account.email,
        email_verified=account.email_verified,
        name=account.email.split("@")[0],
    )
    return dict(info.filter(scope))


def _server(provider: OIDCProvider) -> AuthorizationServer:
    class Server(AuthorizationServer):  # type: ignore[misc]
        def query_client(self, client_id: str) -> Client | None:
            return provider.clients.get(client_id)

        def save_token(self, token: Mapping[str, Any], request: OAuth2Request) -> None:
            provider.tokens[token["access_token"]] = (request.user, token["scope"])

        def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
            return request

        def handle_response(self, status: int, body: Any, headers: Any) -> Any:
            return status, body, headers

        def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
            pass  # nobody listens here

    class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
            data = request.payload.data
            provider.codes[code] = Code(
                code=code,
                client_id=request.client.client_id,
                redirect_uri=request.payload.redirect_uri,
                scope=request.scope,
                nonce=data.get("nonce"),
                account=request.user,
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
            )
            if data.get("nonce"):
                provider.nonces.add(data["nonce"])

        def query_authorization_code(self, code: str, client: Client) -> Code | None:
            found = provider.codes.get(code)
            if found is None or found.client_id != client.client_id or found.expires < time.time():
                return None
            return found

        def delete_authorization_code(self, authorization_code: Code) -> None:
            provider.codes.pop(authorization_code.code, None)  # a code works once

        def authenticate_user(self, authorization_code: Code) -> Account:
            return authorization_code.account

    class OpenID(OpenIDCode):  # type: ignore[misc]
        def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
            return nonce in provider.nonces

        def resolve_client_private_key(self, client: Client) -> RSAKey:
            return provider.key

        def get_encode_header(self, client: Client) -> dict[str, str]:
            return {"alg": "RS256", "kid": provider.key.kid or ""}

        def get_client_claims(self, client: Client) -> dict[str, Any]:
            return {"iss": provider.issuer, "aud": [client.client_id]}

        def generate_user_info(self, user: Account, scope: str) -> dict[str, Any]:
            claims = _claims(user, scope)
            if not provider.email_in_id_token:
                claims.pop("email", None)
                claims.pop("email_verified", None)
            # Claims here are applied last, so tests can override iss, aud, nonce, exp.
            return {**claims, **provider.id_token_claims}

        def encode_id_token(self, token: Mapping[str, Any], request: OAuth2Request) -> str:
            id_token: str = super().encode_id_token(token, request)
            if provider.break_signature:
                head, payload, signature = id_token.split(".")
                middle = len(signature) // 2
                flipped = "A" if signature[middle] != "A" else "B"
                signature = signature[:middle] + flipped + signature[middle + 1 :]
                id_token = f"{head}.{payload}.{signature}"
            return id_token

    class StrictPKCE(CodeChallenge):  # type: ignore[misc]
        """PKCE with S256 on every authorization request, confidential client or not."""

        def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
            data = grant.request.payload.data
            if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
                raise InvalidRequestError("PKCE with S256 is required.", redirect_uri=redirect_uri)
            super().validate_code_challenge(grant, redirect_uri)

    server = Server(scopes_supported=list(SCOPES))
    server.register_token_generator(
        "default", BearerTokenGenerator(lambda **_: secrets.token_urlsafe(32))
    )
    server.register_grant(CodeGrant, [OpenID(require_nonce=False), StrictPKCE(required=True)])
    return server


def _json(status: int, value: Any) -> Reply:
    return status, [("Content-Type", "application/json")], json.dumps(value).encode()


def _reply(status: int, body: Any, headers: list[tuple[str, str]]) -> Reply:
    if isinstance(body, dict):
        return status, [*headers], json.dumps(body).encode()
    return status, [*headers], str(body).encode()


def _handler(provider: OIDCProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(provider.handle("GET", self.path, self.headers, ""))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            self._answer(provider.handle("POST", self.path, self.headers, body))

        def _answer(self, reply: Reply) -> None:
            status, headers, body = reply
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet test output

    return Handler
