"""Event bus adapters behind `backpack.core.bus.Bus`: in process now; Redis and PostgreSQL next."""

from __future__ import annotations

from backpack.bus.memory import MemoryBus
from backpack.core.bus import Bus


def open_bus(url: str | None = None) -> Bus:
    """The bus for a URL: none or `memory://` is the in-process bus."""
    if url is None or url in ("", "memory://"):
        return MemoryBus()
    scheme = url.split(":", 1)[0]
    raise ValueError(f"No event bus for '{scheme}://' yet; only the in-process bus exists.")


__all__ = ["MemoryBus", "open_bus"]
