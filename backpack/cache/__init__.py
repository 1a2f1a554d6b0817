"""State shared by every worker through Redis, behind Protocols core declares.

`backpack.cache.ratelimit.RedisRateLimitStore` is the shared `RateLimitStore`.
"""
