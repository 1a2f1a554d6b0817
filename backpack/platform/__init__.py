"""Putting backpacks together and running them: keys, data directories, instances."""
