"""Scenario (k): one 1 GiB upload to Backpack, streamed, while its resident memory is sampled.

The body comes from a generator (1 MiB at a time, never the whole file in memory) through
httpx with a Content-Length, as a browser sends a form. The file is deleted afterwards.
"""

from __future__ import annotations

import hashlib
import secrets
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.memory import process_tree, tree_rss_kb
from bench.servers import HOST, Backpack, ServerError

CHUNK = 1 << 20
SAMPLE_S = 0.05  # RSS sampling period during the upload
RESCAN_S = 1.0  # how often the process tree is walked again (worker processes)
BASELINE_S = 1.0  # RSS sampled this long before the upload; the median is the baseline
UPLOAD_TIMEOUT_S = 600.0


@dataclass
class BigUpload:
    size: int
    seconds: float = 0.0
    rss_before_kb: int = 0
    rss_peak_kb: int = 0
    rss_after_kb: int = 0
    samples: int = 0
    status: int = 0
    file_id: str = ""
    checks: list[str] = field(default_factory=list)

    @property
    def growth_kb(self) -> int:
        return max(0, self.rss_peak_kb - self.rss_before_kb)

    @property
    def mb_per_s(self) -> float:
        return self.size / 1e6 / self.seconds if self.seconds > 0 else 0.0


class RssWatch:
    """Samples VmRSS summed over a process tree every SAMPLE_S in a thread."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.values: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-watch", daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        pids, scanned = process_tree(self.root), time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - scanned >= RESCAN_S:
                pids, scanned = process_tree(self.root), time.monotonic()
            self.values.append(tree_rss_kb(pids))
            self._stop.wait(SAMPLE_S)


def _body(head: bytes, size: int, tail: bytes, digest: hashlib._Hash) -> Iterator[bytes]:
    """head, `size` bytes (a random 1 MiB block, each copy numbered), tail."""
    yield head
    block = bytearray(secrets.token_bytes(CHUNK))
    sent = 0
    while sent < size:
        block[:8] = (sent // CHUNK).to_bytes(8, "big")
        piece = bytes(block[: min(CHUNK, size - sent)])
        digest.update(piece)
        sent += len(piece)
        yield piece
    yield tail


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run_big_upload(server: Backpack, size: int) -> BigUpload:
    result = BigUpload(size)
    server.set_upload_limit(2 * size)
    server.put_bucket("big", {"create": None, "read": None, "update": None, "delete": None})
    blobs = server.data_dir / "blobs"
    blobs_before = _dir_bytes(blobs)
    boundary = "bench-" + secrets.token_hex(12)
    head = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in (("bucket", "big"), ("name", "big.bin"), ("public", "false"))
        )
        + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    headers = {
        "Authorization": f"Bearer {server.secret_key}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + size + len(tail)),
    }
    digest = hashlib.sha256()
    url = server.base_url + "/api/files"
    if httpx.URL(url).host != HOST:
        raise ServerError(f"refusing to send traffic off loopback: {url}")
    with httpx.Client(timeout=httpx.Timeout(UPLOAD_TIMEOUT_S, connect=10.0)) as client:
        with RssWatch(server.pid) as before:
            time.sleep(BASELINE_S)
        result.rss_before_kb = int(statistics.median(before.values))
        with RssWatch(server.pid) as during:
            t0 = time.monotonic()
            response = client.post(url, content=_body(head, size, tail, digest), headers=headers)
            result.seconds = time.monotonic() - t0
        result.rss_peak_kb = max(during.values)
        result.samples = len(during.values)
        result.status = response.status_code
        server.check_ok("(k) upload", response.status_code, response.text, (200, 201))
        meta = response.json()
        result.file_id = str(meta["id"])
        if int(meta["size"]) != size or meta.get("sha256") != digest.hexdigest():
            raise ServerError(
                f"(k): the server stored size {meta.get('size')}, sha256 {meta.get('sha256')}; "
                f"sent {size} bytes with sha256 {digest.hexdigest()}"
            )
        result.checks.append(f"the server stored {size} bytes with the sha256 sent")
        with RssWatch(server.pid) as after:
            time.sleep(BASELINE_S)
        result.rss_after_kb = int(statistics.median(after.values))
        deleted = client.delete(
            f"{url}/{result.file_id}", headers={"Authorization": headers["Authorization"]}
        )
    server.check_ok("(k) delete", deleted.status_code, deleted.text, (200, 204))
    deadline = time.monotonic() + 10
    left = _dir_bytes(blobs)
    while left > blobs_before + CHUNK and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _dir_bytes(blobs)
    if left > blobs_before + CHUNK:
        raise ServerError(f"(k): {left} bytes left in {blobs} after the file was deleted")
    result.checks.append(
        f"file deleted afterwards; blob store back to {left} bytes ({blobs_before} before)"
    )
    return result
