"""`casarray ctl health`: is the balancer on this host able to serve? One line saying why, and with
`--exit-code` the exit status keepalived's `track_script` and a BGP watcher act on (0 yes, 1 no).

Three questions, in this order, the first "no" being the answer:

1. Is casarray running? Its admin API answers `GET /api/status` (reads on loopback need no token).
2. Is its listener accepting? A TCP connect to the HTTPS listener the status names (a wildcard
   address through loopback). A VIP this host does not hold (the backup of a VRRP pair, where casarray
   binds it through ip_nonlocal_bind) cannot be reached without leaving the host — a connect would reach
   the other node — so it is not probed; the admin API answering already shows the process is up.
3. Does every required pool have a server? `casarray.health.node.judge`.

Run every second, so it must be cheap: with `--admin URL` (what `export keepalived` writes) `main()`
takes the fast path here, before the command-line framework and the config models are imported: this
module needs only the standard library and the pure judge (about 0.05 s of CPU instead of about 1 s).
Any other form (`-c FILE`, `--help`, a mistake) goes through the full `casarray ctl health` command,
which calls the same `check`.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from casarray.health.node import judge
from casarray.netaddr import split_host_port

__all__ = ["DEFAULT_TIMEOUT", "Outcome", "check", "fast_main", "render"]

DEFAULT_TIMEOUT = 2.0  # seconds for each of the two network steps (the admin API, the listener)


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    reason: str  # one line
    detail: dict[str, Any] = field(default_factory=dict)  # for --json


def check(
    admin: str, token: str | None, services: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT
) -> Outcome:
    """Ask the admin API at `admin` (http://host:port) and probe the listener it names."""
    detail: dict[str, Any] = {"admin": admin}
    try:
        status = _status(admin, token, timeout)
    except _Failed as exc:
        return Outcome(False, str(exc), detail)
    listener = str(status.get("https_listener", ""))
    accepts, note = _probe_listener(listener, timeout)
    detail["listener"] = {"address": listener, "accepts": accepts, "note": note}
    if accepts is False:
        return Outcome(False, f"the listener {listener} does not accept connections: {note}", detail)
    try:
        verdict = judge(status, services)
    except ValueError as exc:
        return Outcome(False, str(exc), detail)
    detail["pools"] = {pool: list(names) for pool, names in verdict.serving.items()}
    heard = f"listener {listener} {'accepts' if accepts else note}"
    return Outcome(verdict.ok, f"{heard}; {verdict.reason}" if verdict.ok else verdict.reason, detail)


def render(outcome: Outcome, as_json: bool) -> str:
    if as_json:
        return json.dumps({"ok": outcome.ok, "reason": outcome.reason, **outcome.detail}, indent=2)
    return f"{'ok' if outcome.ok else 'fail'}: {outcome.reason}"


class _Failed(Exception):
    pass


def _status(admin: str, token: str | None, timeout: float) -> dict[str, Any]:
    # http.client, not httpx: this runs every second and httpx alone costs more CPU to import than the
    # whole check (one GET on loopback needs no more).
    parts = urlsplit(admin if "://" in admin else "http://" + admin)
    if parts.scheme != "http" or not parts.hostname:
        raise _Failed(f"--admin {admin!r}: expected http://HOST:PORT (the admin API speaks plain HTTP)")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", "/api/status", headers=headers)
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise _Failed(
            f"casarray is not running here: the admin API at {admin} does not answer ({_why(exc)})"
        ) from None
    finally:
        connection.close()
    if response.status != 200:
        raise _Failed(
            f"the admin API at {admin} answered {response.status} {response.reason}: {_error_of(body)}"
        )
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _Failed(f"{admin}/api/status did not answer a JSON object (is that casarray's admin API?)")
    return data


def _error_of(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return " ".join(body.decode("utf-8", "replace").split())[:200]


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _probe_listener(listener: str, timeout: float) -> tuple[bool | None, str]:
    """(True, "") when a connect succeeds, (False, why) when it fails, (None, why not) when not probed."""
    try:
        host, port = split_host_port(listener)
        address = ipaddress.ip_address(host)
    except ValueError:
        return None, f"not probed (the status names no listener address: {listener!r})"
    if not port:
        return None, "not probed (port 0: any free port)"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    elif not _is_local(address):
        return None, "not probed (the address is not held by this host: the VIP is on another node)"
    try:
        with socket.create_connection((str(address), port), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, _why(exc)


def _is_local(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `address` is one of this host's own: the kernel picks an address as its own source only
    when it is local (a UDP connect sends nothing, it only chooses the route)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((str(address), 9))
            return ipaddress.ip_address(probe.getsockname()[0].split("%")[0]) == address
    except OSError:
        return False


def _seconds(text: str) -> float | None:
    """'2', '2s', '1.5', '500ms' -> seconds; None for anything else (left to the full command's parser)."""
    scale = 0.001 if text.endswith("ms") else 1.0
    number = text.removesuffix("ms").removesuffix("s")
    try:
        value = float(number) * scale
    except ValueError:
        return None
    return value if 0 < value <= 3600 else None


def fast_main(argv: Sequence[str]) -> int | None:
    """`ctl health --admin URL [--token-file F] [--service S]… [--timeout T] [--exit-code] [--json]`
    without the framework: the exit status, or None when `argv` is anything else."""
    if list(argv[:2]) != ["ctl", "health"]:
        return None
    admin: str | None = None
    token_file: str | None = None
    services: list[str] = []
    timeout = DEFAULT_TIMEOUT
    exit_code = as_json = False
    rest = list(argv[2:])
    while rest:
        word = rest.pop(0)
        name, equals, value = word.partition("=")
        if name in ("--admin", "--token-file", "--service", "-s", "--timeout"):
            if not equals:
                if not rest:
                    return None
                value = rest.pop(0)
            if name == "--admin":
                admin = value
            elif name == "--token-file":
                token_file = value
            elif name == "--timeout":
                seconds = _seconds(value)
                if seconds is None:
                    return None
                timeout = seconds
            else:
                services.append(value)
        elif word == "--exit-code":
            exit_code = True
        elif word == "--json":
            as_json = True
        else:
            return None  # -c, --help, anything unknown: the full command decides
    if admin is None:
        return None  # the admin URL comes from the config: the full command reads it
    token: str | None = None
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            print(f"error: cannot read the token file {token_file}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    outcome = check(admin, token, services, timeout)
    print(render(outcome, as_json))
    return 1 if exit_code and not outcome.ok else 0
