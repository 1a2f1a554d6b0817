"""Static sites of a backpack: publish a zip safely, switch versions atomically, serve them.

On disk, under a site root:

    current -> versions/<id>      a symlink, swapped with one rename
    versions/<id>/site.json       SiteInfo of that version
    versions/<id>/files/...       the extracted site

A reader resolves `current` once per request, so it sees a whole version or
the next one, never a half-written one.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import mimetypes
import os
import re
import secrets
import shutil
import stat
import struct
import time
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import BinaryIO

from backpack.api.app import error_response
from backpack.api.http import Receive, Scope, Send, not_modified
from backpack.core.clock import now_rfc3339
from backpack.errors import (
    BackpackError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from backpack.fsutil import fsync_dir
from backpack.types import JSONObject

MAX_ENTRIES = 10_000
MAX_BYTES = 512 * 1024 * 1024
CURRENT = "current"
VERSIONS = "versions"
FILES = "files"
INFO_FILE = "site.json"
INDEX = "index.html"

_CHUNK = 256 * 1024
_MAX_RATIO = 100  # uncompressed / compressed; deflate tops out near 1032 on zeros
_RATIO_FLOOR = 1024 * 1024  # small entries may compress as well as they like
_MAX_NAME = 1024
_MAX_SEGMENT_BYTES = 255
_DIRECTORY_BYTES_PER_ENTRY = 1024  # central directory budget: names, extras and comments
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_IGNORED_TOP = "__MACOSX"  # AppleDouble metadata that macOS "Compress" adds

_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")


@dataclass(frozen=True)
class SiteInfo:
    files: int
    bytes: int
    published: str  # RFC 3339

    def to_json(self) -> JSONObject:
        return {"files": self.files, "bytes": self.bytes, "published": self.published}


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    path: str  # relative to the site, "/"-separated, without a trailing "/"
    is_dir: bool


# ---------------------------------------------------------------------------- publishing


def publish_site(
    site_root: Path, archive: Path, *, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES
) -> SiteInfo:
    """Validate every entry of `archive`, extract it as a new version and make it current.

    Blocking (run it in a thread). On any failure nothing visible changes.
    """
    with archive.open("rb") as handle:
        _check_directory_size(handle, max_entries)
        try:
            zf = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError, OSError):
            raise BadRequest("The site is not a valid zip archive.") from None
        with zf:
            entries = _plan(zf.infolist(), max_entries, max_bytes)
            with _locked(site_root):
                return _install(site_root, zf, entries)


def site_info(site_root: Path) -> SiteInfo | None:
    """The published site's summary, or None when there is none."""
    for _ in range(3):
        try:
            raw = (site_root / CURRENT / INFO_FILE).read_bytes()
        except FileNotFoundError:
            if not (site_root / CURRENT).is_symlink():
                return None
            continue  # read while a publish swapped versions: look again
        data = json.loads(raw)
        return SiteInfo(int(data["files"]), int(data["bytes"]), str(data["published"]))
    return None


def remove_site(site_root: Path) -> bool:
    """Unpublish; True when a site was published."""
    if not site_root.is_dir():
        return False
    with _locked(site_root):
        current = site_root / CURRENT
        existed = current.is_symlink()
        if existed:
            current.unlink()
        shutil.rmtree(site_root / VERSIONS, ignore_errors=True)
        _remove_stray_links(site_root)
    return existed


def _check_directory_size(handle: BinaryIO, max_entries: int) -> None:
    """Refuse a central directory too big to be worth parsing, from the end record alone."""
    declared = _declared_directory(handle)
    if declared is None:
        return  # zipfile will say what is wrong with it
    count, size = declared
    if count > max_entries or size > max_entries * _DIRECTORY_BYTES_PER_ENTRY:
        raise BadRequest(
            f"The zip has too many entries; at most {max_entries} are allowed.",
            {"max_entries": max_entries},
        )


def _declared_directory(handle: BinaryIO) -> tuple[int, int] | None:
    """(entry count, central directory bytes) as the end record declares them."""
    end = handle.seek(0, os.SEEK_END)
    start = max(0, end - _EOCD.size - 0xFFFF)
    handle.seek(start)
    tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _EOCD.size > len(tail):
        return None
    count, size = _EOCD.unpack_from(tail, at)[4:6]
    if count != 0xFFFF and size != 0xFFFFFFFF:
        return count, size
    locator_at = at - _ZIP64_LOCATOR.size
    if locator_at < 0 or tail[locator_at : locator_at + 4] != b"PK\x06\x07":
        return None
    offset = _ZIP64_LOCATOR.unpack_from(tail, locator_at)[2]
    handle.seek(offset)
    record = handle.read(_ZIP64_EOCD.size)
    if len(record) != _ZIP64_EOCD.size or record[:4] != b"PK\x06\x06":
        return None
    fields = _ZIP64_EOCD.unpack(record)
    return fields[7], fields[8]


def _plan(infos: list[zipfile.ZipInfo], max_entries: int, max_bytes: int) -> list[_Entry]:
    """Every entry checked before anything touches the disk; the entries to extract."""
    if len(infos) > max_entries:
        raise BadRequest(
            f"The zip has {len(infos)} entries; at most {max_entries} are allowed.",
            {"max_entries": max_entries},
        )
    entries: list[_Entry] = []
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.orig_filename  # before zipfile cuts it at a NUL
        _check_name(name)
        is_dir = _check_entry(info, name)
        path = name.rstrip("/")
        if path in seen:
            raise _bad_entry(name, "appears twice")
        seen.add(path)
        total += info.file_size
        if total > max_bytes:
            raise PayloadTooLarge(
                f"The site would take more than {max_bytes} bytes unpacked.",
                {"max_bytes": max_bytes},
            )
        if path.split("/", 1)[0] != _IGNORED_TOP:
            entries.append(_Entry(info, path, is_dir))
    _check_tree(entries)
    return _strip_top_folder(entries)


def _check_name(name: str) -> None:
    if not name or len(name) > _MAX_NAME:
        raise _bad_entry(name, f"needs a name of 1 to {_MAX_NAME} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in name):
        raise _bad_entry(name, "has control characters in its name")
    if "\\" in name:
        raise _bad_entry(name, "has a backslash in its name")
    if name.startswith("/"):
        raise _bad_entry(name, "is an absolute path")
    if ":" in name:
        raise _bad_entry(name, "has a drive letter or ':' in its name")
    for segment in name.removesuffix("/").split("/"):
        if segment in ("", ".", ".."):
            raise _bad_entry(name, "has an empty, '.' or '..' path segment")
        if len(segment.encode()) > _MAX_SEGMENT_BYTES:
            raise _bad_entry(name, f"has a name part over {_MAX_SEGMENT_BYTES} bytes")


def _check_entry(info: zipfile.ZipInfo, name: str) -> bool:
    """Refuse what is not a plain file or directory; True for a directory."""
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise _bad_entry(name, "is a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _bad_entry(name, "is a device, pipe or socket")
    if info.flag_bits & 0x41:  # traditional or strong encryption
        raise _bad_entry(name, "is encrypted")
    if info.compress_type not in _METHODS:
        raise _bad_entry(name, "uses a compression method other than stored or deflate")
    is_dir = name.endswith("/") or kind == stat.S_IFDIR
    if is_dir and info.file_size:
        raise _bad_entry(name, "is a directory with content")
    if info.file_size > _RATIO_FLOOR and info.file_size > _MAX_RATIO * info.compress_size:
        raise _bad_entry(name, "has a suspicious compression ratio (zip bomb)")
    return is_dir


def _check_tree(entries: list[_Entry]) -> None:
    """A name cannot be both a file and a directory."""
    dirs = {e.path for e in entries if e.is_dir}
    for entry in entries:
        parts = entry.path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    for entry in entries:
        if not entry.is_dir and entry.path in dirs:
            raise _bad_entry(entry.path, "is both a file and a directory")


def _strip_top_folder(entries: list[_Entry]) -> list[_Entry]:
    """index.html at the top, or inside one single top-level folder that is then dropped."""
    files = {e.path for e in entries if not e.is_dir}
    if INDEX in files:
        return entries
    tops = {e.path.split("/", 1)[0] for e in entries}
    if len(tops) == 1:
        top = tops.pop()
        if f"{top}/{INDEX}" in files:
            prefix = top + "/"
            return [
                _Entry(e.info, e.path.removeprefix(prefix), e.is_dir)
                for e in entries
                if e.path != top
            ]
    raise BadRequest(
        f"The zip must hold {INDEX} at its top level (or inside one single top-level folder)."
    )


def _bad_entry(name: str, problem: str) -> BadRequest:
    shown = repr(name[:200])
    return BadRequest(f"The zip entry {shown} {problem}.", {"entry": shown})


@contextmanager
def _locked(site_root: Path) -> Iterator[None]:
    """One publish or removal at a time per site, across threads and processes."""
    site_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(site_root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _install(site_root: Path, zf: zipfile.ZipFile, entries: list[_Entry]) -> SiteInfo:
    versions = site_root / VERSIONS
    versions.mkdir(exist_ok=True)
    version = versions / f"{time.time_ns():x}-{secrets.token_hex(4)}"
    version.mkdir()
    try:
        try:
            written = _extract(zf, entries, version / FILES)
            info = SiteInfo(sum(not e.is_dir for e in entries), written, now_rfc3339())
            (version / INFO_FILE).write_text(json.dumps(info.to_json()))
            _switch(site_root, version.name)
        except OSError as exc:
            raise Unavailable(f"Could not write the site to disk ({exc.strerror}).") from exc
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        if not any(versions.iterdir()):
            versions.rmdir()
        raise
    for old in versions.iterdir():
        if old.name != version.name:
            shutil.rmtree(old, ignore_errors=True)
    _remove_stray_links(site_root)
    return info


def _extract(zf: zipfile.ZipFile, entries: list[_Entry], files_dir: Path) -> int:
    files_dir.mkdir()
    total = 0
    for entry in entries:
        target = files_dir / entry.path
        try:
            if entry.is_dir:
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                total += _extract_file(zf, entry, target)
        except (FileExistsError, NotADirectoryError):
            raise _bad_entry(entry.path, "clashes with another entry") from None
    return total


def _extract_file(zf: zipfile.ZipFile, entry: _Entry, target: Path) -> int:
    """Copy one entry, counting the bytes: the declared size is a claim, not a fact."""
    declared = entry.info.file_size
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        written = 0
        try:
            with zf.open(entry.info) as source:
                while chunk := source.read(_CHUNK):
                    written += len(chunk)
                    if written > declared:  # zipfile stops at the declared size; keep the bound
                        break
                    out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError):
            raise _bad_entry(entry.path, "is damaged or misstates its size") from None
        if written != declared:
            raise _bad_entry(entry.path, "holds a different number of bytes than it declares")
        out.flush()
        os.fsync(out.fileno())
    return written


def _switch(site_root: Path, version_name: str) -> None:
    link = site_root / f".{CURRENT}-{secrets.token_hex(8)}"
    os.symlink(f"{VERSIONS}/{version_name}", link)
    os.replace(link, site_root / CURRENT)
    fsync_dir(site_root)


def _remove_stray_links(site_root: Path) -> None:
    """Links a crashed switch left behind (the lock is held)."""
    for path in site_root.glob(f".{CURRENT}-*"):
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- serving


_TYPES = {
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".cjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".xml": "application/xml",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".pdf": "application/pdf",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
}
_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/manifest+json",
        "application/xml",
        "image/svg+xml",
        "text/javascript",
    }
)
_HASH_HEX = r"(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,64}"
# Vite-style base64url hash: 8 characters mixing digits, lower and upper case
_HASH_B64 = r"(?=[\w-]*[0-9])(?=[\w-]*[a-z])(?=[\w-]*[A-Z])[\w-]{8}"
_HASHED = re.compile(rf"[.-](?:{_HASH_HEX}|{_HASH_B64})(?:\.[A-Za-z0-9]+)+$", re.ASCII)
_IMMUTABLE = b"public, max-age=31536000, immutable"
_SHORT = b"public, max-age=300"


def content_type(name: str) -> str:
    """The Content-Type for a file name, by its extension."""
    extension = os.path.splitext(name)[1].lower()
    media = _TYPES.get(extension)
    if media is None:
        guessed, encoding = mimetypes.guess_type(name, strict=False)
        media = guessed if guessed and not encoding else "application/octet-stream"
    if media.startswith("text/") or media in _TEXT_TYPES:
        return media + "; charset=utf-8"
    return media


def cache_control(name: str) -> bytes:
    """HTML revalidates every time; content-hashed names are cached for good; others briefly."""
    if os.path.splitext(name)[1].lower() in (".html", ".htm"):
        return b"no-cache"
    return _IMMUTABLE if _HASHED.search(name) else _SHORT


@dataclass
class _Found:
    fd: int
    name: str
    size: int
    mtime_ns: int


class SiteServer:
    """Serves a published site to GET and HEAD, with SPA fallback to index.html."""

    def __init__(self, site_root: Path) -> None:
        self.site_root = site_root

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        extra_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """`path` is percent-decoded (like ASGI's scope["path"]) and relative to the site."""
        method: str = scope["method"]
        try:
            if method not in ("GET", "HEAD"):
                raise MethodNotAllowed(
                    f"{method[:20]} is not allowed on a site; use GET or HEAD.",
                    {"allow": "GET, HEAD"},
                )
            found = await asyncio.to_thread(_locate, self.site_root, path)
        except BackpackError as exc:
            await error_response(exc).send(send, extra_headers)
            return
        try:
            await _send_file(found, scope, send, extra_headers)
        finally:
            os.close(found.fd)


def _locate(site_root: Path, path: str) -> _Found:
    segments = _segments(path)
    current = site_root / CURRENT
    for _ in range(3):
        try:
            version = os.readlink(current)
        except OSError:
            raise NotFound("No site is published here.") from None
        found = _find(os.path.realpath(site_root / version / FILES), segments)
        if found is not None:
            return found
        try:
            if os.readlink(current) == version:
                break
        except OSError:
            break
        # A publish switched versions meanwhile (and may have removed ours): look again.
    raise NotFound(f"The site has no file at {path[:200]!r}.")


def _segments(path: str) -> list[str]:
    segments = [s for s in path.split("/") if s not in ("", ".")]
    for segment in segments:
        if segment == ".." or "\x00" in segment or "\\" in segment:
            raise NotFound("The site has no such file.")
    return segments


def _find(root: str, segments: list[str]) -> _Found | None:
    """The file for a request path: exact, a directory's index, or the SPA fallback."""
    target = os.path.join(root, *segments)
    found = _open(root, target)
    if isinstance(found, _Found):
        return found
    if found == "dir":
        in_dir = _open(root, os.path.join(target, INDEX))
        if isinstance(in_dir, _Found):
            return in_dir
    elif segments and os.path.splitext(segments[-1])[1]:
        return None  # a missing asset is a 404, not the app's page
    index = _open(root, os.path.join(root, INDEX))
    return index if isinstance(index, _Found) else None


def _open(root: str, target: str) -> _Found | str | None:
    """An open regular file inside root, "dir" for a directory, else None."""
    real = os.path.realpath(target)
    if real != root and not real.startswith(root + os.sep):
        return None  # a symlink pointing out of the site
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode):
        return _Found(fd, os.path.basename(real), info.st_size, info.st_mtime_ns)
    os.close(fd)
    return "dir" if stat.S_ISDIR(info.st_mode) else None


async def _send_file(
    found: _Found, scope: Scope, send: Send, extra_headers: Sequence[tuple[bytes, bytes]]
) -> None:
    # Written as raw ASGI messages: HEAD and 304 must not announce Content-Length: 0.
    modified = found.mtime_ns // 1_000_000_000
    etag = f'"{found.size:x}-{found.mtime_ns:x}"'
    headers = [
        (b"etag", etag.encode()),
        (b"last-modified", formatdate(modified, usegmt=True).encode()),
        (b"cache-control", cache_control(found.name)),
        (b"x-content-type-options", b"nosniff"),
        *extra_headers,
    ]
    conditions = {bytes(k).lower(): bytes(v).decode("latin-1") for k, v in scope["headers"]}
    if not_modified(
        conditions.get(b"if-none-match"), conditions.get(b"if-modified-since"), etag, modified
    ):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers += [
        (b"content-type", content_type(found.name).encode()),
        (b"content-length", str(found.size).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["method"] == "HEAD" or found.size == 0:
        await send({"type": "http.response.body", "body": b""})
        return
    position = 0
    more = True
    while more:
        chunk = await asyncio.to_thread(
            os.pread, found.fd, min(_CHUNK, found.size - position), position
        )
        position += len(chunk)
        more = bool(chunk) and position < found.size
        await send({"type": "http.response.body", "body": chunk, "more_body": more})


__all__ = [
    "MAX_BYTES",
    "MAX_ENTRIES",
    "SiteInfo",
    "SiteServer",
    "cache_control",
    "content_type",
    "publish_site",
    "remove_site",
    "site_info",
]
