"""The JS SDK ships inside the Python package: the copy must equal the canonical source."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CANONICAL = ROOT / "sdks" / "js" / "src" / "index.js"
SHIPPED = ROOT / "backpack" / "sdk" / "index.js"


def test_shipped_sdk_equals_the_canonical_source() -> None:
    assert CANONICAL.is_file(), f"{CANONICAL} is missing"
    assert SHIPPED.is_file(), f"{SHIPPED} is missing: cp {CANONICAL} {SHIPPED}"
    assert SHIPPED.read_bytes() == CANONICAL.read_bytes(), (
        f"{SHIPPED.relative_to(ROOT)} differs from {CANONICAL.relative_to(ROOT)}; "
        f"copy it: cp sdks/js/src/index.js backpack/sdk/index.js"
    )
