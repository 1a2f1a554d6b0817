"""The domain: collections, schemas, records, the filter language, rules and events.

Nothing here imports HTTP or a database driver; adapters implement the
Protocols declared in `backpack.core.storage`.
"""
