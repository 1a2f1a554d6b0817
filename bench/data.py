"""The data set both servers get: 10,000 `items` records from a fixed seed."""

from __future__ import annotations

import random
from typing import Any

SEED = 20240601
RECORD_COUNT = 10_000
TITLE_LENGTH = 30

_WORDS = (
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
)


def make_records(count: int = RECORD_COUNT, seed: int = SEED) -> list[dict[str, Any]]:
    """Records `{"title": str (~30 chars), "score": int 0..1000, "done": bool}`."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for i in range(count):
        title = f"item {i:04d}"
        while len(title) < TITLE_LENGTH:
            title += " " + rng.choice(_WORDS)
        records.append(
            {
                "title": title[:TITLE_LENGTH].rstrip(),
                "score": rng.randint(0, 1000),
                "done": rng.random() < 0.5,
            }
        )
    return records


def expected_matches(records: list[dict[str, Any]]) -> int:
    """How many records match scenario (b)/(c)'s filter `score > 500 and done = true`."""
    return sum(1 for r in records if r["score"] > 500 and r["done"])


def expected_top_scores(records: list[dict[str, Any]], limit: int = 20) -> list[int]:
    """The scores of the first page of (b)/(c), sorted by -score."""
    scores = sorted((r["score"] for r in records if r["score"] > 500 and r["done"]), reverse=True)
    return scores[:limit]


# --------------------------------------------------------------------------- auth and files

USER_COUNT = 100
FILE_BYTES = 1 << 20  # (i) download and (j) upload: 1 MiB
BIG_UPLOAD_BYTES = 1 << 30  # (k): 1 GiB, streamed


def make_users(count: int = USER_COUNT) -> list[tuple[str, str]]:
    """(email, password) of the users both servers get, in order."""
    return [(f"bench-user-{i:03d}@example.com", f"bench-password-{i:03d}") for i in range(count)]


def file_payload(size: int = FILE_BYTES, seed: int = SEED) -> bytes:
    """Incompressible bytes from a fixed seed (the same file on both servers)."""
    return random.Random(seed).randbytes(size)
