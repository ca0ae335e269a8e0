"""A client that asks one HTTPS address again and again, each request on a new connection, and writes
one JSON line per request: when it started (epoch seconds), how long it took, whether it succeeded,
which server answered (X-FEServer) or why it failed.

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
    address: str, port: int, host: str, path: str, ctx: ssl.SSLContext, timeout: float
) -> dict[str, object]:
    started = time.time()
    result: dict[str, object] = {"t": started}
    try:
        raw = socket.create_connection((address, port), timeout=timeout)
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
        try:
            conn.sock = ctx.wrap_socket(raw, server_hostname=host)
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
            result["status"] = response.status
            result["server"] = response.headers.get("X-FEServer", "")
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
    args = parser.parse_args(argv)
    ctx = ssl.create_default_context(cafile=args.ca)
    deadline = time.monotonic() + args.duration
    with open(args.out, "a", encoding="utf-8") as out:
        for _ in range(args.count):
            if time.monotonic() >= deadline:
                break
            result = one(args.address, args.port, args.host, args.path, ctx, args.timeout)
            out.write(json.dumps(result) + "\n")
            out.flush()
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
