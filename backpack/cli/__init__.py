"""The `backpack` command."""
