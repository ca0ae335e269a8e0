"""The Layer-7 router: which service a request names, whether its Host is served here, and which member
takes it (the per-service algorithms, cookie affinity, trusted proxies). No I/O: a request's target and
headers in, a service name or a member out; memoised because hosts and first path segments repeat."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

from casarray.balance.affinity import AffinityCookie, cookie_secret
from casarray.balance.algorithm import Picker
from casarray.balance.state import ServerState
from casarray.config.model import Config
from casarray.exchange import catalog
from casarray.netaddr import split_host_port

# Router.route's answer for "/" and "/owa": redirect to "/owa/" (never a service name).
REDIRECT: Final = "/owa/"
_MISSING: Final = "\0"
_MEMO_SIZE = 256  # entries per routing memo; cleared when full (hosts and first segments repeat)


class Router:
    """Maps a request to a service and a member; holds the per-service algorithms. No I/O."""

    def __init__(
        self, config: Config, servers: Sequence[ServerState], cookie_secrets: Sequence[bytes] = ()
    ) -> None:
        """`cookie_secrets`: those of affinity.secret_file (config/secretfile.py); none: the key
        derived from the namespace."""
        self.config = config
        self.servers = list(servers)
        self.names = {name.encode() for name in config.names}
        self.services = frozenset(config.services)
        self.pickers: dict[str, Picker] = {
            name: Picker.of(config.balance, config.affinity.mode) for name in config.services
        }
        # The affinity cookie, when affinity.mode is cookie (None: requests are not searched for one).
        self.cookie: AffinityCookie | None = None
        if config.affinity.mode == "cookie":
            secrets = tuple(cookie_secrets) or (cookie_secret(config.namespace),)
            self.cookie = AffinityCookie(config.cookie_name, secrets, [s.name for s in self.servers])
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in config.trusted_proxies]
        https_port = config.listen.https_port
        # Ports a Host may name: the listener's, and 443 for a NAT in front (any, for a kernel-chosen port).
        self.ports = frozenset({443, https_port}) if https_port else None
        self._hosts: dict[bytes, bytes | None] = {}
        self._routes: dict[bytes, str | None] = {}

    def authority(self, host: bytes) -> bytes | None:
        """The authority a (lower-cased) Host names, rebuilt from the configured name and a checked
        port ("outlook.alwayshotcafe.com:8443"), or None when it is not served here; memoised.

        The name must be one of ours (a trailing dot aside) and the port, when given, must be a port:
        the listener's or 443 (a NAT in front may map 443 to it). Anything else — "name:x@evil.example",
        "name:99999" — is refused, and redirects are built from this value, never from client text."""
        try:
            return self._hosts[host]
        except KeyError:
            found = self._authority(host)
            if len(self._hosts) >= _MEMO_SIZE:
                self._hosts.clear()
            self._hosts[host] = found
            return found

    def _authority(self, host: bytes) -> bytes | None:
        try:
            text, port = split_host_port(host.decode("ascii"))
        except (UnicodeDecodeError, ValueError):  # not host[:port] (RFC 3986 §3.2.2): "name:x@evil"
            return None
        name = text.rstrip(".").encode()
        if name not in self.names:
            return None
        if port is None:
            return name
        if port == 0 or (self.ports is not None and port not in self.ports):
            return None
        return name if port == 443 else name + b":%d" % port

    def route(self, target: bytes) -> str | None:
        """The service for an origin-form target, REDIRECT for "/" and "/owa", None when it names no
        configured service. Memoised by the target's first segment with its slash ("/owa/")."""
        end = target.find(b"/", 1)
        if end <= 1:  # "/", "/owa", "/x?y", "//x": rare, not memoised
            return self._route(target)
        key = target[: end + 1]
        found = self._routes.get(key, _MISSING)
        if found is _MISSING:
            found = self._route(key)
            if len(self._routes) >= _MEMO_SIZE:
                self._routes.clear()
            self._routes[key] = found
        return found

    def _route(self, target: bytes) -> str | None:
        path_only = target.split(b"?", 1)[0]
        if path_only == b"/" or path_only.lower() == b"/owa":
            return REDIRECT
        return self.service_for(target)

    def service_for(self, path: bytes) -> str | None:
        """The configured service whose vdir the path names (the catalog matches like IIS)."""
        service = catalog.for_path(path.decode("latin-1"))
        return service.name if service is not None and service.name in self.services else None

    def candidates(self, service: str) -> list[ServerState]:
        return [s for s in self.servers if s.members[service].available]

    def pick(
        self, service: str, address: str, pinned: str | None = None, exclude: Sequence[ServerState] = ()
    ) -> ServerState | None:
        """A member for the client at `address`: `pinned` (the server a valid affinity cookie names)
        while that one is a candidate — up, ready and not tried yet — else the service's algorithm
        (balance/affinity.py says which)."""
        candidates = [s for s in self.candidates(service) if s not in exclude]
        if not candidates:
            return None
        if pinned is not None:
            for server in candidates:
                if server.name == pinned:
                    return server
        return self.pickers[service].pick(candidates, address)

    def trusted_peer(self, address: str) -> bool:
        if not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # no peer address (the socket went away): not a proxy of ours
            return False
        return any(ip in net for net in self.trusted)
