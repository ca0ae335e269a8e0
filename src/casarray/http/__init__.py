"""Sans-I/O HTTP/1.1 framing on httptools: bytes in, events out. No sockets, no asyncio here."""
