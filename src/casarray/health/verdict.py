"""The verdict on a healthcheck.htm response. Pure function, no I/O.

Exchange's Managed Availability answers `GET /<vdir>/healthcheck.htm` with status 200 and a body
"200 OK<br/>SERVER.FQDN" only while the protocol's component is Active; anything else (503, 3xx, 401,
an error page, a timeout) means the member must not take traffic (Microsoft "Load balancing in Exchange
Server"; F5's and NGINX's Exchange guides also match the body string "200 OK").
"""

from __future__ import annotations

HEALTHY_BODY = b"200 OK"


def judge(status: int, body_start: bytes) -> tuple[bool, str, str]:
    """(ok, code, reason) for a complete response head and the first bytes of its body."""
    if status != 200:
        return False, "L7STS", f"HTTP {status}"
    if not body_start.startswith(HEALTHY_BODY):
        shown = body_start[:40].decode("latin-1").replace("\r", " ").replace("\n", " ")
        return False, "L7RSP", f"HTTP 200 but body does not start with '200 OK': {shown!r}"
    return True, "L7OK", body_start.decode("latin-1").replace("<br/>", " ").strip()[:80]
