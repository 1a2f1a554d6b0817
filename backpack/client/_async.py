"""The asynchronous Backpack client (httpx.AsyncClient; realtime over websockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from backpack.client._errors import (
    AnyList,
    BackpackError,
    JSONDict,
    JSONList,
    MappingList,
    Page,
    StrList,
    Unauthorized,
    build_url,
    check_collection,
    check_dict,
    check_email,
    check_id,
    check_password,
    check_thumb,
    check_timeout,
    check_token,
    connection_error,
    handle_response,
    if_match_header,
    if_match_version,
    join_list,
    list_query,
    normalize_base_url,
    raise_for_error_stream,
    upload_parts,
)

if TYPE_CHECKING:
    from backpack.client._realtime import Realtime

__all__ = ["AsyncClient"]


class AsyncClient:
    """Talks to one backpack. `token` is a user session (bps_) or a secret key (bpk_).

    Use it as `async with AsyncClient(url) as client:` (or call `await client.aclose()`).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        if token is not None:
            check_token(token, "token")
        self.timeout = check_timeout(timeout)
        self._http = httpx.AsyncClient(timeout=self.timeout, transport=transport)
        self.auth = AsyncAuth(self, token)
        self.collections = AsyncCollections(self)
        self.users = AsyncUsers(self)
        self.settings = AsyncSettings(self)
        self.files = AsyncFiles(self)
        self.buckets = AsyncBuckets(self)

    @property
    def token(self) -> str | None:
        return self.auth.token

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def url(self, path: str, query: Mapping[str, str | None] | None = None) -> str:
        return build_url(self.base_url, path, query)

    def _headers(self, extra: Mapping[str, str] | None, auth: bool) -> dict[str, str]:
        headers = {"Accept": "application/json", **(extra or {})}
        token = self.auth.token if auth else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _after_error(self, exc: BackpackError, token: str | None) -> None:
        # A revoked / expired session: this client is signed out.
        if (
            isinstance(exc, Unauthorized)
            and token
            and token == self.auth.token
            and token.startswith("bps_")
        ):
            self.auth._set(None, None)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | None] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        data: Mapping[str, str] | None = None,
        files: Any = None,
    ) -> Any:
        """Sends one request and returns the parsed JSON body (None for 204)."""
        hdrs = self._headers(headers, auth)
        kwargs: dict[str, Any] = {}
        if json is not None:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        if files is not None:
            kwargs["files"] = files
        try:
            response = await self._http.request(
                method, self.url(path, query), headers=hdrs, **kwargs
            )
        except httpx.TransportError as exc:
            raise connection_error(self.base_url, exc) from exc
        try:
            return handle_response(response)
        except BackpackError as exc:
            self._after_error(exc, hdrs.get("Authorization", "")[7:] or None)
            raise

    def collection(self, name: str) -> AsyncCollection:
        return AsyncCollection(self, check_collection(name))

    def batch(self) -> AsyncBatch:
        return AsyncBatch(self)

    async def health(self) -> JSONDict:
        out: JSONDict = await self.request("GET", "/api/health", auth=False)
        return out

    def realtime(
        self, *, min_delay: float = 0.25, max_delay: float = 10.0, ping_interval: float = 25.0
    ) -> Realtime:
        """One WebSocket for subscriptions and channels: `async with client.realtime() as rt:`."""
        from backpack.client._realtime import Realtime

        return Realtime(self, min_delay=min_delay, max_delay=max_delay, ping_interval=ping_interval)


# ---------------------------------------------------------------- records


class AsyncCollection:
    def __init__(self, client: AsyncClient, name: str) -> None:
        self.client = client
        self.name = name
        self.path = f"/api/collections/{name}/records"

    async def list(
        self,
        *,
        filter: Mapping[str, Any] | str | None = None,
        sort: str | StrList | None = None,
        limit: int | None = None,
        after: str | None = None,
        offset: int | None = None,
        fields: str | StrList | None = None,
        expand: str | StrList | None = None,
        count: bool = False,
    ) -> Page:
        query = list_query(
            filter=filter,
            sort=sort,
            limit=limit,
            after=after,
            offset=offset,
            fields=fields,
            expand=expand,
            count=count,
        )
        return Page.from_body(await self.client.request("GET", self.path, query=query))

    async def iterate(
        self,
        *,
        filter: Mapping[str, Any] | str | None = None,
        sort: str | StrList | None = None,
        limit: int | None = None,
        after: str | None = None,
        fields: str | StrList | None = None,
        expand: str | StrList | None = None,
    ) -> AsyncIterator[JSONDict]:
        """Every record matching, page after page."""
        list_query(filter=filter, sort=sort, limit=limit, after=after, fields=fields, expand=expand)
        cursor = after
        while True:
            page = await self.list(
                filter=filter, sort=sort, limit=limit, after=cursor, fields=fields, expand=expand
            )
            for item in page.items:
                yield item
            if not page.next:
                return
            cursor = page.next

    async def get(
        self,
        id: str,
        *,
        fields: str | StrList | None = None,
        expand: str | StrList | None = None,
    ) -> JSONDict:
        check_id(id)
        query = {"fields": join_list(fields, "fields"), "expand": join_list(expand, "expand")}
        out: JSONDict = await self.client.request("GET", f"{self.path}/{id}", query=query)
        return out

    async def create(self, data: Mapping[str, Any]) -> JSONDict:
        body = check_dict(data, "data")
        out: JSONDict = await self.client.request("POST", self.path, json=body)
        return out

    async def update(self, id: str, patch: Mapping[str, Any], *, if_match: Any = None) -> JSONDict:
        """JSON merge patch (None removes a field); if_match: a version, a record or an ETag."""
        check_id(id)
        body = check_dict(patch, "patch")
        out: JSONDict = await self.client.request(
            "PATCH", f"{self.path}/{id}", json=body, headers=if_match_header(if_match)
        )
        return out

    async def replace(self, id: str, data: Mapping[str, Any], *, if_match: Any = None) -> JSONDict:
        check_id(id)
        body = check_dict(data, "data")
        out: JSONDict = await self.client.request(
            "PUT", f"{self.path}/{id}", json=body, headers=if_match_header(if_match)
        )
        return out

    async def delete(self, id: str, *, if_match: Any = None) -> None:
        check_id(id)
        await self.client.request("DELETE", f"{self.path}/{id}", headers=if_match_header(if_match))


class AsyncBatch:
    """Operations committed together, all or nothing.

    `await client.batch().create("todos", {...}).delete("todos", id).commit()`
    """

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.ops: JSONList = []

    def _op(self, op: str, collection: str, id: str | None, data: Any, if_match: Any) -> AsyncBatch:
        entry: JSONDict = {"op": op, "collection": check_collection(collection)}
        if id is not None:
            entry["id"] = check_id(id)
        if data is not None:
            entry["data"] = check_dict(data, "data")
        version = if_match_version(if_match)
        if version is not None:
            entry["if_match"] = version
        if len(self.ops) >= 1000:
            raise ValueError("a batch holds at most 1000 operations")
        self.ops.append(entry)
        return self

    def create(self, collection: str, data: Mapping[str, Any]) -> AsyncBatch:
        return self._op("create", collection, None, data, None)

    def update(
        self, collection: str, id: str, patch: Mapping[str, Any], *, if_match: Any = None
    ) -> AsyncBatch:
        return self._op("update", collection, id, patch, if_match)

    def replace(
        self, collection: str, id: str, data: Mapping[str, Any], *, if_match: Any = None
    ) -> AsyncBatch:
        return self._op("replace", collection, id, data, if_match)

    def delete(self, collection: str, id: str, *, if_match: Any = None) -> AsyncBatch:
        return self._op("delete", collection, id, None, if_match)

    def __len__(self) -> int:
        return len(self.ops)

    async def commit(self) -> AnyList:
        if not self.ops:
            return []
        out = await self.client.request("POST", "/api/batch", json={"ops": self.ops})
        self.ops = []
        results: AnyList = out["results"]
        return results


# ---------------------------------------------------------------- admin


class AsyncCollections:
    """Collection administration (secret key or admin token)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def list(self) -> JSONList:
        out = await self.client.request("GET", "/api/collections")
        items: JSONList = out["items"]
        return items

    async def create(
        self,
        name: str,
        *,
        schema: Mapping[str, Any] | None = None,
        rules: Mapping[str, Any] | None = None,
        indexes: MappingList | None = None,
    ) -> JSONDict:
        body: JSONDict = {"name": check_collection(name)}
        if schema is not None:
            body["schema"] = check_dict(schema, "schema")
        if rules is not None:
            body["rules"] = check_dict(rules, "rules")
        if indexes is not None:
            body["indexes"] = [check_dict(i, "index") for i in indexes]
        out: JSONDict = await self.client.request("POST", "/api/collections", json=body)
        return out

    async def get(self, name: str) -> JSONDict:
        out: JSONDict = await self.client.request(
            "GET", f"/api/collections/{check_collection(name)}"
        )
        return out

    async def update(self, name: str, changes: Mapping[str, Any]) -> JSONDict:
        out: JSONDict = await self.client.request(
            "PATCH",
            f"/api/collections/{check_collection(name)}",
            json=check_dict(changes, "changes"),
        )
        return out

    async def delete(self, name: str) -> None:
        await self.client.request("DELETE", f"/api/collections/{check_collection(name)}")


class AsyncUsers:
    """User administration (secret key or admin token)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def list(
        self,
        *,
        filter: Mapping[str, Any] | str | None = None,
        sort: str | StrList | None = None,
        limit: int | None = None,
        after: str | None = None,
        count: bool = False,
    ) -> Page:
        query = list_query(filter=filter, sort=sort, limit=limit, after=after, count=count)
        return Page.from_body(await self.client.request("GET", "/api/users", query=query))

    async def create(
        self,
        *,
        email: str,
        password: str,
        data: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> JSONDict:
        body: JSONDict = {"email": check_email(email), "password": check_password(password)}
        if data is not None:
            body["data"] = check_dict(data, "data")
        body.update(extra)
        out: JSONDict = await self.client.request("POST", "/api/users", json=body)
        return out

    async def get(self, id: str) -> JSONDict:
        out: JSONDict = await self.client.request("GET", f"/api/users/{check_id(id)}")
        return out

    async def update(self, id: str, changes: Mapping[str, Any]) -> JSONDict:
        out: JSONDict = await self.client.request(
            "PATCH", f"/api/users/{check_id(id)}", json=check_dict(changes, "changes")
        )
        return out

    async def delete(self, id: str) -> None:
        await self.client.request("DELETE", f"/api/users/{check_id(id)}")


class AsyncSettings:
    """The backpack's settings (secret key or admin token); secrets come back masked."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def get(self) -> JSONDict:
        out: JSONDict = await self.client.request("GET", "/api/settings")
        return out

    async def update(self, changes: Mapping[str, Any]) -> JSONDict:
        out: JSONDict = await self.client.request(
            "PATCH", "/api/settings", json=check_dict(changes, "changes")
        )
        return out


class AsyncBuckets:
    """Bucket administration (secret key): `put` creates or changes a bucket."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def list(self) -> JSONList:
        out = await self.client.request("GET", "/api/buckets")
        items: JSONList = out["items"] if isinstance(out, dict) else out
        return items

    async def get(self, name: str) -> JSONDict:
        out: JSONDict = await self.client.request(
            "GET", f"/api/buckets/{check_collection(name, 'bucket name')}"
        )
        return out

    async def put(self, name: str, settings: Mapping[str, Any] | None = None) -> JSONDict:
        out: JSONDict = await self.client.request(
            "PUT",
            f"/api/buckets/{check_collection(name, 'bucket name')}",
            json=check_dict(settings or {}, "settings"),
        )
        return out


# ---------------------------------------------------------------- auth


class AsyncAuth:
    """Sign-up, sign-in and the current session; the token lives in memory on the client."""

    def __init__(self, client: AsyncClient, token: str | None) -> None:
        self.client = client
        self._token = token
        self._user: JSONDict | None = None
        self._listeners: list[Callable[[], None]] = []

    @property
    def token(self) -> str | None:
        return self._token

    @property
    def user(self) -> JSONDict | None:
        """The signed-in user as last seen (after signup, login, me or update)."""
        return self._user

    def _set(self, token: str | None, user: JSONDict | None) -> None:
        changed = token != self._token
        self._token = token
        self._user = user if token else None
        if changed:
            for listener in list(self._listeners):
                listener()

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Calls callback() when the token changes (sign-in, sign-out, 401); returns a remover."""
        self._listeners.append(callback)
        listeners = self._listeners
        return lambda: listeners.remove(callback) if callback in listeners else None

    def set_token(self, token: str | None) -> None:
        """Uses a token you already have (or None to forget it)."""
        if token is not None:
            check_token(token, "token")
        self._set(token, None)

    async def signup(
        self, *, email: str, password: str, data: Mapping[str, Any] | None = None
    ) -> JSONDict:
        body: JSONDict = {"email": check_email(email), "password": check_password(password)}
        if data is not None:
            body["data"] = check_dict(data, "data")
        out = await self.client.request("POST", "/api/auth/signup", json=body, auth=False)
        self._set(out["token"], out["user"])
        user: JSONDict = out["user"]
        return user

    async def login(self, *, email: str, password: str) -> JSONDict:
        body = {"email": check_email(email), "password": check_password(password)}
        out = await self.client.request("POST", "/api/auth/login", json=body, auth=False)
        self._set(out["token"], out["user"])
        user: JSONDict = out["user"]
        return user

    async def logout(self) -> None:
        """Revokes this session on the server and forgets it (also when already revoked)."""
        token = self._token
        try:
            if token:
                await self.client.request("POST", "/api/auth/logout")
        except BackpackError as exc:
            if exc.status not in (0, 401):
                raise
        finally:
            if self._token == token:
                self._set(None, None)

    async def me(self) -> JSONDict:
        user: JSONDict = await self.client.request("GET", "/api/auth/me")
        if self._token:
            self._user = user
        return user

    async def update(self, changes: Mapping[str, Any]) -> JSONDict:
        user: JSONDict = await self.client.request(
            "PATCH", "/api/auth/me", json=check_dict(changes, "changes")
        )
        if self._token:
            self._user = user
        return user

    async def request_password_reset(self, email: str) -> None:
        await self.client.request(
            "POST", "/api/auth/password/request", json={"email": check_email(email)}, auth=False
        )

    async def confirm_password_reset(self, token: str, password: str) -> None:
        body = {"token": check_token(token, "token"), "password": check_password(password)}
        await self.client.request("POST", "/api/auth/password/confirm", json=body, auth=False)

    async def request_verification(self) -> None:
        await self.client.request("POST", "/api/auth/verify/request")

    async def confirm_verification(self, token: str) -> JSONDict | None:
        """Confirms the address; returns the verified user (and refreshes `user`)."""
        body = {"token": check_token(token, "token")}
        out = await self.client.request("POST", "/api/auth/verify/confirm", json=body)
        if isinstance(out, dict) and self._token and out.get("id") == (self._user or {}).get("id"):
            self._user = out
        return out if isinstance(out, dict) else None

    async def sessions(self) -> JSONList:
        out = await self.client.request("GET", "/api/auth/sessions")
        items: JSONList = out["items"]
        return items

    async def revoke_session(self, id: str) -> None:
        await self.client.request("DELETE", f"/api/auth/sessions/{check_id(id, 'session id')}")

    async def providers(self) -> JSONList:
        out = await self.client.request("GET", "/api/auth/providers", auth=False)
        items: JSONList = out["items"]
        return items

    def oauth_url(self, provider: str, *, redirect: str | None = None) -> str:
        """The URL that starts an OAuth sign-in in a browser."""
        check_collection(provider, "provider")
        return self.client.url(f"/api/auth/oauth/{provider}", {"redirect": redirect})


# ---------------------------------------------------------------- files


class AsyncFiles:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def upload(
        self,
        data: Any,
        *,
        bucket: str | None = None,
        name: str | None = None,
        public: bool | None = None,
    ) -> JSONDict:
        """Uploads bytes, a binary file object or a path (streamed from disk)."""
        parts = upload_parts(data, bucket=bucket, name=name, public=public)
        try:
            out: JSONDict = await self.client.request(
                "POST",
                "/api/files",
                data=parts.data,
                files={"file": (parts.name, parts.stream, "application/octet-stream")},
            )
        finally:
            if parts.close is not None:
                parts.close.close()
        return out

    async def get(self, id: str) -> JSONDict:
        out: JSONDict = await self.client.request("GET", f"/api/files/{check_id(id)}")
        return out

    async def list(
        self,
        *,
        bucket: str | None = None,
        filter: Mapping[str, Any] | str | None = None,
        sort: str | StrList | None = None,
        limit: int | None = None,
        after: str | None = None,
        count: bool = False,
    ) -> Page:
        query = list_query(filter=filter, sort=sort, limit=limit, after=after, count=count)
        if bucket is not None:
            query["bucket"] = check_collection(bucket, "bucket name")
        return Page.from_body(await self.client.request("GET", "/api/files", query=query))

    async def update(
        self, id: str, changes: Mapping[str, Any], *, if_match: Any = None
    ) -> JSONDict:
        out: JSONDict = await self.client.request(
            "PATCH",
            f"/api/files/{check_id(id)}",
            json=check_dict(changes, "changes"),
            headers=if_match_header(if_match),
        )
        return out

    async def delete(self, id: str, *, if_match: Any = None) -> None:
        await self.client.request(
            "DELETE", f"/api/files/{check_id(id)}", headers=if_match_header(if_match)
        )

    def url(self, id: str, *, thumb: str | None = None, download: bool = False) -> str:
        """The content URL (works as-is for public files)."""
        check_id(id)
        return self.client.url(
            f"/api/files/{id}/content",
            {"thumb": check_thumb(thumb), "download": "1" if download else None},
        )

    async def signed_url(
        self,
        id: str,
        *,
        expires_in: int = 3600,
        thumb: str | None = None,
        download: bool = False,
    ) -> str:
        """A URL that serves the content without credentials for `expires_in` seconds."""
        check_id(id)
        check_thumb(thumb)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 1:
            raise ValueError("expires_in must be a positive number of seconds")
        out = await self.client.request(
            "POST", f"/api/files/{id}/url", json={"expires_in": expires_in}
        )
        url = httpx.URL(self.client.base_url + "/").join(out["url"])
        if thumb is not None:
            url = url.copy_set_param("thumb", thumb)
        if download:
            url = url.copy_set_param("download", "1")
        return str(url)

    async def download(self, id: str, *, thumb: str | None = None) -> bytes:
        """The whole content as bytes."""
        chunks = [c async for c in self.stream(id, thumb=thumb)]
        return b"".join(chunks)

    async def stream(
        self,
        id: str,
        *,
        thumb: str | None = None,
        range: tuple[int, int | None] | str | None = None,
        chunk_size: int = 64 * 1024,
    ) -> AsyncIterator[bytes]:
        """The content in chunks; `range=(start, end)` (inclusive, end may be None) or 'bytes=…'."""
        url = self.url(id, thumb=thumb)
        extra: dict[str, str] = {}
        if range is not None:
            if isinstance(range, str):
                extra["Range"] = range
            elif isinstance(range, tuple) and len(range) == 2 and isinstance(range[0], int):
                end = "" if range[1] is None else str(range[1])
                extra["Range"] = f"bytes={range[0]}-{end}"
            else:
                raise TypeError("range must be (start, end) or a Range header value")
        headers = self.client._headers(extra, True)
        headers["Accept"] = "*/*"
        try:
            async with self.client._http.stream("GET", url, headers=headers) as response:
                if response.status_code >= 400:
                    text = (await response.aread()).decode("utf-8", "replace")
                    raise_for_error_stream(response, text)
                async for chunk in response.aiter_bytes(chunk_size):
                    yield chunk
        except httpx.TransportError as exc:
            raise connection_error(self.client.base_url, exc) from exc
