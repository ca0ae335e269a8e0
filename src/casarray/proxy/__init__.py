"""The Layer-7 proxy's rules, sans-I/O: routing, local answers, forwarding, and the session core.

Nothing here imports asyncio or reads a clock: the asyncio shells live in engine/l7.py."""
