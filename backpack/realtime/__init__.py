"""Realtime: record changes, channels and presence over WebSockets (see docs/realtime.md)."""

from backpack.realtime.connection import Connection, RealtimeLimits
from backpack.realtime.hub import TOPIC, RealtimeHub, Subscription

__all__ = ["TOPIC", "Connection", "RealtimeHub", "RealtimeLimits", "Subscription"]
