"""Backpack names: `^[a-z][a-z0-9-]{1,39}$`, unique, some reserved (API.md, Addressing).

A name is also the first label of the backpack's host (`todo.localhost`), so it
must be a DNS label that no resolver or browser rewrites: no trailing hyphen,
and no `--` at positions 3-4, the mark of IDNA ("xn--") and other encodings.
"""

from __future__ import annotations

import re
from typing import Final

from backpack.errors import ValidationFailed

RESERVED: Final = frozenset({"admin", "api", "www", "i"})
_NAME: Final = re.compile(r"[a-z][a-z0-9-]{1,39}")
RULE: Final = (
    "2 to 40 characters: lower-case letters, digits and '-', starting with a letter, "
    "not ending with '-'"
)


def check_name(name: object) -> str:
    """`name` if it may name a backpack, else ValidationFailed saying why."""
    if not isinstance(name, str):
        raise _bad("must be a string")
    if not _NAME.fullmatch(name):
        shown = name[:60]
        if name.lower() != name and _NAME.fullmatch(name.lower()):
            raise _bad(f"'{shown}' has upper-case letters; host names are lower-case")
        raise _bad(f"'{shown}' is not a valid name: {RULE}")
    if name.endswith("-"):
        raise _bad(f"'{name}' ends with '-', which no host name may")
    if name[2:4] == "--":
        raise _bad(f"'{name}' has '--' at positions 3-4, which host names reserve (xn--)")
    if name in RESERVED:
        raise _bad(f"'{name}' is reserved ({', '.join(sorted(RESERVED))})")
    return name


def _bad(sentence: str) -> ValidationFailed:
    return ValidationFailed("The backpack name is not allowed.", {"name": sentence})
