"""Timestamps in the contract's format: RFC 3339, UTC, milliseconds."""

from __future__ import annotations

import time


def now_rfc3339() -> str:
    t = time.time()
    ms = int(t * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ms:03d}Z"
