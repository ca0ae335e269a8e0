"""Sans-I/O HTTP/1.1 framing: bytes in, events out. No sockets, no asyncio here."""
