"""`casarray export keepalived`: a keepalived.conf (keepalived 2.2, Debian 12) that holds the VIP for a pair
of casarray hosts with VRRP.

One file per host: the same casarray.yaml exported twice, once with `--state MASTER` (priority 150) and
once with `--state BACKUP` (priority 100). Both hosts run casarray with the same config; on the host that
does not hold the VIP, casarray binds it through `net.ipv4.ip_nonlocal_bind=1` (docs/operations.md).

- `vrrp_script`: `casarray ctl health --admin URL --exit-code` every second (the fast path of ctl
  health: no config read, no framework). It fails when casarray is not running, its listener does not
  accept, or a pool has no server. Two failures in a row put the instance in FAULT: it gives up the VIP
  at once (an advert with priority 0, RFC 5798 §6.4.3) and the other host takes it. A weight would only
  lower the priority, which moves nothing under `nopreempt`.
- `vrrp_instance`: VRRPv3 (RFC 5798), `advert_int 1`, the VIP as a host address (/32, /128) on the
  interface. The mail listeners listen on the same address, so one instance moves HTTPS and mail together.
  `unicast_peer` when peers are given (networks without multicast); `nopreempt` or `preempt_delay`
  (both need the initial state BACKUP, on both hosts: the priorities still decide the first election).
- `notify`: one line per transition (MASTER, BACKUP, FAULT, STOP) to syslog with logger, or appended
  to a file.
- `virtual_router_id`: must be the same on both hosts and unique among VRRP routers on the segment;
  default `derived_router_id(namespace)`, a stable hash of the namespace in 1..255.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from casarray.admin.auth import admin_url, is_loopback_host, split_listen
from casarray.config.model import Config
from casarray.export.haproxy import ExportError

KEEPALIVED_VERSION = "2.2"

INSTANCE = "casarray_vip"
SCRIPT = "casarray_check"

DEFAULT_CASARRAY = "/usr/local/bin/casarray"  # where `pip install casarray` puts it for root
SH = "/bin/sh"
LOGGER = "/usr/bin/logger"  # util-linux (Debian: bsdutils, essential)
NOTIFY_TAG = "casarray-vrrp"

DEFAULT_PRIORITY: dict[str, int] = {"MASTER": 150, "BACKUP": 100}

# The check: every second, each step of `ctl health` bounded by CHECK_STEP_TIMEOUT; keepalived kills a run
# that outlasts CHECK_TIMEOUT and counts it failed. FALL failures in a row: FAULT; RISE successes: back.
CHECK_INTERVAL = 1
CHECK_STEP_TIMEOUT = 1
CHECK_TIMEOUT = 3
CHECK_FALL = 2
CHECK_RISE = 2
MAX_PREEMPT_DELAY = 1000.0  # keepalived's bound for preempt_delay (seconds)

State = Literal["MASTER", "BACKUP"]

# Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no '/', no white space, not "." or "..".
_IFACE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
# Paths written into a script line: absolute, and nothing keepalived or the shell would split or expand.
_PATH = re.compile(r"^/[A-Za-z0-9_.+/-]+$")


@dataclass(frozen=True, slots=True)
class KeepalivedOptions:
    interface: str = "eth0"
    state: State = "MASTER"
    priority: int | None = None  # default: DEFAULT_PRIORITY[state]
    router_id: int | None = None  # virtual_router_id; default: derived_router_id(namespace)
    peers: Sequence[str] = ()  # unicast peers (the other host's address); empty: multicast
    casarray: str = DEFAULT_CASARRAY  # the command the check runs (absolute)
    nopreempt: bool = False  # keep the VIP where it is when a host of higher priority comes back
    preempt_delay: float | None = None  # seconds a host of higher priority waits before taking it back
    notify_log: str | None = None  # append transitions to this file instead of syslog


def derived_router_id(namespace: str) -> int:
    """A stable virtual_router_id in 1..255 for `namespace`: both hosts derive the same one from the same
    config, and two casarray pairs with different namespaces on one segment rarely collide (1 in 255)."""
    digest = hashlib.sha256(namespace.strip().rstrip(".").lower().encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 255 + 1


def export_keepalived(config: Config, source: str, options: KeepalivedOptions) -> str:
    """The keepalived.conf that holds `config`'s VIP on this host (read from `source`)."""
    vip = _vip(config)
    interface = _interface(options.interface)
    state = options.state
    if state not in DEFAULT_PRIORITY:
        raise ExportError(f"state {state!r} is neither MASTER nor BACKUP", where="--state")
    priority = options.priority if options.priority is not None else DEFAULT_PRIORITY[state]
    if not 1 <= priority <= 254:
        raise ExportError(
            f"priority {priority} is out of range",
            where="--priority",
            hint="1..254; 255 is reserved for the owner of the address",
        )
    router_id = options.router_id if options.router_id is not None else derived_router_id(config.namespace)
    if not 1 <= router_id <= 255:
        raise ExportError(
            f"virtual router id {router_id} is out of range", where="--router-id", hint="1..255"
        )
    peers = _peers(options.peers, vip)
    check = _check(config, options.casarray)
    preempt = _preempt(options)
    notify = _notify(vip, options.notify_log)
    # keepalived honours nopreempt and preempt_delay only from the initial state BACKUP.
    written_state = "BACKUP" if preempt else state

    other = "BACKUP" if state == "MASTER" else "MASTER"
    lines: list[str] = [
        *_comment(
            f"Generated by casarray from {source} (namespace {config.namespace}, mode {config.mode}), "
            f"for keepalived {KEEPALIVED_VERSION}."
        ),
        *_comment(
            "Check it with: keepalived --config-test -f <this file>. Export again rather than editing it."
        ),
        *_comment(
            f"This host: {state}, priority {priority}. On the other host export with --state {other} "
            "(same config, same options otherwise). casarray runs on both hosts; where "
            "the VIP is not local yet it binds it through net.ipv4.ip_nonlocal_bind=1 "
            "(net.ipv6.ip_nonlocal_bind=1 for an IPv6 VIP)."
        ),
        "",
        "global_defs {",
        f"    router_id casarray_{state.lower()}  # names this host in keepalived's log",
        "    vrrp_version 3  # RFC 5798: IPv4 and IPv6 alike",
        "    enable_script_security  # refuse check scripts that a non-root user could replace",
        "    script_user root",
        "}",
        "",
        *_comment(
            "Can the local casarray serve? It answers on its admin API, its listener accepts, every pool "
            "has a server (casarray ctl health). Failing: FAULT, the VIP goes to the other host at once."
        ),
        f"vrrp_script {SCRIPT} {{",
        f'    script "{check}"',
        f"    interval {CHECK_INTERVAL}  # seconds between two checks",
        f"    timeout {CHECK_TIMEOUT}  # a check that hangs longer counts as failed",
        f"    fall {CHECK_FALL}  # failures in a row that put this host in FAULT",
        f"    rise {CHECK_RISE}  # successes in a row that end the FAULT",
        "}",
        "",
        f"vrrp_instance {INSTANCE} {{",
        f"    state {written_state}  # initial state; the priorities decide who holds the VIP"
        + ("" if written_state == state else f" ({preempt[0].split()[0]} needs BACKUP on both hosts)"),
        f"    interface {interface}",
        f"    virtual_router_id {router_id}  # the same on both hosts, unique on the segment"
        + ("" if options.router_id is not None else " (derived from the namespace)"),
        f"    priority {priority}",
        "    advert_int 1",
        *(f"    {line}" for line in preempt),
    ]
    if vip.version == 6:
        lines.append("    native_ipv6  # VRRP adverts over IPv6 (from the interface's link-local address)")
    lines += [
        "    # No authentication block: VRRPv3 (RFC 5798 §9) removed it; VRRPv2's was a clear-text password",
        "    # anyone on the segment can read. Keep VRRP on a trusted segment instead.",
    ]
    if peers:
        lines.append("    unicast_peer {  # unicast adverts to the other host (no multicast needed)")
        lines += [f"        {peer}" for peer in peers]
        lines.append("    }")
    mail = " and the mail listeners" if config.mail is not None else ""
    lines += [
        "    virtual_ipaddress {",
        f"        {vip}/{vip.max_prefixlen} dev {interface}  # listen.address: the HTTPS listener{mail}",
        "    }",
        "    track_script {",
        f"        {SCRIPT}  # no weight: a failing check means FAULT",
        "    }",
        "    # One line per transition (MASTER, BACKUP, FAULT, STOP); keepalived appends INSTANCE, the",
        "    # instance's name, the new state and the priority as $1..$4.",
        f'    notify "{notify}"',
        "}",
    ]
    return "\n".join(lines) + "\n"


def _comment(text: str) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, 102, break_long_words=False, break_on_hyphens=False)]


def _vip(config: Config) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    vip = ipaddress.ip_address(config.listen.address)
    if vip.is_unspecified or vip.is_loopback or vip.is_multicast:
        raise ExportError(
            f"{config.listen.address} is not an address keepalived can hold",
            where="listen.address",
            hint="set it to the VIP, e.g. 10.0.1.250",
        )
    return vip


def _interface(name: str) -> str:
    if not _IFACE.match(name) or name in {".", ".."}:
        raise ExportError(f"{name!r} is not a network interface name", where="--interface", hint="e.g. eth0")
    if name == "lo":
        raise ExportError("keepalived cannot run VRRP on the loopback interface", where="--interface")
    return name


def _peers(
    peers: Sequence[str], vip: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in peers:
        try:
            peer = ipaddress.ip_address(text.strip())
        except ValueError:
            raise ExportError(
                f"{text!r} is not an IP address", where="--peer", hint="e.g. 10.0.1.2"
            ) from None
        if peer.version != vip.version:
            raise ExportError(
                f"{peer} is IPv{peer.version} but the VIP {vip} is IPv{vip.version}",
                where="--peer",
                hint="VRRP adverts use the VIP's address family",
            )
        if peer == vip:
            raise ExportError(
                f"{peer} is the VIP itself", where="--peer", hint="give the other host's address"
            )
        if peer not in found:
            found.append(peer)
    return found


def _check(config: Config, casarray: str) -> str:
    """The check command: the fast path of `casarray ctl health` against this host's admin API."""
    if not _PATH.match(casarray):
        raise ExportError(
            f"{casarray!r} is not an absolute path keepalived can run",
            where="--casarray",
            hint="e.g. /usr/local/bin/casarray (no spaces or quotes)",
        )
    if config.admin is None:
        raise ExportError(
            "keepalived's check asks casarray's admin API, and the config has none",
            where="admin",
            hint="add admin: {listen: 127.0.0.1:9090} (reads on loopback need no token)",
        )
    try:
        host, _ = split_listen(config.admin.listen)
        url = admin_url(config.admin.listen)
    except ValueError as exc:
        raise ExportError(str(exc), where="admin.listen") from None
    command = f"{casarray} ctl health --admin {url} --timeout {CHECK_STEP_TIMEOUT} --exit-code"
    if is_loopback_host(host):
        return command  # reads on loopback need no token: no secret in keepalived.conf
    token_file = config.admin.token_file
    if token_file is None:
        raise ExportError(
            f"admin.listen {config.admin.listen} is not loopback, and without admin.token_file its "
            "reads are refused",
            where="admin",
            hint="listen on 127.0.0.1, or set admin.token_file",
        )
    if not _PATH.match(token_file):
        raise ExportError(
            f"{token_file!r} cannot be written into a check command",
            where="admin.token_file",
            hint="an absolute path without spaces or quotes",
        )
    return f"{command} --token-file {token_file}"


def _preempt(options: KeepalivedOptions) -> list[str]:
    """The instance's preemption lines: none (a host of higher priority takes the VIP back at once),
    `nopreempt`, or `preempt_delay N`."""
    if options.nopreempt and options.preempt_delay is not None:
        raise ExportError("--nopreempt and --preempt-delay exclude each other", where="--preempt-delay")
    if options.nopreempt:
        return ["nopreempt  # a host that recovers does not take the VIP back: one move per failure"]
    delay = options.preempt_delay
    if delay is None:
        return []
    if not 0 < delay <= MAX_PREEMPT_DELAY:
        raise ExportError(
            f"preempt delay {delay:g}s is out of range", where="--preempt-delay", hint="1ms to 1000s"
        )
    return [f"preempt_delay {delay:g}  # seconds a host of higher priority waits before taking the VIP back"]


def _notify(vip: ipaddress.IPv4Address | ipaddress.IPv6Address, log_file: str | None) -> str:
    """The notify command: one line per transition, to syslog or appended to `log_file`. keepalived
    splits the line into arguments itself (quotes kept together) and runs it without a shell: the shell
    here formats the line from the arguments keepalived appends."""
    line = f"$2 entered $3 state (priority $4; VIP {vip})"
    if log_file is None:
        return f"{SH} -c 'exec {LOGGER} -t {NOTIFY_TAG} -- \\\"{line}\\\"' {NOTIFY_TAG}"
    if not _PATH.match(log_file):
        raise ExportError(
            f"{log_file!r} cannot be written into a notify command",
            where="--notify-log",
            hint="an absolute path without spaces or quotes, e.g. /var/log/casarray-vrrp.log",
        )
    stamp = "$(date +%Y-%m-%dT%H:%M:%S%z)"
    return f"{SH} -c 'echo \\\"{stamp} {NOTIFY_TAG}: {line}\\\" >> {log_file}' {NOTIFY_TAG}"


__all__ = [
    "DEFAULT_CASARRAY",
    "DEFAULT_PRIORITY",
    "KeepalivedOptions",
    "derived_router_id",
    "export_keepalived",
]
