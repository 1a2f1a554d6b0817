"""The blob store contract: every adapter behind `backpack.core.blobs.BlobStore` passes this.

Parametrized over the local directory store and the S3 store; the S3 one runs
against moto's standalone server, started once per session on a loopback port.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiobotocore.session import get_session

from backpack.blobs import LocalBlobStore, open_blob_store
from backpack.blobs.s3 import S3BlobStore
from backpack.core.blobs import BlobStore
from backpack.errors import NotFound, PayloadTooLarge, Unavailable
from tests.conftest import free_port

MiB = 1024 * 1024
S3_PART = 5 * MiB  # S3's smallest part, so a few MiB already take the multipart path
S3_COPY_PART = 6 * MiB  # a small copy limit, so the server-side copy in parts is exercised
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CREDENTIALS},
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"moto server exited: {log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start: {log_path.read_text()}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Harness:
    store: BlobStore
    leftovers: Callable[[], Awaitable[list[str]]]  # traces of unfinished uploads


async def local_harness(tmp_path: Path, moto_endpoint: str) -> AsyncIterator[Harness]:
    store = LocalBlobStore(tmp_path / "blobs")

    async def leftovers() -> list[str]:
        return sorted(os.listdir(tmp_path / "blobs" / "tmp"))

    await store.open()
    yield Harness(store, leftovers)
    await store.close()


ADMIN_SESSION = get_session()  # loads the S3 model once for every test's admin client


async def s3_harness(tmp_path: Path, moto_endpoint: str) -> AsyncIterator[Harness]:
    bucket = f"blobs-{secrets.token_hex(6)}"
    prefix = "apps/todo"
    async with ADMIN_SESSION.create_client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    ) as s3:
        await s3.create_bucket(Bucket=bucket)

        async def leftovers() -> list[str]:
            temps = await s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/tmp/")
            uploads = await s3.list_multipart_uploads(Bucket=bucket)
            return [item["Key"] for item in temps.get("Contents", [])] + [
                f"upload of {item['Key']}" for item in uploads.get("Uploads", [])
            ]

        store = S3BlobStore(
            bucket,
            prefix,
            endpoint_url=moto_endpoint,
            region=REGION,
            access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            part_size=S3_PART,
            max_copy_size=S3_COPY_PART,
        )
        await store.open()
        yield Harness(store, leftovers)
        await store.close()


HARNESSES = {"local": local_harness, "s3": s3_harness}


@pytest.fixture(params=sorted(HARNESSES))
async def harness(
    request: pytest.FixtureRequest, tmp_path: Path, moto_endpoint: str
) -> AsyncIterator[Harness]:
    async for made in HARNESSES[request.param](tmp_path, moto_endpoint):
        yield made


@pytest.fixture
def store(harness: Harness) -> BlobStore:
    return harness.store


def pattern(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(f"{seed}".encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


async def chunked(data: bytes, sizes: tuple[int, ...]) -> AsyncIterator[bytes]:
    position, turn = 0, 0
    while position < len(data):
        size = sizes[turn % len(sizes)]
        yield data[position : position + size]
        position += size
        turn += 1


async def read_all(store: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in await store.read(key, start, end)])


@pytest.mark.parametrize("size", [0, 1, 11 * MiB + 3])
async def test_put_read_round_trip(store: BlobStore, size: int) -> None:
    data = pattern(size)
    info = await store.put(chunked(data, (65_537, 1, 1_000_003)))
    assert info.key == info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == size
    assert await store.size(info.key) == size
    assert await read_all(store, info.key) == data
    assert await store.usage() == size


async def test_put_bytes_matches_put(store: BlobStore) -> None:
    info = await store.put_bytes(b"hello")
    assert info.key == hashlib.sha256(b"hello").hexdigest()
    assert await read_all(store, info.key) == b"hello"


async def test_ranges(store: BlobStore) -> None:
    data = pattern(1000, seed=1)
    key = (await store.put_bytes(data)).key
    assert await read_all(store, key, 10) == data[10:]
    assert await read_all(store, key, 10, 20) == data[10:20]
    assert await read_all(store, key, 990, 5000) == data[990:]
    assert await read_all(store, key, 1000) == b""
    assert await read_all(store, key, 5000) == b""
    assert await read_all(store, key, 7, 7) == b""
    chunks = [c async for c in await store.read(key, 3, 900, chunk_size=100)]
    assert b"".join(chunks) == data[3:900]
    assert all(0 < len(c) <= 100 for c in chunks)
    with pytest.raises(ValueError):
        await store.read(key, -1)
    with pytest.raises(ValueError):
        await store.read(key, 20, 10)


async def test_ranges_of_a_multipart_blob(store: BlobStore) -> None:
    data = pattern(7 * MiB, seed=2)
    key = (await store.put(chunked(data, (MiB,)))).key
    start, end = 5 * MiB - 17, 5 * MiB + 17
    assert await read_all(store, key, start, end) == data[start:end]


async def test_duplicates_are_stored_once(store: BlobStore) -> None:
    data = pattern(6 * MiB, seed=3)
    first = await store.put(chunked(data, (MiB,)))
    second = await store.put(chunked(data, (333_333,)))
    assert first == second
    assert await store.usage() == len(data)
    await store.delete(first.key)
    assert await store.size(first.key) is None
    assert await store.usage() == 0
    with pytest.raises(NotFound):
        await store.read(first.key)
    await store.delete(first.key)  # idempotent


async def test_missing_blob(store: BlobStore) -> None:
    key = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(NotFound):
        await store.read(key)
    with pytest.raises(NotFound):
        await store.put_derived(key, "thumb.jpg", b"x")
    assert await store.size(key) is None
    assert await store.get_derived(key, "thumb.jpg") is None
    await store.delete(key)


@pytest.mark.parametrize("limit", [1000, 6 * MiB], ids=["small", "multipart"])
async def test_over_max_bytes_leaves_nothing(harness: Harness, limit: int) -> None:
    store = harness.store
    kept = await store.put_bytes(b"already here")
    with pytest.raises(PayloadTooLarge) as raised:
        await store.put(chunked(pattern(limit + 1), (MiB // 2 + 1,)), max_bytes=limit)
    assert str(limit) in raised.value.message
    assert await store.usage() == kept.size
    assert await harness.leftovers() == []
    exact = await store.put(chunked(pattern(limit), (MiB // 2 + 1,)), max_bytes=limit)
    assert exact.size == limit


async def failing_stream(size: int, error: BaseException) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        yield pattern(MiB, seed=sent)
        sent += MiB
    raise error


@pytest.mark.parametrize("size", [MiB, 7 * MiB], ids=["small", "multipart"])
async def test_failing_stream_leaves_nothing(harness: Harness, size: int) -> None:
    error = ConnectionResetError("the client went away")
    with pytest.raises(ConnectionResetError) as raised:
        await harness.store.put(failing_stream(size, error))
    assert raised.value is error
    assert await harness.store.usage() == 0
    assert await harness.leftovers() == []


async def test_cancelled_put_leaves_nothing(harness: Harness) -> None:
    halfway = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        for seed in range(7):
            yield pattern(MiB, seed=seed)
        halfway.set()
        await asyncio.Event().wait()
        yield b"never"

    task = asyncio.create_task(harness.store.put(stalls()))
    await halfway.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await harness.store.usage() == 0
    assert await harness.leftovers() == []


async def test_concurrent_puts_of_the_same_content(harness: Harness) -> None:
    data = pattern(6 * MiB, seed=4)
    infos = await asyncio.gather(*(harness.store.put(chunked(data, (MiB,))) for _ in range(4)))
    assert len(set(infos)) == 1
    assert await read_all(harness.store, infos[0].key) == data
    assert await harness.store.usage() == len(data)
    assert await harness.leftovers() == []


async def test_derived_data(store: BlobStore) -> None:
    info = await store.put_bytes(b"an image")
    assert await store.get_derived(info.key, "thumb-100.webp") is None
    await store.put_derived(info.key, "thumb-100.webp", b"small")
    await store.put_derived(info.key, "thumb-100.webp", b"smaller")
    await store.put_derived(info.key, "preview.png", b"p")
    assert await store.get_derived(info.key, "thumb-100.webp") == b"smaller"
    assert await store.get_derived(info.key, "preview.png") == b"p"
    assert await store.usage() == len(b"an image") + len(b"smaller") + len(b"p")
    await store.delete(info.key)
    assert await store.get_derived(info.key, "thumb-100.webp") is None
    assert await store.usage() == 0


BAD_KEYS = [
    "",
    "../../etc/passwd",
    "A" * 64,
    "g" * 64,
    "a" * 63,
    "a" * 65,
    "ab/" + "a" * 61,
    "a" * 63 + "\n",
]
BAD_NAMES = ["", ".", "..", "../x", "a/b", "x" * 65, "thumb\x00", "é"]


async def test_invalid_keys_are_refused(store: BlobStore) -> None:
    for key in BAD_KEYS:
        with pytest.raises(ValueError):
            await store.read(key)
        with pytest.raises(ValueError):
            await store.size(key)
        with pytest.raises(ValueError):
            await store.delete(key)
        with pytest.raises(ValueError):
            await store.get_derived(key, "thumb")
        with pytest.raises(ValueError):
            await store.put_derived(key, "thumb", b"x")


async def test_invalid_derived_names_are_refused(store: BlobStore) -> None:
    key = (await store.put_bytes(b"x")).key
    for name in BAD_NAMES:
        with pytest.raises(ValueError):
            await store.put_derived(key, name, b"x")
        with pytest.raises(ValueError):
            await store.get_derived(key, name)
    assert await store.usage() == 1


async def test_large_put_keeps_memory_flat(harness: Harness) -> None:
    size = 64 * MiB
    # Local: a write buffer of 1 MiB. S3: the part being filled, plus the part in flight,
    # which the socket transport copies for a moment while it sends.
    budget = 16 * MiB if isinstance(harness.store, LocalBlobStore) else 5 * S3_PART

    async def generate() -> AsyncIterator[bytes]:
        for i in range(size // (64 * 1024)):
            yield i.to_bytes(8, "big") * 8192  # a fresh 64 KiB object each time

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        info = await harness.store.put(generate())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.size == size
    assert peak - baseline < budget, f"put held {(peak - baseline) / MiB:.1f} MiB"


def broken_local(tmp_path: Path, moto_endpoint: str) -> BlobStore:
    (tmp_path / "a-file").write_bytes(b"")
    return LocalBlobStore(tmp_path / "a-file" / "blobs")


def unreachable_s3(tmp_path: Path, moto_endpoint: str) -> BlobStore:
    return S3BlobStore(
        "bucket",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region=REGION,
        access_key_id="testing",
        secret_access_key="testing",
    )


def missing_bucket(tmp_path: Path, moto_endpoint: str) -> BlobStore:
    return S3BlobStore(
        "no-such-bucket",
        endpoint_url=moto_endpoint,
        region=REGION,
        access_key_id="testing",
        secret_access_key="testing",
    )


@pytest.mark.parametrize("broken", [broken_local, unreachable_s3, missing_bucket])
async def test_unusable_backend_is_unavailable(
    broken: Callable[[Path, str], BlobStore], tmp_path: Path, moto_endpoint: str
) -> None:
    store = broken(tmp_path, moto_endpoint)
    with pytest.raises(Unavailable) as raised:
        await store.open()
    message = raised.value.message
    assert message.startswith("The file store could not") and message.endswith(".")
    assert "\n" not in message


# -- choosing an adapter by URL ---------------------------------------------------------------


def test_open_blob_store_picks_local_for_paths(tmp_path: Path) -> None:
    for url in (
        str(tmp_path),
        "relative/files",
        f"file://{tmp_path}",
        f"file://localhost{tmp_path}",
    ):
        store = open_blob_store(url)
        assert isinstance(store, LocalBlobStore)
    local = open_blob_store(f"file://{tmp_path}/with%20space")
    assert isinstance(local, LocalBlobStore) and local.root == tmp_path / "with space"


def test_open_blob_store_picks_s3_with_settings_from_env() -> None:
    env = {
        "BACKPACK_S3_ENDPOINT": "http://127.0.0.1:9",
        "AWS_DEFAULT_REGION": "eu-west-3",
        **CREDENTIALS,
    }
    store = open_blob_store("s3://my-bucket/apps/todo/", environ=env)
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix, store.endpoint_url) == (
        "my-bucket",
        "apps/todo/",
        "http://127.0.0.1:9",
    )
    bare = open_blob_store("s3://my-bucket", environ={}, endpoint_url="http://127.0.0.1:8")
    assert isinstance(bare, S3BlobStore)
    assert (bare.prefix, bare.endpoint_url) == ("", "http://127.0.0.1:8")


@pytest.mark.parametrize("url", ["", "s3://", "s3:///prefix", "gs://bucket", "file://host/x"])
def test_open_blob_store_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_blob_store(url)


def test_s3_without_its_extra_names_the_extra() -> None:
    script = (
        "import sys; sys.modules['aiobotocore'] = None\n"
        "from backpack.blobs import open_blob_store\n"
        "open_blob_store('s3://bucket')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "pip install 'backpack-baas[s3]'" in result.stderr
