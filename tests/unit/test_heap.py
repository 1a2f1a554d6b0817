"""backpack.heap: start-up objects out of the collector's way, and handed back."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from backpack.heap import freeze_startup_objects, release_startup_objects


@pytest.fixture
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # never leave this test process frozen


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_frozen_objects_are_not_collected_until_released(thawed: None) -> None:
    node = Node()
    ref = weakref.ref(node)
    freeze_startup_objects()
    assert gc.get_freeze_count() > 0
    del node
    gc.collect()
    assert ref() is not None  # frozen: the collector never looks at it
    release_startup_objects()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert ref() is None  # handed back: collected
    release_startup_objects()  # nothing frozen: nothing to do
    assert gc.get_freeze_count() == 0
