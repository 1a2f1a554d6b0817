"""Files over HTTP: upload, metadata, content with ranges, buckets, signed URLs, thumbnails."""

from __future__ import annotations

import io
import secrets
import socket
import time
import zlib
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from tests.conftest import RunningServer
from tests.e2e.helpers import error_of


def png_bytes(width: int = 40, height: int = 20, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def user_token(server: RunningServer) -> tuple[str, dict[str, str]]:
    response = httpx.post(
        server.url + "/api/auth/signup",
        json={"email": f"f{secrets.token_hex(5)}@example.com", "password": "file password"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["user"]["id"], {"Authorization": f"Bearer {body['token']}"}


def upload(
    server: RunningServer,
    headers: dict[str, str],
    data: bytes,
    name: str = "a.bin",
    mime: str = "application/octet-stream",
    **fields: str,
) -> httpx.Response:
    return httpx.post(
        server.url + "/api/files",
        data=fields,
        files={"file": (name, data, mime)},
        headers=headers,
        timeout=60,
    )


@pytest.fixture
def bucket(admin: httpx.Client) -> str:
    name = "b_" + secrets.token_hex(4)
    rules = {
        "list": {"owner": "@auth.id"},
        "read": {"owner": "@auth.id"},
        "create": {"@auth": {"$ne": None}},
        "update": {"owner": "@auth.id"},
        "delete": {"owner": "@auth.id"},
    }
    response = admin.put(f"/api/buckets/{name}", json={"rules": rules})
    assert response.status_code == 200, response.text
    return name


def test_upload_metadata_and_content(server: RunningServer, bucket: str) -> None:
    user_id, headers = user_token(server)
    image = png_bytes()
    created = upload(server, headers, image, "photo.txt", "text/plain", bucket=bucket)
    assert created.status_code == 201, created.text
    file = created.json()
    assert file["type"] == "image/png"  # sniffed from the bytes, not the client's word
    assert file["size"] == len(image) and file["owner"] == user_id and file["public"] is False
    assert file["bucket"] == bucket and file["name"] == "photo.txt"
    assert len(file["sha256"]) == 64
    assert httpx.get(f"{server.url}/api/files/{file['id']}", headers=headers).json() == file
    content = httpx.get(f"{server.url}/api/files/{file['id']}/content", headers=headers)
    assert content.status_code == 200 and content.content == image
    assert content.headers["content-type"] == "image/png"
    assert content.headers["content-length"] == str(len(image))
    assert content.headers["etag"] == f'"{file["sha256"]}"'
    assert content.headers["accept-ranges"] == "bytes"
    assert content.headers["content-disposition"].startswith("inline")
    assert "last-modified" in content.headers
    again = httpx.get(
        f"{server.url}/api/files/{file['id']}/content",
        headers={**headers, "If-None-Match": content.headers["etag"]},
    )
    assert again.status_code == 304
    since = httpx.get(
        f"{server.url}/api/files/{file['id']}/content",
        headers={**headers, "If-Modified-Since": content.headers["last-modified"]},
    )
    assert since.status_code == 304
    attachment = httpx.get(
        f"{server.url}/api/files/{file['id']}/content?download=1", headers=headers
    )
    assert attachment.headers["content-disposition"].startswith("attachment")
    listed = httpx.get(server.url + "/api/files", params={"bucket": bucket}, headers=headers).json()
    assert [f["id"] for f in listed["items"]] == [file["id"]]


def test_ranges(server: RunningServer, bucket: str) -> None:
    _, headers = user_token(server)
    data = bytes(range(256)) * 4
    file = upload(server, headers, data, bucket=bucket).json()
    url = f"{server.url}/api/files/{file['id']}/content"

    def get(spec: str) -> httpx.Response:
        return httpx.get(url, headers={**headers, "Range": spec})

    part = get("bytes=10-19")
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    assert get("bytes=1000-").content == data[1000:]
    assert get("bytes=-5").content == data[-5:]
    assert get("bytes=0-99999").content == data
    for bad in ["bytes=5-2", "bytes=-0", "bytes=5000-"]:
        refused = get(bad)
        error_of(refused, 416, "range_not_satisfiable")
        assert refused.headers["content-range"] == f"bytes */{len(data)}"
    multiple = get("bytes=0-1,5-6")
    assert multiple.status_code == 200 and multiple.content == data
    assert get("items=0-5").status_code == 200
    # HEAD tells what a GET would send, the length included, without the bytes.
    head = httpx.head(url, headers=headers)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data))
    head_part = httpx.head(url, headers={**headers, "Range": "bytes=10-19"})
    assert head_part.status_code == 206 and head_part.headers["content-length"] == "10"


def test_names_are_made_safe(server: RunningServer, bucket: str) -> None:
    _, headers = user_token(server)
    for hostile in [
        "../../etc/passwd",
        "/abs/path.txt",
        "a\x00b.txt",
        "tab\tand\nnew.txt",
        "x" * 10_000,
    ]:
        response = upload(server, headers, b"hello", hostile, bucket=bucket)
        assert response.status_code == 201, response.text
        name = response.json()["name"]
        assert "/" not in name and "\x00" not in name and "\n" not in name
        assert 0 < len(name.encode()) <= 255
    html = upload(
        server, headers, b"<html><script>alert(1)</script></html>", "page.png", bucket=bucket
    )
    file = html.json()
    assert file["type"].startswith("text/html")
    served = httpx.get(f"{server.url}/api/files/{file['id']}/content", headers=headers)
    assert served.headers["content-disposition"].startswith("attachment")
    assert served.headers["x-content-type-options"] == "nosniff"


def test_bucket_limits(server: RunningServer, admin: httpx.Client, bucket: str) -> None:
    _, headers = user_token(server)
    admin.put(f"/api/buckets/{bucket}", json={"max_size": 1000, "allowed_types": ["image/*"]})
    error_of(
        upload(server, headers, png_bytes(400, 400, "blue") + b"x" * 2000, bucket=bucket),
        413,
        "payload_too_large",
    )
    error_of(upload(server, headers, b"plain text", bucket=bucket), 415, "unsupported_media_type")
    small = upload(server, headers, png_bytes(4, 4), bucket=bucket)
    assert small.status_code == 201, small.text
    listed = httpx.get(server.url + "/api/files", params={"bucket": bucket}, headers=headers).json()
    assert len(listed["items"]) == 1
    temp = server.data_dir / "blobs" / "tmp"
    assert not temp.exists() or list(temp.iterdir()) == []
    for bad in [
        {"max_size": 0},
        {"allowed_types": ["not a type"]},
        {"rules": {"read": "x"}},
        {"x": 1},
    ]:
        error_of(admin.put(f"/api/buckets/{bucket}", json=bad), 400, "validation_failed")
    error_of(admin.put("/api/buckets/bad name", json={}), 400, "bad_request")


def test_bad_uploads(server: RunningServer, bucket: str) -> None:
    _, headers = user_token(server)
    url = server.url + "/api/files"
    boundary = "XyZ"
    truncated = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="bucket"\r\n\r\n{bucket}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        "Content-Type: text/plain\r\n\r\nhalf of a fi"
    ).encode()
    response = httpx.post(
        url,
        content=truncated,
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    error_of(response, 400, "bad_request")
    error_of(httpx.post(url, json={"file": "x"}, headers=headers), 415, "unsupported_media_type")
    error_of(
        httpx.post(url, data={"bucket": bucket}, files={"other": ("a", b"x")}, headers=headers),
        400,
        "bad_request",
    )
    no_file = httpx.post(
        url,
        content=f"--{boundary}--\r\n".encode(),
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    error_of(no_file, 400, "bad_request")
    error_of(upload(server, {}, b"anonymous", bucket=bucket), 403, "forbidden")
    error_of(upload(server, headers, b"x", bucket="no_such_bucket"), 404, "not_found")
    listed = httpx.get(url, params={"bucket": bucket}, headers=headers).json()
    assert listed["items"] == []


def test_disconnect_mid_upload_leaves_nothing(server: RunningServer, bucket: str) -> None:
    _, headers = user_token(server)
    parsed = urlsplit(server.url)
    boundary = "Bnd"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="bucket"\r\n\r\n{bucket}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    declared = len(head) + 10_000_000
    with socket.create_connection((parsed.hostname, parsed.port)) as sock:
        sock.sendall(
            (
                f"POST /api/files HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
                f"Authorization: {headers['Authorization']}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {declared}\r\n\r\n"
            ).encode()
            + head
            + b"z" * 3_000_000
        )
        time.sleep(0.3)
    time.sleep(1.0)
    listed = httpx.get(server.url + "/api/files", params={"bucket": bucket}, headers=headers).json()
    assert listed["items"] == []
    temp = server.data_dir / "blobs" / "tmp"
    assert not temp.exists() or list(temp.iterdir()) == []


def test_private_and_public_files(server: RunningServer, bucket: str) -> None:
    _, alice = user_token(server)
    _, bob = user_token(server)
    private = upload(server, alice, b"secret", bucket=bucket).json()
    public = upload(server, alice, b"shared", bucket=bucket, public="true").json()
    assert public["public"] is True
    error_of(httpx.get(f"{server.url}/api/files/{private['id']}", headers=bob), 404, "not_found")
    error_of(
        httpx.get(f"{server.url}/api/files/{private['id']}/content", headers=bob), 404, "not_found"
    )
    error_of(httpx.get(f"{server.url}/api/files/{private['id']}/content"), 404, "not_found")
    assert httpx.get(f"{server.url}/api/files/{public['id']}/content").content == b"shared"
    assert (
        httpx.get(server.url + "/api/files", params={"bucket": bucket}, headers=bob).json()["items"]
        == []
    )
    error_of(
        httpx.patch(f"{server.url}/api/files/{private['id']}", json={"public": True}, headers=bob),
        404,
        "not_found",
    )
    error_of(httpx.delete(f"{server.url}/api/files/{private['id']}", headers=bob), 404, "not_found")
    assert (
        httpx.get(f"{server.url}/api/files/{private['id']}/content", headers=alice).content
        == b"secret"
    )


def test_patch_replace_delete_and_dedup(
    server: RunningServer, admin: httpx.Client, bucket: str
) -> None:
    _, headers = user_token(server)
    first = upload(server, headers, b"same bytes", "one.txt", bucket=bucket).json()
    second = upload(server, headers, b"same bytes", "two.txt", bucket=bucket).json()
    assert first["sha256"] == second["sha256"]
    renamed = httpx.patch(
        f"{server.url}/api/files/{first['id']}",
        json={"name": "../renamed.txt", "public": True},
        headers=headers,
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "renamed.txt" and renamed.json()["public"] is True
    error_of(
        httpx.patch(f"{server.url}/api/files/{first['id']}", json={"size": 1}, headers=headers),
        400,
        "validation_failed",
    )
    error_of(
        httpx.patch(
            f"{server.url}/api/files/{first['id']}", json={"bucket": "nope_nope"}, headers=headers
        ),
        404,
        "not_found",
    )
    replaced = httpx.put(
        f"{server.url}/api/files/{first['id']}/content", content=b"new content", headers=headers
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["size"] == 11 and replaced.json()["sha256"] != first["sha256"]
    assert (
        httpx.get(f"{server.url}/api/files/{first['id']}/content", headers=headers).content
        == b"new content"
    )
    assert (
        httpx.delete(f"{server.url}/api/files/{second['id']}", headers=headers).status_code == 204
    )
    error_of(
        httpx.get(f"{server.url}/api/files/{second['id']}/content", headers=headers),
        404,
        "not_found",
    )
    assert (
        httpx.get(f"{server.url}/api/files/{first['id']}/content", headers=headers).content
        == b"new content"
    )


def test_signed_urls(server: RunningServer, bucket: str) -> None:
    _, headers = user_token(server)
    file = upload(server, headers, b"signed content", bucket=bucket).json()
    response = httpx.post(
        f"{server.url}/api/files/{file['id']}/url", json={"expires_in": 60}, headers=headers
    )
    assert response.status_code == 200, response.text
    url = response.json()["url"]
    assert httpx.get(url).content == b"signed content"
    other = upload(server, headers, b"other", bucket=bucket).json()
    for tampered in [
        url.replace(file["id"], other["id"]),
        url.replace("expires=", "expires=9"),
        url[:-1] + ("0" if url[-1] != "0" else "1"),
        url.split("&sig=")[0],
    ]:
        error_of(httpx.get(tampered), 403, "forbidden")
    short = httpx.post(
        f"{server.url}/api/files/{file['id']}/url", json={"expires_in": 1}, headers=headers
    ).json()["url"]
    time.sleep(2.1)
    error_of(httpx.get(short), 403, "forbidden")
    for bad in [{"expires_in": 0}, {"expires_in": "x"}, {"expires_in": 10**9}]:
        error_of(
            httpx.post(f"{server.url}/api/files/{file['id']}/url", json=bad, headers=headers),
            400,
            "validation_failed",
        )


def test_thumbnails(server: RunningServer, bucket: str) -> None:
    _, headers = user_token(server)
    image = upload(server, headers, png_bytes(400, 200), bucket=bucket).json()
    base = f"{server.url}/api/files/{image['id']}/content"
    for spec, size in [
        ("100x100", (100, 100)),
        ("100x0", (100, 50)),
        ("0x50", (100, 50)),
        ("100x100f", (100, 50)),
    ]:
        thumb = httpx.get(f"{base}?thumb={spec}", headers=headers)
        assert thumb.status_code == 200, thumb.text
        assert Image.open(io.BytesIO(thumb.content)).size == size
        cached = httpx.get(f"{base}?thumb={spec}", headers=headers)
        assert cached.content == thumb.content
    error_of(httpx.get(f"{base}?thumb=0x0", headers=headers), 400, "bad_request")
    error_of(httpx.get(f"{base}?thumb=big", headers=headers), 400, "bad_request")
    text = upload(server, headers, b"not an image", bucket=bucket).json()
    error_of(
        httpx.get(f"{server.url}/api/files/{text['id']}/content?thumb=10x10", headers=headers),
        415,
        "unsupported_media_type",
    )
    bomb = upload(server, headers, _png_header(50_000, 50_000), bucket=bucket).json()
    assert bomb["type"] == "image/png"
    started = time.monotonic()
    error_of(
        httpx.get(f"{server.url}/api/files/{bomb['id']}/content?thumb=10x10", headers=headers),
        400,
        "bad_request",
    )
    assert time.monotonic() - started < 10


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def test_admin_sees_all_files_and_bucket_list(
    admin: httpx.Client, server: RunningServer, bucket: str
) -> None:
    _, headers = user_token(server)
    upload(server, headers, b"admin can see", bucket=bucket)
    assert admin.get("/api/files", params={"bucket": bucket}).json()["items"][0]["owner"]
    names = [b["name"] for b in admin.get("/api/buckets").json()["items"]]
    assert "default" in names and bucket in names
    assert admin.get(f"/api/buckets/{bucket}").json()["name"] == bucket
    error_of(httpx.get(server.url + "/api/buckets", headers=headers), 403, "forbidden")


def test_secret_key_upload_creates_the_bucket(server: RunningServer, admin: httpx.Client) -> None:
    name = "new_" + secrets.token_hex(4)
    key = {"Authorization": f"Bearer {server.key}"}
    stored = upload(server, key, b"made by the key", bucket=name)
    assert stored.status_code == 201, stored.text
    file_id = stored.json()["id"]
    assert admin.get(f"/api/buckets/{name}").json()["rules"]["read"] == {"owner": "@auth.id"}
    assert admin.get(f"/api/files/{file_id}").status_code == 200
    assert admin.delete(f"/api/files/{file_id}").status_code == 204
