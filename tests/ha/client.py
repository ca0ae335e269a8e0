"""A client that asks one HTTPS address again and again, each request on a new connection, and writes
one JSON line per request: when it started (epoch seconds), how long it took, whether it succeeded,
which server answered (X-FEServer) or why it failed.

With --source (the client's own address) or --cookie (a Cookie field to send), each given several
times, request N uses the Nth value in turn; the line records the values sent and the Set-Cookie
answered.

Bounded by a count and a duration, whichever comes first. Run inside a namespace by the HA tests:

    python tests/ha/client.py --address 10.77.0.100 --port 443 --host outlook.alwayshotcafe.com \\
        --ca ca.pem --out requests.jsonl --count 2000 --duration 60 --interval 0.05

Standard library only: it starts fast, and runs with any interpreter.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import sys
import time


def one(
    address: str,
    port: int,
    host: str,
    path: str,
    ctx: ssl.SSLContext,
    timeout: float,
    source: str | None = None,
    cookie: str | None = None,
) -> dict[str, object]:
    started = time.time()
    result: dict[str, object] = {"t": started}
    if source is not None:
        result["source"] = source
    if cookie is not None:
        result["cookie"] = cookie
    headers = {"Connection": "close", **({"Cookie": cookie} if cookie is not None else {})}
    try:
        bind = (source, 0) if source is not None else None
        raw = socket.create_connection((address, port), timeout=timeout, source_address=bind)
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
        try:
            conn.sock = ctx.wrap_socket(raw, server_hostname=host)
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            result["status"] = response.status
            result["server"] = response.headers.get("X-FEServer", "")
            result["set_cookie"] = (response.headers.get("Set-Cookie") or "").split(";")[0]
            result["ok"] = response.status == 200
        finally:
            conn.close()
            raw.close()
    except (OSError, http.client.HTTPException) as exc:
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["ms"] = round((time.time() - started) * 1000, 1)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--host", required=True, help="SNI and Host")
    parser.add_argument("--path", default="/owa/healthcheck.htm")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=0.05, help="pause after each request")
    parser.add_argument("--timeout", type=float, default=1.0, help="bound of one request")
    parser.add_argument("--source", action="append", default=[], help="an address to send from")
    parser.add_argument("--cookie", action="append", default=[], help="a Cookie field value to send")
    args = parser.parse_args(argv)
    ctx = ssl.create_default_context(cafile=args.ca)
    deadline = time.monotonic() + args.duration
    with open(args.out, "a", encoding="utf-8") as out:
        for n in range(args.count):
            if time.monotonic() >= deadline:
                break
            source = args.source[n % len(args.source)] if args.source else None
            cookie = args.cookie[n % len(args.cookie)] if args.cookie else None
            result = one(args.address, args.port, args.host, args.path, ctx, args.timeout, source, cookie)
            out.write(json.dumps(result) + "\n")
            out.flush()
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
