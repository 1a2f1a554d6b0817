"""Sign-in through OAuth 2 / OpenID Connect providers: the client side of the code flow.

`start` keeps a single-use state server-side (its hash, in `_tokens`, with the
PKCE verifier, the nonce, the redirect and a hash of the browser's binding
cookie) and returns the provider's authorization URL. `finish` redeems that
state, exchanges the code, learns a verified email (from an ID token checked
against the issuer's keys, or from GitHub's user API) and signs in the user
linked to that identity, or the user with that email, or a new user.

Authlib supplies the protocol pieces (authorization URL, token request, client
authentication, PKCE, ID-token claim rules); joserfc, which Authlib itself
uses for JOSE, checks signatures. Requests go out through httpx.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from backpack import __version__
from backpack.auth.service import (
    IDENTITIES,
    PASSWORDS,
    SESSIONS,
    TOKENS,
    USERS,
    AuthService,
    SessionGrant,
    normalize_email,
    public_user,
)
from backpack.auth.tokens import token_hash
from backpack.core import jsonutil
from backpack.core.access import SECRET_KEY
from backpack.core.clock import now_rfc3339
from backpack.core.events import RecordEvent
from backpack.core.filter import parse_filter
from backpack.core.ids import new_id
from backpack.core.storage import (
    Delete,
    IndexKey,
    Insert,
    Query,
    StaleWrite,
    WriteOp,
)
from backpack.errors import (
    BackpackError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unavailable,
)
from backpack.types import Document

STATE_KIND: Final = "oauth_state"
STATE_SECONDS: Final = 600
GOOGLE_ISSUER: Final = "https://accounts.google.com"
GITHUB_URLS: Final[Mapping[str, str]] = {
    "authorize_url": "https://github.com/login/oauth/authorize",
    "token_url": "https://github.com/login/oauth/access_token",
    "userinfo_url": "https://api.github.com/user",
    "emails_url": "https://api.github.com/user/emails",
}
_DEFAULT_SCOPES: Final[Mapping[str, tuple[str, ...]]] = {
    "github": ("read:user", "user:email"),
    "google": ("openid", "email", "profile"),
    "oidc": ("openid", "email", "profile"),
}
# ID tokens are verified with the issuer's published keys, so only public-key algorithms.
_ALGORITHMS: Final = frozenset(
    ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
)
_CACHE_SECONDS: Final = 600.0  # discovery documents and key sets; an unknown kid refetches keys
_LEEWAY: Final = 60  # seconds of clock skew allowed on exp / iat
_TIMEOUT: Final = httpx.Timeout(10.0)


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    kind: str  # "oidc" | "google" | "github"
    client_id: str
    client_secret: str
    issuer: str | None
    scopes: tuple[str, ...]
    urls: Mapping[str, str]  # github's endpoints (defaults or overrides)


@dataclass(frozen=True, slots=True)
class _Endpoints:
    authorize: str
    token: str
    token_auth: str  # client_secret_basic | client_secret_post
    userinfo: str | None
    emails: str | None = None  # github
    issuer: str | None = None  # oidc
    jwks: str | None = None
    algorithms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Identity:
    issuer: str  # who vouches for the subject: the OIDC issuer, or GitHub's user API
    subject: str
    email: object
    verified: bool


def _kind(name: str) -> str:
    return name if name in ("github", "google") else "oidc"


def _provider(name: str, config: Mapping[str, Any]) -> Provider:
    kind = _kind(name)
    issuer = config.get("issuer") or (GOOGLE_ISSUER if kind == "google" else None)
    scopes = tuple(dict.fromkeys((*_DEFAULT_SCOPES[kind], *(config.get("scopes") or ()))))
    urls = {k: str(config.get(k) or url) for k, url in GITHUB_URLS.items()}
    return Provider(
        name=name,
        kind=kind,
        client_id=str(config["client_id"]),
        client_secret=str(config["client_secret"]),
        issuer=issuer,
        scopes=scopes,  # the defaults, then any the settings add
        urls=urls if kind == "github" else {},
    )


class OAuthFlow:
    """The sign-in flows of one backpack; providers are read from its settings at each use."""

    def __init__(self, auth: AuthService) -> None:
        self.auth = auth
        self.storage = auth.storage
        self._cache: dict[str, tuple[float, Any]] = {}
        self._next_sweep = 0.0

    def providers(self) -> list[Document]:
        oauth = self.auth.settings.oauth
        return [{"name": name, "type": _kind(name)} for name in sorted(oauth)]

    def provider(self, name: str) -> Provider:
        config = self.auth.settings.oauth.get(name)
        if config is None:
            raise NotFound(f"No sign-in provider named '{name[:64]}' is enabled.")
        return _provider(name, config)

    # the two legs of the flow

    async def start(
        self, provider: Provider, callback: str, redirect: str | None, binding: str
    ) -> str:
        """Remember a new sign-in attempt; returns the provider's authorization URL."""
        async with _client() as client:
            endpoints = await self._endpoints(client, provider)
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        nonce = secrets.token_urlsafe(24) if provider.kind != "github" else None
        doc = {
            "id": token_hash(state),
            "kind": STATE_KIND,
            "provider": provider.name,
            "callback": callback,
            "redirect": redirect,
            "verifier": verifier,
            "nonce": nonce,
            "binding": token_hash(binding),
            "expires": int(time.time()) + STATE_SECONDS,
            "version": 1,
        }
        await self.storage.apply([Insert(TOKENS, str(doc["id"]), 1, jsonutil.dumps_str(doc))])
        await self._sweep()
        url: str = prepare_grant_uri(
            endpoints.authorize,
            provider.client_id,
            "code",
            callback,
            list(provider.scopes),
            state,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
            nonce=nonce,
        )
        return url

    async def finish(
        self, provider: Provider, query: Mapping[str, str], binding: str | None, agent: str, ip: str
    ) -> tuple[SessionGrant, str | None]:
        """Complete a sign-in from the provider's callback: the session and where to send it."""
        state = await self._redeem(provider, query.get("state"), binding)
        if "error" in query:
            described = query.get("error_description", "")
            raise BadRequest(
                f"The provider did not grant the sign-in: {query['error'][:100]}"
                + (f" ({described[:200]})." if described else "."),
                {"provider_error": query["error"][:100]},
            )
        code = query.get("code")
        if not code:
            raise BadRequest("The callback carries no code.", {"field": "code"})
        async with _client() as client:
            endpoints = await self._endpoints(client, provider)
            token = await self._exchange(client, provider, endpoints, code, state)
            if provider.kind == "github":
                identity = await self._github_identity(client, endpoints, token)
            else:
                identity = await self._oidc_identity(client, provider, endpoints, token, state)
        if not isinstance(identity.email, str) or not identity.email:
            raise BadRequest("The provider did not share an email address.")
        if not identity.verified:
            raise Forbidden("The provider has not verified this email.")
        try:
            email = normalize_email(identity.email)
        except BackpackError:
            raise BadRequest("The provider's email address is not one Backpack accepts.") from None
        user = await self._user_for(provider, identity, email)
        grant = await self.auth.start_session(user, agent, ip)
        redirect = state.get("redirect")
        return grant, redirect if isinstance(redirect, str) else None

    # state

    async def _redeem(self, provider: Provider, state: object, binding: str | None) -> Document:
        """The stored attempt a state names, spent by the first callback from its browser."""
        invalid = BadRequest(
            "The sign-in state is missing, unknown, used or expired; start the sign-in again.",
            {"field": "state"},
        )
        if not isinstance(state, str) or not 20 <= len(state) <= 100:
            raise invalid
        key = token_hash(state)
        found = await self.storage.get(TOKENS, key)
        if found is None:
            raise invalid
        doc: Document = jsonutil.loads(found.doc)
        if doc.get("kind") != STATE_KIND:
            raise invalid
        if binding is None or not hmac.compare_digest(token_hash(binding), str(doc["binding"])):
            # The state is bound to the browser that started the sign-in, so a link
            # with someone else's code and state cannot sign a victim into their
            # account; and a stranger who learns a state cannot spend it.
            raise BadRequest(
                "This sign-in was started in another browser; start it again here.",
                {"field": "state"},
            )
        try:
            await self.storage.apply([Delete(TOKENS, key, found.version)])
        except StaleWrite:
            raise invalid from None  # another request redeemed it first
        if int(str(doc["expires"])) <= time.time():
            raise invalid
        if doc["provider"] != provider.name:
            raise BadRequest("This sign-in was started for another provider.", {"field": "state"})
        return doc

    async def _sweep(self) -> None:
        """Drop attempts that were started and never finished, at most once a minute."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + 60
        where = parse_filter({"kind": STATE_KIND, "expires": {"$lt": int(time.time())}})
        page = await self.storage.query(Query(TOKENS, where, (IndexKey(("id",)),), 500))
        stale = [jsonutil.loads(doc) for doc in page.docs]
        if stale:
            # A callback may redeem one meanwhile (StaleWrite); the next sweep takes the rest.
            with contextlib.suppress(StaleWrite):
                await self.storage.apply([Delete(TOKENS, d["id"], d["version"]) for d in stale])

    # talking to the provider

    async def _endpoints(self, client: httpx.AsyncClient, provider: Provider) -> _Endpoints:
        if provider.kind == "github":
            return _Endpoints(
                authorize=provider.urls["authorize_url"],
                token=provider.urls["token_url"],
                token_auth="client_secret_post",  # what GitHub documents
                userinfo=provider.urls["userinfo_url"],
                emails=provider.urls["emails_url"],
            )
        issuer = str(provider.issuer).rstrip("/")
        what = f"the discovery document of '{provider.name}'"
        meta = await self._document(client, f"{issuer}/.well-known/openid-configuration", what)
        if not isinstance(meta, dict) or str(meta.get("issuer", "")).rstrip("/") != issuer:
            raise Unavailable(f"{_upper(what)} names another issuer than {issuer}.")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not _is_url(meta.get(key)):
                raise Unavailable(f"{_upper(what)} has no valid {key}.")
        methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        offered = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = tuple(a for a in offered if a in _ALGORITHMS)
        if not algorithms:
            raise Unavailable(f"'{provider.name}' signs ID tokens with no public-key algorithm.")
        userinfo = meta.get("userinfo_endpoint")
        return _Endpoints(
            authorize=meta["authorization_endpoint"],
            token=meta["token_endpoint"],
            token_auth="client_secret_basic"
            if "client_secret_basic" in methods
            else "client_secret_post",
            userinfo=userinfo if _is_url(userinfo) else None,
            issuer=meta["issuer"],
            jwks=meta["jwks_uri"],
            algorithms=algorithms,
        )

    async def _document(
        self, client: httpx.AsyncClient, url: str, what: str, *, fresh: bool = False
    ) -> Any:
        """A discovery document or key set, cached: providers change them rarely."""
        cached = self._cache.get(url)
        if cached is not None and not fresh and time.monotonic() - cached[0] < _CACHE_SECONDS:
            return cached[1]
        document = await _call(client, "GET", url, what, refused=Unavailable)
        if len(self._cache) > 100:
            self._cache.clear()
        self._cache[url] = (time.monotonic(), document)
        return document

    async def _exchange(
        self,
        client: httpx.AsyncClient,
        provider: Provider,
        endpoints: _Endpoints,
        code: str,
        state: Document,
    ) -> Document:
        body = prepare_token_request(
            "authorization_code",
            code=code,
            redirect_uri=state["callback"],
            code_verifier=state["verifier"],
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        auth = ClientAuth(provider.client_id, provider.client_secret, endpoints.token_auth)
        url, headers, body = auth.prepare("POST", endpoints.token, headers, body)
        token = await _call(
            client, "POST", url, f"the token endpoint of '{provider.name}'", headers, body
        )
        if not isinstance(token, dict) or not isinstance(token.get("access_token"), str):
            raise BadRequest(f"'{provider.name}' answered the code exchange without a token.")
        return token

    async def _oidc_identity(
        self,
        client: httpx.AsyncClient,
        provider: Provider,
        endpoints: _Endpoints,
        token: Document,
        state: Document,
    ) -> _Identity:
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise BadRequest(f"'{provider.name}' sent no ID token; is 'openid' allowed?")
        claims = await self._verify(client, provider, endpoints, id_token, token, state)
        email, verified = claims.get("email"), claims.get("email_verified")
        if (email is None or verified is None) and endpoints.userinfo is not None:
            # Some providers keep the email out of the ID token; ask the userinfo endpoint.
            info = await _call(
                client,
                "GET",
                endpoints.userinfo,
                f"the userinfo endpoint of '{provider.name}'",
                {"Authorization": f"Bearer {token['access_token']}"},
            )
            if not isinstance(info, dict) or info.get("sub") != claims["sub"]:
                raise BadRequest(f"'{provider.name}' described another user than it signed in.")
            email, verified = info.get("email"), info.get("email_verified")
        return _Identity(str(claims["iss"]), str(claims["sub"]), email, verified in (True, "true"))

    async def _verify(
        self,
        client: httpx.AsyncClient,
        provider: Provider,
        endpoints: _Endpoints,
        id_token: str,
        token: Document,
        state: Document,
    ) -> Mapping[str, Any]:
        """The ID token's claims, once signature, issuer, audience, nonce and times check out."""
        jwks, what = str(endpoints.jwks), f"the keys of '{provider.name}'"
        registry = JWSRegistry(algorithms=list(endpoints.algorithms), strict_check_header=False)
        issuers = [str(endpoints.issuer)]
        if provider.kind == "google":
            issuers.append("accounts.google.com")  # Google documents both spellings
        try:
            try:
                decoded = jwt.decode(
                    id_token, _key_set(await self._document(client, jwks, what)), registry=registry
                )
            except InvalidKeyIdError:  # the issuer may have rotated its keys since we cached them
                keys = _key_set(await self._document(client, jwks, what, fresh=True))
                decoded = jwt.decode(id_token, keys, registry=registry)
            claims = CodeIDToken(
                decoded.claims,
                decoded.header,
                {
                    "iss": {"essential": True, "values": issuers},
                    "aud": {"essential": True, "value": provider.client_id},
                },
                {
                    "nonce": state["nonce"],
                    "client_id": provider.client_id,
                    "access_token": token["access_token"],
                },
            )
            claims.validate(leeway=_LEEWAY)
        except JoseError as exc:
            raise BadRequest(
                f"The ID token from '{provider.name}' is not valid: {exc.error}"
                + (f" ({exc.description})." if exc.description else "."),
                {"reason": exc.error},
            ) from None
        result: Mapping[str, Any] = claims
        return result

    async def _github_identity(
        self, client: httpx.AsyncClient, endpoints: _Endpoints, token: Document
    ) -> _Identity:
        headers = {
            "Authorization": f"Bearer {token['access_token']}",
            "Accept": "application/vnd.github+json",
        }
        user = await _call(client, "GET", str(endpoints.userinfo), "GitHub's user API", headers)
        emails = await _call(client, "GET", str(endpoints.emails), "GitHub's email API", headers)
        if not isinstance(user, dict) or not isinstance(user.get("id"), int | str):
            raise BadRequest("GitHub's user API did not name the user.")
        primary = _primary(emails)
        return _Identity(
            str(endpoints.userinfo),
            str(user["id"]),
            primary.get("email"),
            primary.get("verified") is True,
        )

    # users and identities

    async def _user_for(self, provider: Provider, identity: _Identity, email: str) -> Document:
        """The user this identity signs in as: linked before, else by email, else new."""
        key = hashlib.sha256(
            f"{provider.name}\n{identity.issuer}\n{identity.subject}".encode()
        ).hexdigest()
        for _ in range(3):
            try:
                return await self._link(key, provider, identity, email)
            except (Conflict, NotFound):
                continue  # a concurrent sign-in or change got there first; look again
        raise Conflict("The account kept changing during sign-in; try again.")

    async def _link(
        self, key: str, provider: Provider, identity: _Identity, email: str
    ) -> Document:
        """One attempt at `_user_for`; a Conflict or NotFound means something changed meanwhile."""
        ops: list[WriteOp] = []
        link = await self.storage.get(IDENTITIES, key)
        if link is not None:
            user = await self.auth.user_by_id(str(jsonutil.loads(link.doc)["user"]))
            if user is not None:
                return user
            ops.append(Delete(IDENTITIES, key, link.version))  # its user was deleted
        now = now_rfc3339()
        user = await self.auth.user_by_email(email)
        created = user is None
        if user is None:
            user = {
                "id": new_id(),
                "email": email,
                "verified": True,
                "role": "user",
                "data": {},
                "created": now,
                "updated": now,
                "version": 1,
            }
            ops.append(Insert(USERS, str(user["id"]), 1, jsonutil.dumps_str(user)))
        elif user["verified"] is not True:
            user = await self._claim(user)
        record = {
            "id": key,
            "provider": provider.name,
            "issuer": identity.issuer,
            "subject": identity.subject,
            "user": user["id"],
            "email": email,
            "created": now,
            "version": 1,
        }
        ops.append(Insert(IDENTITIES, key, 1, jsonutil.dumps_str(record)))
        await self.storage.apply(ops)
        if created:
            self.auth.data.events.publish([RecordEvent(USERS, "create", public_user(user))])
        return user

    async def _claim(self, user: Document) -> Document:
        """Take over an unverified account whose address the provider has just proven.

        Whoever set its password never proved they own the address (it may have
        been registered ahead of the real owner), so the password and the
        account's sessions go; the owner can set a new password while signed in.
        """
        user_id = str(user["id"])
        ops: list[Delete] = []
        if await self.storage.get(PASSWORDS, user_id) is not None:
            ops.append(Delete(PASSWORDS, user_id))
        sessions = await self.storage.query(
            Query(SESSIONS, parse_filter({"user": user_id}), (IndexKey(("id",)),), 1000)
        )
        ops += [Delete(SESSIONS, jsonutil.loads(s)["id"]) for s in sessions.docs]
        if ops:
            await self.storage.apply(ops)
        # Through the service, so cached sessions are forgotten and the update is announced.
        return await self.auth.update_user(SECRET_KEY, user_id, {"verified": True})


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=_TIMEOUT,
        follow_redirects=False,
        headers={"Accept": "application/json", "User-Agent": f"Backpack/{__version__}"},
    )


async def _call(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    what: str,
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
    *,
    refused: type[BackpackError] = BadRequest,
) -> Any:
    """The JSON a provider answers; its refusals become `refused`, its failures 503."""
    try:
        response = await client.request(method, url, headers=headers, content=body)
    except httpx.HTTPError as exc:
        raise Unavailable(f"Could not reach {what}: {type(exc).__name__}.") from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    # GitHub reports a bad code with 200 and an error body; OAuth servers with 400.
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        described = answer.get("error_description")
        raise refused(
            f"{_upper(what)} refused: {answer['error'][:100]}"
            + (f" ({str(described)[:200]})." if described else "."),
            {"provider_error": answer["error"][:100]},
        )
    if response.status_code >= 500 or (answer is None and response.status_code == 200):
        raise Unavailable(f"{_upper(what)} answered HTTP {response.status_code}.")
    if response.status_code != 200 or answer is None:
        raise refused(f"{_upper(what)} answered HTTP {response.status_code}.")
    return answer


def _primary(emails: Any) -> Mapping[str, Any]:
    """The primary address in GitHub's /user/emails answer (empty when there is none)."""
    if isinstance(emails, list):
        for entry in emails:
            if isinstance(entry, dict) and entry.get("primary") is True:
                return entry
    return {}


def _upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _key_set(document: Any) -> KeySet:
    try:
        return KeySet.import_key_set(document)
    except (JoseError, ValueError, KeyError, TypeError):
        raise Unavailable("The provider's key set (jwks_uri) is not a valid JWK set.") from None


def _is_url(value: object) -> bool:
    return (
        isinstance(value, str)
        and value.startswith(("https://", "http://"))
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )
