"""Event bus adapters behind `backpack.core.bus.Bus`: in process, Redis pub/sub, PostgreSQL."""

from __future__ import annotations

from backpack.bus.memory import MemoryBus
from backpack.core.bus import Bus


def open_bus(url: str | None = None, *, prefix: str | None = None) -> Bus:
    """The bus for a URL: none or `memory://` in process, `redis://`/`rediss://`/`unix://`
    Redis pub/sub, `postgresql://` LISTEN/NOTIFY; `prefix` names the deployment's channels."""
    if url is None or url in ("", "memory://"):
        return MemoryBus()
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        from backpack.bus.redis import DEFAULT_PREFIX, RedisBus

        return RedisBus(url, prefix=DEFAULT_PREFIX if prefix is None else prefix)
    if scheme in ("postgresql", "postgres"):
        from backpack.bus.postgres import DEFAULT_PREFIX as PG_PREFIX
        from backpack.bus.postgres import PostgresBus

        return PostgresBus(url, prefix=PG_PREFIX if prefix is None else prefix)
    raise ValueError(f"No event bus for '{scheme}://': use memory://, redis:// or postgresql://.")


__all__ = ["MemoryBus", "open_bus"]
