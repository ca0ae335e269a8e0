"""The Layer-7 router: which service a request names, whether its Host is served here, and which member
takes it (the per-service algorithms, cookie affinity, trusted proxies). No I/O: a request's target and
headers in, a service name or a member out; memoised because hosts and first path segments repeat."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from typing import Final

from casarray.balance.algorithm import Algorithm, make_algorithm
from casarray.balance.state import ServerState
from casarray.config.model import Config
from casarray.exchange import catalog
from casarray.http.h1 import Headers

# Router.route's answer for "/" and "/owa": redirect to "/owa/" (never a service name).
REDIRECT: Final = "/owa/"
_MISSING: Final = "\0"
_MEMO_SIZE = 256  # entries per routing memo; cleared when full (hosts and first segments repeat)

# RFC 9110 §7.2 / RFC 3986 §3.2.2: a reg-name or an IP-literal, then an optional port of digits.
_HOST = re.compile(rb"([a-z0-9._~!$&'()*+,;=-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?")


class Router:
    """Maps a request to a service and a member; holds the per-service algorithms. No I/O."""

    def __init__(self, config: Config, servers: Sequence[ServerState]) -> None:
        self.config = config
        self.servers = list(servers)
        self.names = {name.encode() for name in config.names}
        self.services = frozenset(config.services)
        self.algorithms: dict[str, Algorithm] = {
            name: make_algorithm(config.balance, "none" if config.affinity == "cookie" else config.affinity)
            for name in config.services
        }
        secret = hashlib.sha256(b"casarray affinity " + config.namespace.encode()).digest()
        self.cookie_name = config.affinity_cookie.encode()
        self.cookie_of = {
            s.name: hmac.new(secret, s.name.encode(), "sha256").hexdigest()[:16].encode()
            for s in self.servers
        }
        self.server_of_cookie = {v: k for k, v in self.cookie_of.items()}
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
        match = _HOST.fullmatch(host)
        if match is None:
            return None
        name, port_text = match.groups()
        name = name.rstrip(b".")
        if name not in self.names:
            return None
        if port_text is None:
            return name
        port = int(port_text)
        if not 0 < port < 65536 or (self.ports is not None and port not in self.ports):
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
        self, service: str, key: bytes, cookie: bytes | None, exclude: Sequence[ServerState] = ()
    ) -> ServerState | None:
        candidates = [s for s in self.candidates(service) if s not in exclude]
        if not candidates:
            return None
        if cookie is not None:
            name = self.server_of_cookie.get(cookie)
            for server in candidates:
                if server.name == name:
                    return server
        return self.algorithms[service].pick(candidates, key)

    def affinity_cookie(self, headers: Headers) -> bytes | None:
        prefix = self.cookie_name + b"="
        for name, value in headers:
            if name.lower() == b"cookie":
                for part in value.split(b";"):
                    part = part.strip()
                    if part.startswith(prefix):
                        return part[len(prefix) :]
        return None

    def trusted_peer(self, address: str) -> bool:
        if not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # no peer address (the socket went away): not a proxy of ours
            return False
        return any(ip in net for net in self.trusted)
