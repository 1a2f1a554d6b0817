"""Benchmark harness: Backpack vs PocketBase on loopback (run with `python -m bench.run`)."""
