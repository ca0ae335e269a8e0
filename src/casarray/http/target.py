"""Request targets as a server will read them: dot-segments resolved before routing. Sans-I/O.

IIS resolves `.` and `..` segments (percent-encoded ones too) before it maps a path to a virtual
directory, so `/owa/../ecp/` and `/owa/%2e%2e/ecp/` reach ECP. A balancer that routed such a target by
its first segment and forwarded it raw would let a client reach a vdir that routing refused (or one
left out of `services`). So the path is normalised first (RFC 3986 §5.2.4, with percent-encoded dots
decoded as §6.2.2.2 allows for unreserved characters), routed by the result, and the result is what
the server receives: no dot-segment ever reaches a server.

An encoded slash or backslash (`%2f`, `%5c`) and a raw backslash in the path are refused: IIS may
read them as separators, which would make a new segment out of what the balancer saw as one. The
query is left alone (ActiveSync sends `User=DOMAIN%5Cuser` there).
"""

from __future__ import annotations

from casarray.http.errors import ProtocolError


def normalize_target(target: bytes) -> bytes:
    """The origin-form `target` with dot-segments removed from its path; `target` itself (the same
    object) when there is nothing to change, which is the usual case. Raises ProtocolError (400) for a
    path whose separators a server could read differently."""
    # Single bytes looked for as ints (a memchr each; `in` with a bytes operand first tries it as an int,
    # and raises and clears a TypeError), "/." only when the target has a dot at all.
    if 37 not in target and 92 not in target and (46 not in target or target.find(b"/.") < 0):  # % \\ .
        return target  # the usual request: nothing to look at
    end = target.find(b"?")
    path, query = (target, b"") if end < 0 else (target[:end], target[end:])
    if b"%" in path:
        lowered = path.lower()
        if b"%2f" in lowered or b"%5c" in lowered:
            raise ProtocolError("an encoded slash or backslash in the request path")
        if b"%2e" in lowered:
            path = path.replace(b"%2e", b".").replace(b"%2E", b".")
    if b"\\" in path:
        raise ProtocolError("a backslash in the request path")
    if b"/." not in path:
        return target if len(path) + len(query) == len(target) else path + query
    return remove_dot_segments(path) + query


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 §5.2.4 for an absolute path ("/a/b/../c" → "/a/c"; "/a/.." → "/a/")."""
    kept: list[bytes] = []
    segments = path.split(b"/")[1:]
    for segment in segments:
        if segment == b"..":
            if kept:
                kept.pop()
        elif segment != b".":
            kept.append(segment)
    out = b"/" + b"/".join(kept)
    if segments and segments[-1] in (b".", b"..") and not out.endswith(b"/"):
        out += b"/"
    return out
