"""The process heap and Python's cyclic garbage collector, for a long-running server.

A full ("generation 2") collection walks every container object alive in the
process, however old. On a server that has imported its libraries and opened its
backpacks that is tens of thousands of objects that never become garbage, and
walking them stops the event loop for 50-130 ms (measured on the benchmark
machine): every request and realtime event in flight waits that long, which is
what a p99 latency shows. Once start-up is done, the server collects what start-up
left behind and moves every object alive then into the collector's permanent
generation (`gc.freeze()`), so later collections walk only what came after.

Frozen objects are never collected, so a backpack open at start-up that is later
stopped or removed would keep whatever of it is held in reference cycles:
`release_startup_objects()` hands everything back to the collector at that point
(the next full collection walks it all once more).
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect start-up garbage; keep the collector away from what is alive now."""
    gc.collect()
    gc.freeze()


def release_startup_objects() -> None:
    """Let the collector see the start-up objects again (some may be garbage now)."""
    if gc.get_freeze_count():
        gc.unfreeze()
