"""Backup archives of one backpack: create, verify, restore.

An archive is a plain tar (blobs are often compressed already) of regular files:

    backpack.db           a consistent snapshot of the database
    secret_key            when the backpack keeps its key in its directory
    blobs/…               every stored blob and its derived data
    site/…                the static site, when one is published
    manifest.json         name, times, versions, every member's size and sha256
    manifest.sha256       the manifest's own checksum (`sha256sum -c` reads it)

The manifest comes last, so an archive is written in one pass. Symbolic links of
the site (say a `current` link to a version folder) are listed in the manifest,
never stored as tar links.

The database snapshot is `VACUUM INTO` from a connection of our own: one
statement, so one read transaction, and in WAL mode readers never block the
server's writer. It yields a compact, standalone (rollback-journal) file.

Blobs are content-addressed and never change, so they are staged as hard links
in a folder of the backpack's directory, then streamed from there. A blob is
written before the record that names it and deleted after that record goes, so
staging them once before the snapshot and once after it catches every blob the
snapshot names, unless a file is uploaded and deleted again within the moments
the snapshot takes.

The checksums detect damage, not forgery: whoever can rewrite an archive can
rewrite its manifest too.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

import apsw
import orjson

from backpack import __version__
from backpack.blobs.local import TEMP_DIR
from backpack.core.clock import now_rfc3339
from backpack.errors import BadRequest, Conflict, NotFound
from backpack.fsutil import fsync_dir
from backpack.platform.instance import BLOBS_DIR, DATABASE_FILE, KEY_FILE
from backpack.types import JSON, JSONObject

FORMAT_VERSION = 1
SITE_DIR = "site"
MANIFEST_FILE = "manifest.json"
MANIFEST_SUM_FILE = "manifest.sha256"

Progress = Callable[[int, int], None]

_CHUNK = 1024 * 1024
_MAX_MANIFEST_BYTES = 256 * 1024 * 1024
_TOP_FILES = frozenset((DATABASE_FILE, KEY_FILE))
_TOP_DIRS = frozenset((BLOBS_DIR, SITE_DIR))
_FILE_MODE = 0o600
_DIR_MODE = 0o700


@dataclass(frozen=True)
class Member:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Link:
    """A symbolic link of the site: `path` points to `target`, relative to its folder."""

    path: str
    target: str


@dataclass(frozen=True)
class Manifest:
    name: str
    created: str
    backpack_version: str
    members: tuple[Member, ...]
    records: dict[str, int] = field(default_factory=dict)  # rows per collection, `_users` too
    links: tuple[Link, ...] = ()
    format: int = FORMAT_VERSION

    @property
    def total_bytes(self) -> int:
        return sum(member.size for member in self.members)

    def to_json(self) -> JSONObject:
        records: JSONObject = dict(self.records)
        members: list[JSON] = [
            {"path": m.path, "size": m.size, "sha256": m.sha256} for m in self.members
        ]
        links: list[JSON] = [{"path": k.path, "target": k.target} for k in self.links]
        return {
            "format": self.format,
            "name": self.name,
            "created": self.created,
            "backpack_version": self.backpack_version,
            "records": records,
            "members": members,
            "links": links,
        }

    @classmethod
    def from_json(cls, value: object) -> Manifest:
        """The manifest in `value`; BadRequest when it does not have the expected shape."""
        try:
            if not isinstance(value, dict):
                raise TypeError("not an object")
            records = value["records"]
            if not isinstance(records, dict) or not all(
                isinstance(n, int) for n in records.values()
            ):
                raise TypeError("records")
            manifest = cls(
                name=_text(value["name"]),
                created=_text(value["created"]),
                backpack_version=_text(value["backpack_version"]),
                members=tuple(
                    Member(_text(m["path"]), _count(m["size"]), _text(m["sha256"]))
                    for m in _items(value["members"])
                ),
                records=dict(records),
                links=tuple(
                    Link(_text(k["path"]), _text(k["target"])) for k in _items(value["links"])
                ),
                format=_count(value["format"]),
            )
        except (KeyError, TypeError) as exc:
            raise BadRequest(f"{MANIFEST_FILE} is not a backup manifest ({exc}).") from None
        if manifest.format > FORMAT_VERSION:
            raise BadRequest(
                f"The archive has format {manifest.format}; this backpack "
                f"({__version__}) reads up to format {FORMAT_VERSION}."
            )
        return manifest


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"{value!r} is not a count")
    return value


def _items(value: object) -> list[dict[str, object]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise TypeError("a list of objects is expected")
    return value


# creating


def create_backup(
    instance_dir: Path,
    out: Path,
    *,
    name: str,
    progress: Progress | None = None,
    database: Path | None = None,
) -> Manifest:
    """Archive the backpack in `instance_dir` to `out` while it keeps serving.

    `database` is the SQLite file to archive when it is not the backpack's own
    (the copy of a PostgreSQL backpack's records).
    """
    database = database or instance_dir / DATABASE_FILE
    if not database.is_file():
        raise NotFound(f"There is no backpack database in {instance_dir}.")
    if not out.parent.is_dir():
        raise NotFound(f"There is no folder {out.parent} to write the archive to.")
    staging = Path(tempfile.mkdtemp(prefix=".backup-", dir=instance_dir))
    try:
        blobs = instance_dir / BLOBS_DIR
        _stage_blobs(blobs, staging / BLOBS_DIR)
        _snapshot(database, staging / DATABASE_FILE)
        _stage_blobs(blobs, staging / BLOBS_DIR)  # blobs stored while the snapshot ran
        if (instance_dir / KEY_FILE).is_file():
            shutil.copyfile(instance_dir / KEY_FILE, staging / KEY_FILE)
        links = _stage_site(instance_dir / SITE_DIR, staging / SITE_DIR)
        records = _count_records(staging / DATABASE_FILE)
        files = [
            (path, staging / path, (staging / path).stat().st_size) for path in _staged(staging)
        ]
        template = Manifest(name, now_rfc3339(), __version__, (), records, tuple(links))
        return _write_archive(out, files, template, progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _snapshot(database: Path, target: Path) -> None:
    conn = apsw.Connection(str(database), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(10_000)
        conn.execute("VACUUM INTO ?", (str(target),))
    finally:
        conn.close()


def _stage_blobs(source: Path, staging: Path) -> None:
    """Hard-link every blob not staged yet (a copy where links cannot be made)."""
    for directory, subdirs, names in os.walk(source):
        if directory == str(source):
            subdirs[:] = [d for d in subdirs if d != TEMP_DIR]
        for name in names:
            path = Path(directory, name)
            staged = staging / path.relative_to(source)
            if staged.exists() or path.is_symlink():
                continue
            staged.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, staged)
            except FileNotFoundError:
                continue  # deleted while we walked
            except OSError:  # blobs/ on another file system, or one without hard links
                with contextlib.suppress(FileNotFoundError):
                    shutil.copyfile(path, staged)


def _stage_site(source: Path, staging: Path) -> list[Link]:
    """Copy the site's files; its symbolic links (relative, inside it) are listed."""
    links: list[Link] = []
    if not source.is_dir():
        return links
    for directory, subdirs, names in os.walk(source):
        for name in [*subdirs, *names]:
            path = Path(directory, name)
            relative = path.relative_to(source.parent).as_posix()
            if path.is_symlink():
                target = os.readlink(path)
                if _link_problem(relative, target) is None:
                    links.append(Link(relative, target))
            elif path.is_file():
                staged = staging / path.relative_to(source)
                staged.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):  # an old version being removed
                    shutil.copyfile(path, staged)
    return sorted(links, key=lambda link: link.path)


def _staged(staging: Path) -> list[str]:
    """Archive paths of the staged files: the database first, then the rest in order."""
    paths = [
        Path(directory, name).relative_to(staging).as_posix()
        for directory, _, names in os.walk(staging)
        for name in names
    ]
    return sorted(paths, key=lambda path: (path != DATABASE_FILE, path))


def _count_records(database: Path) -> dict[str, int]:
    conn = apsw.Connection(str(database), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        tables = conn.execute("SELECT name, tbl FROM _collections ORDER BY name").fetchall()
        counts: dict[str, int] = {}
        for name, table in tables:
            for (count,) in conn.execute(f"SELECT count(*) FROM {_quote(str(table))}"):
                counts[str(name)] = int(count)
        return counts
    finally:
        conn.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _write_archive(
    out: Path,
    files: list[tuple[str, Path, int]],
    template: Manifest,
    progress: Progress | None,
) -> Manifest:
    fd, temp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    temp = Path(temp_name)
    try:
        counter = _Counter(sum(size for _, _, size in files), progress)
        members: list[Member] = []
        with os.fdopen(fd, "wb") as raw:
            with tarfile.TarFile(
                fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_CHUNK
            ) as tar:
                mtime = int(time.time())
                for path, source, size in files:
                    with source.open("rb") as handle:
                        reader = _HashingReader(handle, counter)
                        tar.addfile(_tar_info(path, size, mtime), reader)
                    members.append(Member(path, size, reader.hash.hexdigest()))
                manifest = replace(template, members=tuple(members))
                text = orjson.dumps(manifest.to_json(), option=orjson.OPT_INDENT_2) + b"\n"
                check = f"{hashlib.sha256(text).hexdigest()}  {MANIFEST_FILE}\n".encode()
                for path, data in ((MANIFEST_FILE, text), (MANIFEST_SUM_FILE, check)):
                    tar.addfile(_tar_info(path, len(data), mtime), io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temp, out)
        fsync_dir(out.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return manifest


def _tar_info(path: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.size = size
    info.mode = _FILE_MODE
    info.mtime = mtime
    return info


class _Counter:
    def __init__(self, total: int, progress: Progress | None) -> None:
        self.done = 0
        self.total = total
        self._progress = progress

    def add(self, count: int) -> None:
        self.done += count
        if self._progress is not None:
            self._progress(self.done, self.total)


class _HashingReader:
    """A file read through by tarfile: hashed and counted on the way."""

    def __init__(self, handle: IO[bytes], counter: _Counter) -> None:
        self.hash = hashlib.sha256()
        self._handle = handle
        self._counter = counter

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.hash.update(data)
        self._counter.add(len(data))
        return data


# verifying and restoring


def verify_backup(archive: Path, *, progress: Progress | None = None) -> Manifest:
    """The archive's manifest once every member checks out; BadRequest naming the fault."""
    with tempfile.TemporaryDirectory(prefix="backpack-verify-") as scratch:
        return _read_archive(archive, Path(scratch), extract=False, progress=progress)


def restore_backup(
    archive: Path, target_dir: Path, *, progress: Progress | None = None
) -> Manifest:
    """Rebuild a backpack in `target_dir`, which must not exist yet.

    The archive is extracted into a temp folder beside `target_dir` and checked
    there in full (sizes, checksums, the database's integrity) before that
    folder is renamed into place: a bad archive leaves nothing behind.
    """
    if os.path.lexists(target_dir):
        raise Conflict(f"{target_dir} exists already; move it away before restoring.")
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.restore-", dir=target_dir.parent))
    try:
        manifest = _read_archive(archive, temp, extract=True, progress=progress)
        try:
            os.rename(temp, target_dir)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise
            raise Conflict(f"{target_dir} appeared while restoring; nothing was changed.") from None
        fsync_dir(target_dir.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return manifest


def _read_archive(
    archive: Path, dest: Path, *, extract: bool, progress: Progress | None
) -> Manifest:
    """Read the whole archive, writing members under `dest` (only the database unless
    `extract`), and check it against its manifest."""
    try:
        handle = archive.open("rb")
    except FileNotFoundError:
        raise NotFound(f"There is no archive at {archive}.") from None
    seen: dict[str, Member] = {}
    small: dict[str, bytes] = {}
    folders: set[Path] = {dest}
    with handle:
        total = os.fstat(handle.fileno()).st_size

        def tick() -> None:
            if progress is not None:
                progress(handle.tell(), total)

        try:
            with tarfile.open(fileobj=handle, mode="r|") as tar:
                for info in tar:
                    path = _member_path(info)
                    if path in seen or path in small:
                        raise BadRequest(f"The archive holds {path} twice.")
                    source = tar.extractfile(info)
                    assert source is not None  # a regular file: _member_path checked
                    if path in (MANIFEST_FILE, MANIFEST_SUM_FILE):
                        if info.size > _MAX_MANIFEST_BYTES:
                            raise BadRequest(f"The archive's {path} is implausibly large.")
                        small[path] = source.read()
                    elif extract or path == DATABASE_FILE:
                        seen[path] = _extract(source, info.size, path, dest, folders, tick)
                    else:
                        seen[path] = _read_member(source, info.size, path, None, tick)
        except (tarfile.TarError, EOFError) as exc:
            raise BadRequest(f"The archive is truncated or damaged ({exc}).") from None
    manifest = _check_manifest(small, seen)
    _check_database(dest / DATABASE_FILE)
    if extract:
        for link in manifest.links:
            _make_folders(dest / posixpath.dirname(link.path), dest, folders)
            os.symlink(link.target, dest / link.path)
        for folder in folders:
            fsync_dir(folder)
    if progress is not None:
        progress(total, total)
    return manifest


def _member_path(info: tarfile.TarInfo) -> str:
    path = info.name
    if problem := _name_problem(path):
        raise BadRequest(f"The archive holds an unsafe member {path!r}: {problem}.")
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise BadRequest(f"The archive member {path} is not a regular file (links are refused).")
    if path not in (MANIFEST_FILE, MANIFEST_SUM_FILE) and not _in_layout(path):
        raise BadRequest(f"The archive member {path} is not part of a backpack backup.")
    return path


def _name_problem(path: str) -> str | None:
    if not path.isprintable() or "\\" in path:
        return "control characters or backslashes"
    if path.startswith("/"):
        return "an absolute path"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "an empty, '.' or '..' part"
    return None


def _in_layout(path: str) -> bool:
    top, _, rest = path.partition("/")
    return (path in _TOP_FILES) or (top in _TOP_DIRS and rest != "")


def _link_problem(path: str, target: str) -> str | None:
    """Why a site link is refused: a link may only point down into its own folder."""
    if _name_problem(path) or not path.startswith(SITE_DIR + "/"):
        return "its path is not inside site/"
    if _name_problem(target):
        return "its target must be relative and must not climb with '..'"
    return None


def _read_member(
    source: IO[bytes], size: int, path: str, out: IO[bytes] | None, tick: Callable[[], None]
) -> Member:
    digest = hashlib.sha256()
    left = size
    while left:
        data = source.read(min(_CHUNK, left))
        if not data:
            raise BadRequest(f"The archive is truncated inside {path}.")
        digest.update(data)
        if out is not None:
            out.write(data)
        left -= len(data)
        tick()
    return Member(path, size, digest.hexdigest())


def _extract(
    source: IO[bytes],
    size: int,
    path: str,
    dest: Path,
    folders: set[Path],
    tick: Callable[[], None],
) -> Member:
    target = dest / path
    _make_folders(target.parent, dest, folders)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    except FileExistsError:
        raise BadRequest(_both_message(path)) from None
    with os.fdopen(fd, "wb") as out:
        member = _read_member(source, size, path, out, tick)
        out.flush()
        os.fsync(out.fileno())
    return member


def _make_folders(folder: Path, dest: Path, folders: set[Path]) -> None:
    if folder in folders:
        return
    _make_folders(folder.parent, dest, folders)
    try:
        folder.mkdir(mode=_DIR_MODE)
    except FileExistsError:
        raise BadRequest(_both_message(folder.relative_to(dest).as_posix())) from None
    folders.add(folder)


def _both_message(path: str) -> str:
    return f"The archive member {path} is both a file and a folder."


def _check_manifest(small: dict[str, bytes], seen: dict[str, Member]) -> Manifest:
    for path in (MANIFEST_FILE, MANIFEST_SUM_FILE):
        if path not in small:
            raise BadRequest(f"The archive is truncated or incomplete: {path} is missing.")
    expected = small[MANIFEST_SUM_FILE].decode(errors="replace").split(" ", 1)[0]
    if hashlib.sha256(small[MANIFEST_FILE]).hexdigest() != expected:
        raise BadRequest(f"{MANIFEST_FILE} is damaged: it does not match {MANIFEST_SUM_FILE}.")
    try:
        manifest = Manifest.from_json(orjson.loads(small[MANIFEST_FILE]))
    except orjson.JSONDecodeError:
        raise BadRequest(f"{MANIFEST_FILE} is not valid JSON.") from None
    listed = {member.path: member for member in manifest.members}
    if DATABASE_FILE not in listed:
        raise BadRequest(f"The manifest lists no {DATABASE_FILE}: this is not a backpack backup.")
    for path, member in listed.items():
        found = seen.get(path)
        if found is None:
            raise BadRequest(f"The archive is truncated or incomplete: {path} is missing.")
        if found != member:
            raise BadRequest(f"The archive member {path} is damaged: its checksum does not match.")
    extra = sorted(seen.keys() - listed.keys())
    if extra:
        raise BadRequest(f"The archive member {extra[0]} is not listed in the manifest.")
    folders = {
        parent for path in [*listed, *(k.path for k in manifest.links)] for parent in _parents(path)
    }
    clash = sorted(listed.keys() & folders)
    if clash:
        raise BadRequest(_both_message(clash[0]))
    for link in manifest.links:
        problem = _link_problem(link.path, link.target)
        if problem is None and (link.path in listed or link.path in folders):
            problem = "another member has its path"
        if problem:
            raise BadRequest(f"The site link {link.path!r} is refused: {problem}.")
    return manifest


def _parents(path: str) -> Iterable[str]:
    parts = path.split("/")
    return ("/".join(parts[:end]) for end in range(1, len(parts)))


def _check_database(database: Path) -> None:
    try:
        conn = apsw.Connection(str(database), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except apsw.Error as exc:
        raise BadRequest(
            f"{DATABASE_FILE} in the archive is not a usable database ({exc})."
        ) from None
    if rows != [("ok",)]:
        raise BadRequest(
            f"{DATABASE_FILE} in the archive fails SQLite's integrity check: {rows[0][0]}."
        )
