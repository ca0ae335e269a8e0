"""Choosing a server: algorithms (one file each), runtime server state, and the wait queue."""
