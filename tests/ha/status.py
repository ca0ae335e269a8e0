"""A watcher of one node's operator states: asks its admin API's /api/status again and again and writes
one JSON line each time the servers' operator states differ from the last answer (the first answer
too): when the answer came (epoch seconds) and each server's state.

Bounded by a duration. Run inside a namespace by the HA tests, to see when a change made on another
node is in force on this one:

    python tests/ha/status.py --url http://10.77.0.12:9090 --token-file admin.token --out states.jsonl \\
        --duration 60 --interval 0.01

Standard library only: it starts fast, and runs with any interpreter.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def states(url: str, token: str, timeout: float) -> dict[str, str] | None:
    """Server name -> operator state, or None when the node does not answer."""
    request = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"Bearer {token}"})
    # No proxy: an http_proxy in the environment must not capture a call inside the test network.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            status = json.load(response)
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return {server["name"]: server["operator"] for server in status["servers"]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the node's admin API, http://host:port")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=0.01, help="pause after each answer")
    parser.add_argument("--timeout", type=float, default=2.0, help="bound of one request")
    args = parser.parse_args(argv)
    with open(args.token_file, encoding="utf-8") as f:
        token = f.read().strip()
    deadline = time.monotonic() + args.duration
    last: dict[str, str] | None = None
    with open(args.out, "a", encoding="utf-8") as out:
        while time.monotonic() < deadline:
            found = states(args.url, token, args.timeout)
            seen = time.time()
            if found is not None and found != last:
                out.write(json.dumps({"t": seen, "states": found}) + "\n")
                out.flush()
                last = found
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
