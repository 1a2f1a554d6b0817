"""Backup archives of a real backpack (real services, SQLite and blob store): a snapshot
taken while records keep arriving, a restore that brings everything back, and damaged
or hostile archives refused without leaving anything behind."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from backpack.api.context import InstanceContext
from backpack.core.access import SECRET_KEY
from backpack.core.query import parse_list_params
from backpack.errors import BadRequest, Conflict, NotFound
from backpack.platform.backup import (
    MANIFEST_FILE,
    MANIFEST_SUM_FILE,
    Manifest,
    create_backup,
    restore_backup,
    verify_backup,
)
from backpack.platform.instance import build_instance, load_secret_key
from backpack.platform.sites import publish_site, site_info

EMAIL = "ada@example.com"
PASSWORD = "correct horse battery"
ORIGIN = "https://app.example.com"


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 64 * 1024):
        yield data[start : start + 64 * 1024]


@dataclass
class Seeded:
    token: str
    notes: dict[str, int]  # record id → its "n"
    files: dict[str, bytes]  # file id → its bytes


async def seed(ctx: InstanceContext, *, notes: int, big_file: int) -> Seeded:
    """Records, a user with a session, settings, two files: what a backup must keep."""
    await ctx.data.create_collection(SECRET_KEY, {"name": "notes"})
    await ctx.data.create_collection(SECRET_KEY, {"name": "pairs"})
    for start in range(0, notes, 1000):
        ops = [
            {
                "op": "create",
                "collection": "notes",
                "id": f"note{n:05d}",
                "data": {"n": n, "text": "x" * 300},
            }
            for n in range(start, min(notes, start + 1000))
        ]
        await ctx.data.batch(SECRET_KEY, {"ops": ops})
    await ctx.auth.create_user(SECRET_KEY, {"email": EMAIL, "password": PASSWORD})
    grant = await ctx.auth.login({"email": EMAIL, "password": PASSWORD}, "pytest", "127.0.0.1")
    await ctx.settings.update(SECRET_KEY, {"allowed_origins": [ORIGIN]})
    files: dict[str, bytes] = {}
    for name, data in (("big.bin", os.urandom(big_file)), ("hello.txt", b"hello, backup\n")):
        doc = await ctx.files.upload(SECRET_KEY, "default", name, False, chunks(data))
        files[str(doc["id"])] = data
    return Seeded(grant.token, {f"note{n:05d}": n for n in range(notes)}, files)


def make_site(instance_dir: Path) -> None:
    """A site laid out as versions behind a `current` link."""
    (instance_dir / "site" / "v1" / "assets").mkdir(parents=True)
    (instance_dir / "site" / "v1" / "index.html").write_text("<h1>todo</h1>")
    (instance_dir / "site" / "v1" / "assets" / "app.js").write_text("console.log(1)")
    (instance_dir / "site" / "current").symlink_to("v1")


async def all_records(ctx: InstanceContext, collection: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    after: str | None = None
    while True:
        params = {"limit": "1000", **({"after": after} if after else {})}
        page = await ctx.data.list_records(SECRET_KEY, collection, parse_list_params(params))
        found.extend(orjson.loads(doc) for doc in page.docs)
        if page.next is None:
            return found
        after = page.next


async def file_bytes(ctx: InstanceContext, file_id: str) -> bytes:
    download = await ctx.files.download(SECRET_KEY, file_id)
    return b"".join([chunk async for chunk in await ctx.files.blobs.read(download.key)])


async def keep_writing(ctx: InstanceContext, stop: asyncio.Event, committed: list[int]) -> None:
    """Pairs a<i>, b<i> written in one batch each: a consistent snapshot never splits one."""
    n = 0
    while not stop.is_set():
        ops = [
            {"op": "create", "collection": "pairs", "id": f"{side}{n:06d}", "data": {"n": n}}
            for side in "ab"
        ]
        await ctx.data.batch(SECRET_KEY, {"ops": ops})
        n += 1
        committed.append(n)


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# the round trip


async def test_backup_while_writing_then_restore(tmp_path: Path) -> None:
    source = tmp_path / "todo"
    key = load_secret_key(source, {}).value
    ctx = build_instance(source, key)
    await ctx.open()
    seeded = await seed(ctx, notes=3000, big_file=8 * 1024 * 1024)
    with zipfile.ZipFile(tmp_path / "site.zip", "w") as site_zip:
        site_zip.writestr("index.html", "<h1>todo</h1>")
        site_zip.writestr("assets/app.js", "console.log(1)")
    published = publish_site(source / "site", tmp_path / "site.zip")
    stop = asyncio.Event()
    committed: list[int] = []
    writer = asyncio.create_task(keep_writing(ctx, stop, committed))
    while len(committed) < 20:
        await asyncio.sleep(0.001)
    seen: list[tuple[int, int]] = []
    archive = tmp_path / "todo.tar"
    before = len(committed)
    manifest = await asyncio.to_thread(
        create_backup,
        source,
        archive,
        name="todo",
        progress=lambda done, total: seen.append((done, total)),
    )
    after = len(committed)
    stop.set()
    await writer
    await ctx.close()

    assert after > before, "the writer must keep committing while the backup runs"
    pairs = manifest.records["pairs"]
    assert pairs % 2 == 0 and 2 * before <= pairs <= 2 * after
    assert manifest.records["notes"] == 3000 and manifest.records["_users"] == 1
    assert manifest.name == "todo" and manifest.format == 1
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (manifest.total_bytes, manifest.total_bytes)
    assert [name for name in listing(source) if name.startswith(".")] == []  # staging removed
    assert listing(tmp_path) == ["site.zip", "todo", "todo.tar"]
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600  # it holds the secret key

    assert verify_backup(archive) == manifest
    restored_dir = tmp_path / "restored"
    restored_seen: list[tuple[int, int]] = []
    assert (
        restore_backup(
            archive, restored_dir, progress=lambda done, total: restored_seen.append((done, total))
        )
        == manifest
    )
    assert restored_seen[-1] == (archive.stat().st_size, archive.stat().st_size)
    assert listing(tmp_path) == ["restored", "site.zip", "todo", "todo.tar"]
    key_file = restored_dir / "secret_key"
    assert key_file.read_text().strip() == key and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert site_info(restored_dir / "site") == published
    index = restored_dir / "site" / "current" / "files" / "index.html"
    assert index.read_text() == "<h1>todo</h1>"

    restored = build_instance(restored_dir, load_secret_key(restored_dir, {}).value)
    await restored.open()
    try:
        pair_ids = [str(r["id"]) for r in await all_records(restored, "pairs")]
        count = pairs // 2
        assert pair_ids == [f"a{n:06d}" for n in range(count)] + [f"b{n:06d}" for n in range(count)]
        notes = {str(r["id"]): r["n"] for r in await all_records(restored, "notes")}
        assert notes == seeded.notes
        caller = await restored.auth.authenticate(seeded.token)  # sessions and the key survive
        assert caller.user is not None and caller.user["email"] == EMAIL
        grant = await restored.auth.login({"email": EMAIL, "password": PASSWORD}, "t", "::1")
        assert grant.user["email"] == EMAIL
        assert restored.settings.current.allowed_origins == [ORIGIN]
        for file_id, data in seeded.files.items():
            assert await file_bytes(restored, file_id) == data
        await restored.data.create_record(SECRET_KEY, "notes", {"id": "after", "n": -1})
    finally:
        await restored.close()


async def test_blobs_on_another_file_system_are_copied(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    # Every Linux this project runs on mounts a tmpfs at /dev/shm; without it the copy
    # fallback would go untested, so that is a failure, not a skip.
    assert shm.is_dir() and shm.stat().st_dev != tmp_path.stat().st_dev, (
        "this test needs /dev/shm on a file system other than the test's temp directory"
    )
    elsewhere = Path(shm, f"backpack-test-{os.getpid()}-{id(tmp_path)}")
    elsewhere.mkdir()
    try:
        source = tmp_path / "todo"
        source.mkdir()
        (source / "blobs").symlink_to(elsewhere)  # hard links across devices fail
        key = load_secret_key(source, {}).value
        ctx = build_instance(source, key)
        await ctx.open()
        seeded = await seed(ctx, notes=3, big_file=300_000)
        await ctx.close()
        manifest = create_backup(source, tmp_path / "a.tar", name="todo")
        assert sum(m.path.startswith("blobs/") for m in manifest.members) == 2
        restore_backup(tmp_path / "a.tar", tmp_path / "copy")
        restored = build_instance(tmp_path / "copy", key)
        await restored.open()
        for file_id, data in seeded.files.items():
            assert await file_bytes(restored, file_id) == data
        await restored.close()
    finally:
        shutil.rmtree(elsewhere)


def test_backup_needs_a_backpack_and_a_folder(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        create_backup(tmp_path, tmp_path / "a.tar", name="x")
    (tmp_path / "backpack.db").write_bytes(b"")
    with pytest.raises(NotFound):
        create_backup(tmp_path, tmp_path / "missing" / "a.tar", name="x")
    assert listing(tmp_path) == ["backpack.db"]


# damaged and hostile archives


@pytest.fixture(scope="module")
def good_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("good")

    async def build() -> None:
        key = load_secret_key(folder / "todo", {}).value
        ctx = build_instance(folder / "todo", key)
        await ctx.open()
        await seed(ctx, notes=50, big_file=200_000)
        await ctx.close()

    asyncio.run(build())
    make_site(folder / "todo")
    create_backup(folder / "todo", folder / "todo.tar", name="todo")
    return folder / "todo.tar"


Entry = tuple[tarfile.TarInfo, bytes]


def read_entries(archive: Path) -> list[Entry]:
    entries: list[Entry] = []
    with tarfile.open(archive) as tar:
        for info in tar:
            source = tar.extractfile(info)
            entries.append((info, source.read() if source is not None else b""))
    return entries


def write_entries(
    archive: Path, entries: list[Entry], *, reseal: bool, list_all: bool = False
) -> None:
    """Write `entries` as a tar. `reseal` makes the manifest agree with the data again, as
    a forger or a faulty tool would; `list_all` also lists members it does not name."""
    if reseal:
        data = {info.name: content for info, content in entries}
        manifest = orjson.loads(data[MANIFEST_FILE])
        listed = {m["path"] for m in manifest["members"]}
        for info, _ in entries:
            if list_all and info.name not in listed | {MANIFEST_FILE, MANIFEST_SUM_FILE}:
                manifest["members"].append({"path": info.name})
        for member in manifest["members"]:
            if member["path"] in data:
                member["size"] = len(data[member["path"]])
                member["sha256"] = hashlib.sha256(data[member["path"]]).hexdigest()
        text = orjson.dumps(manifest)
        check = f"{hashlib.sha256(text).hexdigest()}  {MANIFEST_FILE}\n".encode()
        data |= {MANIFEST_FILE: text, MANIFEST_SUM_FILE: check}
        entries = [(info, data[info.name]) for info, _ in entries]
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, content in entries:
            if info.isfile():
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                tar.addfile(info)


def member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = "/etc/passwd"
    return info, data


def edit(
    change: Callable[[list[Entry]], list[Entry]], *, reseal: bool = False, list_all: bool = False
) -> Callable[[Path, Path], None]:
    def damage(good: Path, bad: Path) -> None:
        write_entries(bad, change(read_entries(good)), reseal=reseal, list_all=list_all)

    return damage


def flip_in(name: str, where: float = 0.5) -> Callable[[Path, Path], None]:
    """Flip one byte of member `name`'s data."""

    def damage(good: Path, bad: Path) -> None:
        shutil.copyfile(good, bad)
        with tarfile.open(good) as tar:
            info = tar.getmember(name)
        offset = info.offset_data + int(info.size * where)
        flip_byte(bad, offset)

    return damage


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def cut_at(where: Callable[[dict[str, tarfile.TarInfo]], int]) -> Callable[[Path, Path], None]:
    def damage(good: Path, bad: Path) -> None:
        with tarfile.open(good) as tar:
            offset = where({m.name: m for m in tar})
        bad.write_bytes(good.read_bytes()[:offset])

    return damage


def first_blob(entries: dict[str, tarfile.TarInfo]) -> tarfile.TarInfo:
    return next(info for name, info in entries.items() if name.startswith("blobs/"))


def drop(prefix: str) -> Callable[[list[Entry]], list[Entry]]:
    def change(entries: list[Entry]) -> list[Entry]:
        index = next(i for i, (info, _) in enumerate(entries) if info.name.startswith(prefix))
        return entries[:index] + entries[index + 1 :]

    return change


def add(*extra: Entry, at: int = 1) -> Callable[[list[Entry]], list[Entry]]:
    return lambda entries: entries[:at] + list(extra) + entries[at:]


def corrupt_database(entries: list[Entry]) -> list[Entry]:
    out: list[Entry] = []
    for info, data in entries:
        if info.name == "backpack.db":
            page = 4096
            data = data[: 3 * page] + bytes(range(256)) * 16 + data[4 * page :]
        out.append((info, data))
    return out


def rewrite_manifest(
    change: Callable[[dict[str, object]], None],
) -> Callable[[list[Entry]], list[Entry]]:
    def apply(entries: list[Entry]) -> list[Entry]:
        out: list[Entry] = []
        for info, data in entries:
            if info.name == MANIFEST_FILE:
                manifest = orjson.loads(data)
                change(manifest)
                data = orjson.dumps(manifest)
            out.append((info, data))
        return out

    return apply


def without_database(manifest: dict[str, object]) -> None:
    members = manifest["members"]
    assert isinstance(members, list)
    manifest["members"] = [m for m in members if m["path"] != "backpack.db"]


def set_links(*links: dict[str, str]) -> Callable[[dict[str, object]], None]:
    return lambda manifest: manifest.update(links=list(links))


DAMAGES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "empty file": (cut_at(lambda m: 0), "truncated or damaged"),
    "cut in the first header": (cut_at(lambda m: 100), "truncated or damaged"),
    "cut in the database": (
        cut_at(lambda m: m["backpack.db"].offset_data + 5000),
        "truncated or damaged",
    ),
    "cut in a blob": (
        cut_at(lambda m: first_blob(m).offset_data + first_blob(m).size // 2),
        "truncated or damaged",
    ),
    "cut between members": (cut_at(lambda m: first_blob(m).offset), "is missing"),
    "cut before the manifest": (cut_at(lambda m: m[MANIFEST_FILE].offset), "is missing"),
    "cut in the manifest": (
        cut_at(lambda m: m[MANIFEST_FILE].offset_data + 10),
        "truncated or damaged",
    ),
    "cut before its checksum": (cut_at(lambda m: m[MANIFEST_SUM_FILE].offset), "is missing"),
    "not a tar": (lambda good, bad: bad.write_bytes(os.urandom(20_000)), "truncated or damaged"),
    "flipped byte in a blob": (
        lambda good, bad: flip_in(first_blob_name(good))(good, bad),
        "is damaged",
    ),
    "flipped byte in the database": (flip_in("backpack.db"), "backpack.db is damaged"),
    "flipped byte in the secret key": (flip_in("secret_key"), "secret_key is damaged"),
    "flipped byte in the site": (flip_in("site/v1/index.html"), "index.html is damaged"),
    "flipped byte in the manifest": (flip_in(MANIFEST_FILE), "manifest.json is damaged"),
    "flipped byte in the manifest's name": (
        flip_in(MANIFEST_FILE, where=0.02),
        "manifest.json is damaged",
    ),
    "flipped byte in the manifest checksum": (
        flip_in(MANIFEST_SUM_FILE, where=0.1),
        "manifest.json is damaged",
    ),
    "flipped byte in a member header": (
        lambda good, bad: flip_header(good, bad, "secret_key"),
        "is missing",
    ),
    "member missing": (edit(drop("blobs/")), "is missing"),
    "member missing, manifest resealed": (edit(drop("blobs/"), reseal=True), "is missing"),
    "extra member": (edit(add(member("blobs/aa/bb/extra"))), "not listed in the manifest"),
    "extra member after the manifest": (
        edit(add(member("site/late.html"), at=10_000)),
        "not listed in the manifest",
    ),
    "duplicate member": (
        edit(lambda e: [*e[:2], (e[1][0], e[1][1]), *e[2:]]),
        "twice",
    ),
    "member ../evil": (edit(add(member("../evil"))), "unsafe member"),
    "member blobs/../../evil": (edit(add(member("blobs/../../evil"))), "unsafe member"),
    "member /abs": (edit(add(member("/abs/evil"))), "unsafe member"),
    "member site/./x": (edit(add(member("site/./x"))), "unsafe member"),
    "member outside the layout": (edit(add(member("evil.sh"))), "not part of a backpack backup"),
    "symlink member": (
        edit(add(member("blobs/aa/bb/link", kind=tarfile.SYMTYPE))),
        "not a regular file",
    ),
    "hard link member": (
        edit(add(member("secret_key2", kind=tarfile.LNKTYPE))),
        "not a regular file",
    ),
    "device member": (edit(add(member("blobs/dev", kind=tarfile.CHRTYPE))), "not a regular file"),
    "folder member": (edit(add(member("site/assets", kind=tarfile.DIRTYPE))), "not a regular"),
    "a file under a file": (
        edit(add(member("site/v1/index.html/x")), reseal=True, list_all=True),
        "site/v1/index.html is both a file and a folder",
    ),
    "a file over a folder": (
        edit(add(member("site/v1/assets"), at=10_000), reseal=True, list_all=True),
        "site/v1/assets is both a file and a folder",
    ),
    "corrupt database, manifest resealed": (
        edit(corrupt_database, reseal=True),
        "backpack.db in the archive",
    ),
    "manifest from the future": (
        edit(rewrite_manifest(lambda m: m.update(format=99)), reseal=True),
        "format 99",
    ),
    "manifest of another shape": (
        edit(rewrite_manifest(lambda m: m.update(records="many")), reseal=True),
        "not a backup manifest",
    ),
    "manifest without the database": (
        edit(rewrite_manifest(without_database), reseal=True),
        "lists no backpack.db",
    ),
    "site link escaping": (
        edit(
            rewrite_manifest(set_links({"path": "site/up", "target": "../../secret_key"})),
            reseal=True,
        ),
        "site link 'site/up' is refused",
    ),
    "site link absolute": (
        edit(rewrite_manifest(set_links({"path": "site/up", "target": "/etc"})), reseal=True),
        "is refused",
    ),
    "link outside the site": (
        edit(rewrite_manifest(set_links({"path": "blobs/up", "target": "x"})), reseal=True),
        "is refused",
    ),
    "link over a member": (
        edit(
            rewrite_manifest(set_links({"path": "site/v1/index.html", "target": "x"})),
            reseal=True,
        ),
        "another member has its path",
    ),
    "link above a member": (
        edit(rewrite_manifest(set_links({"path": "site/v1", "target": "x"})), reseal=True),
        "another member has its path",
    ),
}


def first_blob_name(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        return first_blob({m.name: m for m in tar}).name


def flip_header(good: Path, bad: Path, name: str) -> None:
    shutil.copyfile(good, bad)
    with tarfile.open(good) as tar:
        offset = tar.getmember(name).offset
    flip_byte(bad, offset + 3)  # in the member's name: the header checksum no longer matches


@pytest.mark.parametrize("case", list(DAMAGES))
def test_bad_archive_is_refused_and_changes_nothing(
    case: str, good_archive: Path, tmp_path: Path
) -> None:
    damage, message = DAMAGES[case]
    bad = tmp_path / "bad.tar"
    damage(good_archive, bad)
    assert bad.read_bytes() != good_archive.read_bytes()
    with pytest.raises(BadRequest) as verified:
        verify_backup(bad)
    assert message in verified.value.message
    before = listing(tmp_path)
    with pytest.raises(BadRequest) as restored:
        restore_backup(bad, tmp_path / "restored")
    assert restored.value.message == verified.value.message
    assert listing(tmp_path) == before  # no target, no temp folder


def test_good_archive_passes_the_same_checks(good_archive: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.tar"
    write_entries(copy, read_entries(good_archive), reseal=True)  # rewritten by another tool
    manifest = verify_backup(copy)
    assert manifest.records["notes"] == 50
    assert restore_backup(copy, tmp_path / "restored") == manifest
    assert (tmp_path / "restored" / "site" / "current").is_symlink()


def test_restore_refuses_an_existing_target(good_archive: Path, tmp_path: Path) -> None:
    target = tmp_path / "todo"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(Conflict):
        restore_backup(good_archive, target)
    assert listing(tmp_path) == ["todo"] and listing(target) == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(Conflict):
        restore_backup(good_archive, tmp_path / "file")
    assert listing(tmp_path) == ["file", "todo"]


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        verify_backup(tmp_path / "nothing.tar")
    with pytest.raises(NotFound):
        restore_backup(tmp_path / "nothing.tar", tmp_path / "todo")
    assert listing(tmp_path) == []


def test_manifest_round_trips_through_json(good_archive: Path) -> None:
    manifest = verify_backup(good_archive)
    assert Manifest.from_json(orjson.loads(orjson.dumps(manifest.to_json()))) == manifest
    paths = [m.path for m in manifest.members]
    assert paths[0] == "backpack.db" and "secret_key" in paths
    assert [(k.path, k.target) for k in manifest.links] == [("site/current", "v1")]
