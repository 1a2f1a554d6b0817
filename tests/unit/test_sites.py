"""Static sites: publishing hostile and honest zips on a real disk, serving them over ASGI."""

from __future__ import annotations

import asyncio
import io
import json
import random
import stat
import struct
import threading
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

import pytest

from backpack.errors import BadRequest, PayloadTooLarge
from backpack.platform.sites import (
    SiteInfo,
    SiteServer,
    cache_control,
    content_type,
    publish_site,
    remove_site,
    site_info,
)

INDEX = b"<!doctype html><title>app</title>"
BIG = random.Random(7).randbytes(3 * 1024 * 1024)


def make_zip(path: Path, entries: dict[str, bytes], *, deflate: bool = True) -> Path:
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def zip_of_infos(path: Path, entries: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w") as zf:
            for info, data in entries:
                zf.writestr(info, data)
    return path


def unix_entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def snapshot(root: Path) -> dict[str, str | bytes]:
    """Everything under root: files with their bytes, links with their targets."""
    if not root.exists():
        return {}
    seen: dict[str, str | bytes] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            seen[key] = "-> " + str(path.readlink())
        elif path.is_dir():
            seen[key] = "dir"
        else:
            seen[key] = path.read_bytes()
    return seen


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return tmp_path / "site"


@pytest.fixture
def published(tmp_path: Path, site: Path) -> Path:
    archive = make_zip(tmp_path / "v1.zip", {"index.html": INDEX, "assets/app.js": b"v1()"})
    publish_site(site, archive)
    return site


# ----------------------------------------------------------------------------- ASGI


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks: list[bytes]

    def json(self) -> dict[str, object]:
        value: dict[str, object] = json.loads(self.body)
        return value


async def call(
    server: SiteServer,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> Reply:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await server(scope, receive, send, path, extra or ())
    start, *bodies = sent
    assert start["type"] == "http.response.start"
    assert bodies and all(m["type"] == "http.response.body" for m in bodies)
    assert [m.get("more_body", False) for m in bodies] == [True] * (len(bodies) - 1) + [False]
    raw_headers = start["headers"]
    assert isinstance(raw_headers, list)
    names = [k.decode() for k, _ in raw_headers]
    assert len(names) == len(set(names)), f"repeated headers: {names}"
    chunks = [m["body"] for m in bodies]
    assert all(isinstance(c, bytes) for c in chunks)
    status = start["status"]
    assert isinstance(status, int)
    return Reply(
        status,
        {k.decode(): v.decode() for k, v in raw_headers},
        b"".join(c for c in chunks if isinstance(c, bytes)),
        [c for c in chunks if isinstance(c, bytes)],
    )


# ----------------------------------------------------------------------------- publishing


def test_publish_extracts_and_reports(published: Path) -> None:
    info = site_info(published)
    assert info is not None
    assert (info.files, info.bytes) == (2, len(INDEX) + 4)
    assert set(info.to_json()) == {"files", "bytes", "published"}
    assert info.published.endswith("Z") and len(info.published) == 24
    assert (published / "current" / "files" / "assets" / "app.js").read_bytes() == b"v1()"


def test_single_top_folder_is_stripped(tmp_path: Path, site: Path) -> None:
    archive = make_zip(
        tmp_path / "dist.zip",
        {"dist/": b"", "dist/index.html": INDEX, "dist/assets/a.js": b"a"},
    )
    info = publish_site(site, archive)
    assert info.files == 2
    files = site / "current" / "files"
    assert sorted(str(p.relative_to(files)) for p in files.rglob("*")) == [
        "assets",
        "assets/a.js",
        "index.html",
    ]


def test_macos_metadata_is_left_out(tmp_path: Path, site: Path) -> None:
    archive = make_zip(
        tmp_path / "mac.zip",
        {
            "dist/index.html": INDEX,
            "__MACOSX/dist/._index.html": b"\x00\x05\x16\x07",
        },
    )
    assert publish_site(site, archive).files == 1
    files = site / "current" / "files"
    assert [p.name for p in files.iterdir()] == ["index.html"]


@pytest.mark.parametrize(
    "entries",
    [
        {"app.js": b"x"},
        {"a/index.html": INDEX, "b/x.js": b"x"},
        {"a/b/index.html": INDEX},
        {"index.html/": b""},
        {},
    ],
    ids=["no-index", "two-folders", "too-deep", "index-is-dir", "empty"],
)
def test_index_html_is_required(tmp_path: Path, site: Path, entries: dict[str, bytes]) -> None:
    with pytest.raises(BadRequest, match=r"index\.html"):
        publish_site(site, make_zip(tmp_path / "x.zip", entries))
    assert snapshot(site) == {}


def test_replace_switches_and_removes_the_old_version(tmp_path: Path, published: Path) -> None:
    before = site_info(published)
    archive = make_zip(tmp_path / "v2.zip", {"index.html": b"<p>v2</p>", "new.css": b"p{}"})
    info = publish_site(published, archive)
    assert info != before and info.files == 2
    assert site_info(published) == info
    files = published / "current" / "files"
    assert (files / "index.html").read_bytes() == b"<p>v2</p>"
    assert not (files / "assets").exists()
    assert len(list((published / "versions").iterdir())) == 1
    assert sorted(p.name for p in published.iterdir()) == ["current", "versions"]


def test_remove_site(published: Path) -> None:
    assert remove_site(published) is True
    assert site_info(published) is None
    assert snapshot(published) == {}
    assert remove_site(published) is False
    assert remove_site(published / "never") is False
    assert not (published / "never").exists()


def test_info_is_none_before_any_publish(site: Path) -> None:
    assert site_info(site) is None


# ----------------------------------------------------------------------------- refusals


def assert_refused(
    site: Path, archive: Path, error: type[Exception], match: str, **limits: int
) -> None:
    before = snapshot(site)
    with pytest.raises(error, match=match):
        publish_site(site, archive, **limits)
    assert snapshot(site) == before


HOSTILE_NAMES = {
    "dotdot": ("../evil", "'..'"),
    "dotdot-inside": ("a/../../evil", "'..'"),
    "absolute": ("/abs", "absolute"),
    "drive": ("C:\\x", "backslash"),
    "drive-slash": ("C:/x", "drive letter"),
    "backslash": ("a\\b.js", "backslash"),
    "control": ("a\x1fb.js", "control"),
    "bidi": ("evil\u202egnp.js", "control"),
    "empty-segment": ("a//b.js", "empty"),
    "dot-segment": ("./x.js", "'.'"),
    "long-segment": ("x" * 256 + ".js", "over 255 bytes"),
}


@pytest.mark.parametrize("name,reason", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
def test_hostile_names_are_refused(tmp_path: Path, published: Path, name: str, reason: str) -> None:
    archive = zip_of_infos(
        tmp_path / "bad.zip",
        [(zipfile.ZipInfo("index.html"), INDEX), (zipfile.ZipInfo(name), b"pwned")],
    )
    assert_refused(published, archive, BadRequest, reason)
    assert not (tmp_path / "evil").exists()


def test_nul_in_a_name_is_refused(tmp_path: Path, published: Path) -> None:
    raw = make_zip(tmp_path / "nul.zip", {"index.html": INDEX, "aXb.html": b"x"}).read_bytes()
    patched = tmp_path / "patched.zip"
    patched.write_bytes(raw.replace(b"aXb.html", b"a\x00b.html"))
    assert_refused(published, patched, BadRequest, "control")


@pytest.mark.parametrize(
    "mode,reason",
    [
        (stat.S_IFLNK | 0o777, "symbolic link"),
        (stat.S_IFCHR | 0o644, "device"),
        (stat.S_IFIFO | 0o644, "pipe"),
    ],
    ids=["symlink", "device", "fifo"],
)
def test_special_files_are_refused(tmp_path: Path, published: Path, mode: int, reason: str) -> None:
    archive = zip_of_infos(
        tmp_path / "special.zip",
        [(zipfile.ZipInfo("index.html"), INDEX), (unix_entry("link", mode), b"../../secret_key")],
    )
    assert_refused(published, archive, BadRequest, reason)


def test_duplicate_names_are_refused(tmp_path: Path, published: Path) -> None:
    archive = zip_of_infos(
        tmp_path / "dup.zip",
        [
            (zipfile.ZipInfo("index.html"), INDEX),
            (zipfile.ZipInfo("app.js"), b"one"),
            (zipfile.ZipInfo("app.js"), b"two"),
        ],
    )
    assert_refused(published, archive, BadRequest, "twice")


def test_a_file_and_a_directory_of_one_name_are_refused(tmp_path: Path, published: Path) -> None:
    archive = make_zip(tmp_path / "clash.zip", {"index.html": INDEX, "a": b"x", "a/b.js": b"y"})
    assert_refused(published, archive, BadRequest, "both a file and a directory")


def test_too_many_entries(tmp_path: Path, published: Path) -> None:
    entries = {"index.html": INDEX} | {f"f/{i}.txt": b"" for i in range(10_000)}
    archive = make_zip(tmp_path / "many.zip", entries, deflate=False)
    assert_refused(published, archive, BadRequest, "at most 10000")


def test_entry_limit_is_inclusive(tmp_path: Path, site: Path) -> None:
    three = {"index.html": INDEX, "a.js": b"a", "b.js": b"b"}
    assert publish_site(site, make_zip(tmp_path / "3.zip", three), max_entries=3).files == 3
    four = make_zip(tmp_path / "4.zip", three | {"c.js": b"c"})
    assert_refused(site, four, BadRequest, "at most 3", max_entries=3)


def test_end_record_claiming_too_many_entries_is_refused_before_parsing(
    tmp_path: Path, published: Path
) -> None:
    raw = bytearray(make_zip(tmp_path / "ok.zip", {"index.html": INDEX}).read_bytes())
    end = raw.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", raw, end + 8, 50_000, 50_000)  # entries on disk, total entries
    patched = tmp_path / "claims.zip"
    patched.write_bytes(bytes(raw))
    assert_refused(published, patched, BadRequest, "too many entries")


def test_over_the_byte_limit_is_too_large(tmp_path: Path, published: Path) -> None:
    archive = make_zip(tmp_path / "big.zip", {"index.html": INDEX, "a.bin": bytes(range(256)) * 8})
    assert_refused(published, archive, PayloadTooLarge, "2000 bytes", max_bytes=2000)


def test_zip_bomb_is_refused(tmp_path: Path, published: Path) -> None:
    archive = make_zip(tmp_path / "bomb.zip", {"index.html": INDEX, "zeros.js": bytes(5_000_000)})
    assert archive.stat().st_size < 20_000
    assert_refused(published, archive, BadRequest, "zip bomb")


def lie_about_size(raw: bytes, name: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size of `name` in its local header and directory entry."""
    data = bytearray(raw)
    local = data.find(b"PK\x03\x04")
    while local >= 0:
        if data[local + 30 : local + 30 + len(name)] == name:
            struct.pack_into("<I", data, local + 22, size)
        local = data.find(b"PK\x03\x04", local + 4)
    central = data.find(b"PK\x01\x02")
    while central >= 0:
        if data[central + 46 : central + 46 + len(name)] == name:
            struct.pack_into("<I", data, central + 24, size)
        central = data.find(b"PK\x01\x02", central + 4)
    return bytes(data)


def test_declared_size_is_not_trusted(tmp_path: Path, published: Path) -> None:
    raw = make_zip(tmp_path / "honest.zip", {"index.html": INDEX, "zeros.js": bytes(5_000_000)})
    liar = tmp_path / "liar.zip"
    liar.write_bytes(lie_about_size(raw.read_bytes(), b"zeros.js", 1000))
    with zipfile.ZipFile(liar) as zf:  # the lie passes every declared-size check
        assert zf.getinfo("zeros.js").file_size == 1000
    assert_refused(published, liar, BadRequest, "zeros.js")
    assert len(list((published / "versions").iterdir())) == 1


def test_entry_shorter_than_declared_is_refused(tmp_path: Path, published: Path) -> None:
    raw = make_zip(tmp_path / "ok.zip", {"index.html": INDEX, "a.js": b"0123456789"}, deflate=False)
    short = tmp_path / "short.zip"
    short.write_bytes(lie_about_size(raw.read_bytes(), b"a.js", 20))  # the CRC still matches
    assert_refused(published, short, BadRequest, "different number of bytes")


def test_never_more_bytes_than_declared(tmp_path: Path, site: Path) -> None:
    raw = make_zip(tmp_path / "honest.zip", {"index.html": INDEX, "zeros.js": bytes(5_000_000)})
    data = bytearray(lie_about_size(raw.read_bytes(), b"zeros.js", 1000))
    crc = struct.pack("<I", zlib.crc32(bytes(1000)))
    for signature, crc_at, name_at in ((b"PK\x03\x04", 14, 30), (b"PK\x01\x02", 16, 46)):
        at = data.find(signature)
        while at >= 0:
            if data[at + name_at : at + name_at + 8] == b"zeros.js":
                data[at + crc_at : at + crc_at + 4] = crc
            at = data.find(signature, at + 4)
    liar = tmp_path / "consistent-liar.zip"
    liar.write_bytes(bytes(data))
    info = publish_site(site, liar)
    assert info.bytes == len(INDEX) + 1000
    assert (site / "current/files/zeros.js").stat().st_size == 1000


def test_refusal_during_extraction_leaves_a_fresh_root_clean(tmp_path: Path, site: Path) -> None:
    raw = make_zip(tmp_path / "honest.zip", {"index.html": INDEX, "zeros.js": bytes(500_000)})
    liar = tmp_path / "liar.zip"
    liar.write_bytes(lie_about_size(raw.read_bytes(), b"zeros.js", 10))
    with pytest.raises(BadRequest):
        publish_site(site, liar)
    assert snapshot(site) == {}
    assert site_info(site) is None


@pytest.mark.parametrize(
    "payload",
    [b"", b"not a zip at all", b"PK\x05\x06" + bytes(18), b"PK\x03\x04" + bytes(100)],
    ids=["empty", "text", "bare-end-record", "bare-local-header"],
)
def test_not_a_zip(tmp_path: Path, published: Path, payload: bytes) -> None:
    archive = tmp_path / "junk.zip"
    archive.write_bytes(payload)
    assert_refused(published, archive, BadRequest, "zip")


def test_truncated_zip(tmp_path: Path, published: Path) -> None:
    raw = make_zip(tmp_path / "ok.zip", {"index.html": INDEX, "a.js": b"a" * 1000}).read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(raw[: len(raw) - 30])
    assert_refused(published, cut, BadRequest, "not a valid zip")


def test_encrypted_entries_are_refused(tmp_path: Path, published: Path) -> None:
    raw = bytearray(make_zip(tmp_path / "ok.zip", {"index.html": INDEX}).read_bytes())
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        struct.pack_into("<H", raw, at + flags_at, raw[at + flags_at] | 0x1)
    patched = tmp_path / "locked.zip"
    patched.write_bytes(bytes(raw))
    assert_refused(published, patched, BadRequest, "encrypted")


def test_other_compression_methods_are_refused(tmp_path: Path, published: Path) -> None:
    archive = tmp_path / "bz.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("index.html", INDEX)
    assert_refused(published, archive, BadRequest, "compression method")


# ----------------------------------------------------------------------------- serving


@pytest.fixture
def assets_site(tmp_path: Path, site: Path) -> SiteServer:
    archive = make_zip(
        tmp_path / "assets.zip",
        {
            "index.html": INDEX,
            "assets/app.3f9a1c2b.js": b"console.log(1)",
            "assets/index-BdF3x9Qa.js": b"export {}",
            "assets/theme-dark2024.css": b"body{}",
            "docs/index.html": b"<p>docs</p>",
            "logo.svg": b"<svg/>",
            "big.bin": BIG,  # several chunks
            "empty.txt": b"",
        },
    )
    publish_site(site, archive)
    return SiteServer(site)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("index.html", "text/html; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("mod.mjs", "text/javascript; charset=utf-8"),
        ("style.CSS", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml; charset=utf-8"),
        ("app.wasm", "application/wasm"),
        ("data.json", "application/json; charset=utf-8"),
        ("site.webmanifest", "application/manifest+json; charset=utf-8"),
        ("logo.png", "image/png"),
        ("font.woff2", "font/woff2"),
        ("notes.csv", "text/csv; charset=utf-8"),
        ("bundle.js.gz", "application/octet-stream"),
        ("blob.zz9unknown", "application/octet-stream"),
    ],
)
def test_content_types(name: str, expected: str) -> None:
    assert content_type(name) == expected


@pytest.mark.parametrize(
    "name,expected",
    [
        ("index.html", b"no-cache"),
        ("app.3f9a1c2b.js", b"public, max-age=31536000, immutable"),
        ("787.1b2c3d4e.chunk.js", b"public, max-age=31536000, immutable"),
        ("main.1a2b3c4d5e6f7a8b.css", b"public, max-age=31536000, immutable"),
        ("index-BdF3x9Qa.js", b"public, max-age=31536000, immutable"),
        ("index-B-x9_Qa1.js", b"public, max-age=31536000, immutable"),
        ("app.js", b"public, max-age=300"),
        ("theme-dark2024.css", b"public, max-age=300"),
        ("jquery-3.7.1.min.js", b"public, max-age=300"),
        ("Inter-SemiBold.woff2", b"public, max-age=300"),
        ("deadbeef.js", b"public, max-age=300"),
    ],
)
def test_cache_rules(name: str, expected: bytes) -> None:
    assert cache_control(name) == expected


async def test_serves_files_with_their_headers(assets_site: SiteServer) -> None:
    reply = await call(assets_site, "/assets/app.3f9a1c2b.js")
    assert reply.status == 200
    assert reply.body == b"console.log(1)"
    assert reply.headers["content-type"] == "text/javascript; charset=utf-8"
    assert reply.headers["content-length"] == "14"
    assert reply.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["etag"].startswith('"') and "last-modified" in reply.headers
    css = await call(assets_site, "/assets/theme-dark2024.css")
    assert (css.headers["content-type"], css.headers["cache-control"]) == (
        "text/css; charset=utf-8",
        "public, max-age=300",
    )
    empty = await call(assets_site, "/empty.txt")
    assert (empty.status, empty.body, empty.headers["content-length"]) == (200, b"", "0")


@pytest.mark.parametrize("path", ["/", "", "/index.html", "/./", "//"])
async def test_root_serves_index(assets_site: SiteServer, path: str) -> None:
    reply = await call(assets_site, path)
    assert (reply.status, reply.body) == (200, INDEX)
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("path", ["/docs", "/docs/"])
async def test_directory_serves_its_own_index(assets_site: SiteServer, path: str) -> None:
    assert (await call(assets_site, path)).body == b"<p>docs</p>"


@pytest.mark.parametrize("path", ["/todos/3", "/settings", "/assets", "/a/b/c/"])
async def test_spa_fallback(assets_site: SiteServer, path: str) -> None:
    reply = await call(assets_site, path)
    assert (reply.status, reply.body) == (200, INDEX)
    assert reply.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("path", ["/assets/missing.js", "/favicon.ico", "/todos/3.json"])
async def test_missing_asset_is_404(assets_site: SiteServer, path: str) -> None:
    reply = await call(assets_site, path)
    assert reply.status == 404
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert reply.json()["error"] == {
        "status": 404,
        "code": "not_found",
        "message": f"The site has no file at {path!r}.",
        "details": {},
    }


async def test_big_files_stream_in_chunks(assets_site: SiteServer) -> None:
    reply = await call(assets_site, "/big.bin")
    assert reply.body == BIG
    assert reply.headers["content-length"] == str(3 * 1024 * 1024)
    assert len(reply.chunks) >= 12 and max(len(c) for c in reply.chunks) <= 256 * 1024


async def test_head_has_headers_and_no_body(assets_site: SiteServer) -> None:
    get = await call(assets_site, "/logo.svg")
    head = await call(assets_site, "/logo.svg", "HEAD")
    assert (head.status, head.body) == (200, b"")
    assert head.headers == get.headers
    assert head.headers["content-length"] == "6"


async def test_conditional_get(assets_site: SiteServer) -> None:
    first = await call(assets_site, "/logo.svg")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"other", W/{etag}'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": modified},
    ):
        again = await call(assets_site, "/logo.svg", headers=headers)
        assert (again.status, again.body) == (304, b""), headers
        assert again.headers["etag"] == etag
        assert "content-length" not in again.headers
    for headers in (
        {"If-None-Match": '"other"'},
        {"If-None-Match": '"other"', "If-Modified-Since": modified},
        {"If-Modified-Since": formatdate(0, usegmt=True)},
        {"If-Modified-Since": "not a date"},
    ):
        fresh = await call(assets_site, "/logo.svg", headers=headers)
        assert (fresh.status, fresh.body) == (200, b"<svg/>"), headers


async def test_republish_changes_the_etag(tmp_path: Path, published: Path) -> None:
    server = SiteServer(published)
    before = (await call(server, "/")).headers["etag"]
    publish_site(published, make_zip(tmp_path / "same.zip", {"index.html": INDEX}))
    after = await call(server, "/", headers={"If-None-Match": before})
    assert after.status == 200 and after.headers["etag"] != before


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_are_405(assets_site: SiteServer, method: str) -> None:
    reply = await call(assets_site, "/", method)
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, HEAD"
    assert reply.json()["error"]["code"] == "method_not_allowed"  # type: ignore[index]


async def test_no_site_is_404(site: Path) -> None:
    reply = await call(SiteServer(site), "/")
    assert reply.status == 404
    assert reply.json()["error"]["message"] == "No site is published here."  # type: ignore[index]


async def test_removed_site_is_404(published: Path) -> None:
    server = SiteServer(published)
    assert (await call(server, "/")).status == 200
    remove_site(published)
    assert (await call(server, "/")).status == 404


async def test_extra_headers_are_sent_on_every_response(assets_site: SiteServer) -> None:
    extra = [(b"x-request-id", b"abc")]
    for path, method in (("/", "GET"), ("/nope.js", "GET"), ("/", "POST")):
        reply = await call(assets_site, path, method, extra=extra)
        assert reply.headers["x-request-id"] == "abc"


DOTDOT = [
    "/../secret_key",
    "/../../secret_key",
    "/a/../../secret_key",
    "/assets/../../../secret_key",
    "/../current/site.json",
    "/../site.json",
    "/../versions",
    "/..",
    "/index.html\x00.js",
    "/..\\secret_key",
    "\\..\\secret_key",
]
STILL_ENCODED = ["/%2e%2e/secret_key", "/%2e%2e/", "/..%2fsecret_key"]


@pytest.mark.parametrize("path", DOTDOT + STILL_ENCODED)
async def test_no_escape_from_the_site(tmp_path: Path, published: Path, path: str) -> None:
    (tmp_path / "secret_key").write_bytes(b"bpk_SECRET")
    (published / "secret_key").write_bytes(b"bpk_SECRET")
    reply = await call(SiteServer(published), path)
    assert b"SECRET" not in reply.body
    assert b'"files"' not in reply.body
    if path in DOTDOT:
        assert reply.status == 404
        assert reply.json()["error"]["code"] == "not_found"  # type: ignore[index]
    else:  # a name with '%' in it that no site file has: the app's page
        assert (reply.status, reply.body) == (200, INDEX)


async def test_symlinks_out_of_the_site_are_not_followed(tmp_path: Path, published: Path) -> None:
    secret = tmp_path / "secret_key"
    secret.write_bytes(b"bpk_SECRET")
    files = published / "current" / "files"
    (files / "leak.txt").symlink_to(secret)
    (files / "leakdir").symlink_to(tmp_path)
    server = SiteServer(published)
    assert (await call(server, "/leak.txt")).status == 404
    assert (await call(server, "/leakdir/secret_key")).body == INDEX  # SPA fallback, not the key
    (files / "inside.js").symlink_to(files / "assets" / "app.js")
    assert (await call(server, "/inside.js")).body == b"v1()"  # a link that stays inside is fine


# ----------------------------------------------------------------------------- atomicity


async def test_readers_see_a_whole_version_during_replace(tmp_path: Path, site: Path) -> None:
    archives = []
    for n in range(2):
        body = f"version {n};".encode() * 50_000  # ~550 KB: a few chunks per read
        archives.append(
            make_zip(
                tmp_path / f"{n}.zip",
                {"index.html": f"<p>{n}</p>".encode(), "data.js": body},
            )
        )
    publish_site(site, archives[0])
    server = SiteServer(site)
    stop = threading.Event()

    def publisher() -> int:
        count = 0
        while not stop.is_set() or count < 10:
            publish_site(site, archives[count % 2])
            count += 1
        return count

    task = asyncio.create_task(asyncio.to_thread(publisher))
    seen: set[int] = set()
    for _ in range(150):
        data, page = await asyncio.gather(call(server, "/data.js"), call(server, "/todos/1"))
        assert data.status == 200 and page.status == 200
        marker = data.body[:10]
        assert marker in (b"version 0;", b"version 1;")
        assert data.body == marker * 50_000  # never a mix of two versions
        assert page.body in (b"<p>0</p>", b"<p>1</p>")
        seen.add(int(marker[8:9]))
    stop.set()
    assert await task >= 10
    assert seen == {0, 1}, "the readers never overlapped a replace"
    assert len(list((site / "versions").iterdir())) == 1


def test_concurrent_publishes_leave_one_version(tmp_path: Path, site: Path) -> None:
    archives = [
        make_zip(tmp_path / f"{n}.zip", {"index.html": f"<p>{n}</p>".encode()}) for n in range(6)
    ]
    errors: list[BaseException] = []

    def run(archive: Path) -> None:
        try:
            publish_site(site, archive)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,)) for a in archives]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    versions = list((site / "versions").iterdir())
    assert len(versions) == 1
    assert (site / "current").resolve() == versions[0].resolve()
    info = site_info(site)
    assert isinstance(info, SiteInfo) and info.files == 1


def test_unicode_names_are_kept(tmp_path: Path, site: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("index.html", INDEX)
        zf.writestr("ünïcødé/файл.txt", "text")
    archive = tmp_path / "unicode.zip"
    archive.write_bytes(buffer.getvalue())
    publish_site(site, archive)
    assert (site / "current/files/ünïcødé/файл.txt").read_text() == "text"
