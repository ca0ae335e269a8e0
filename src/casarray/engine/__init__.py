"""The data plane: listeners, the l4 relay, upstream connections, TLS contexts. asyncio Protocols."""
