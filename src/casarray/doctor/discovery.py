"""Where a client looks for Autodiscover, and which redirects it follows. Pure: no I/O.

Outlook's order (Microsoft, "Outlook 2016 implementation of Autodiscover", KB 3211279; "Generate a list
of Autodiscover endpoints", learn.microsoft.com/exchange/client-developer/exchange-web-services/
how-to-generate-a-list-of-autodiscover-endpoints; [MS-OXDISCO] 3.1.5):

1. SCP lookup — a domain-joined client asks Active Directory for the Autodiscover service connection
   points (`Set-ClientAccessService -AutoDiscoverServiceInternalUri`), site-scoped ones first, and tries
   each URL in turn; when one answers, the DNS steps are never tried;
2. `https://<domain>/Autodiscover/Autodiscover.xml` (the root domain of the address);
3. `https://autodiscover.<domain>/Autodiscover/Autodiscover.xml`;
4. the HTTP redirect method: `GET http://autodiscover.<domain>/Autodiscover/Autodiscover.xml`; a 302 to an
   https URL is followed after asking the user ([MS-OXDISCO] 3.1.5.4);
5. the DNS SRV record `_autodiscover._tcp.<domain>`: `https://<target>/Autodiscover/Autodiscover.xml`
   ([MS-OXDISCO] 3.1.5.3; Outlook asks the user before using it too).

A phone (ActiveSync) has no Active Directory: it starts at step 2. A client stops at the first URL that
answers with settings, and moves to the next when one does not answer ([MS-OXDSCLI] 3.1.4.1.1,
"Nonfunctional URIs").

Redirects — an HTTP 302, an answer with `redirectUrl`, or `redirectAddr` (a new address, so a new
discovery for its domain) — are followed at most 10 times ("the client application should stop
redirecting after 10 redirects", Microsoft, RedirectUrl (POX)), only to https, and only to names the
user allows: Outlook asks before it follows a redirect to another site, and a check that followed any
name would send the user's credentials wherever an answer pointed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from casarray.doctor.autodiscover import POX_PATH
from casarray.exchange.namespace.plan import split_url, url_port

Method = Literal[
    "SCP", "root domain", "autodiscover domain", "HTTP redirect", "SRV record", "redirect", "asked again"
]

MAX_REDIRECTS: Final = 10
SRV_PREFIX: Final = "_autodiscover._tcp."


@dataclass(frozen=True, slots=True)
class Candidate:
    """One Autodiscover URL to try, and how the client came by it."""

    method: Method
    url: str


def https_url(host: str, port: int, path: str = POX_PATH) -> str:
    """https://host[:port]/path, the port left out when it is https's default."""
    return f"https://{host}{'' if port == 443 else f':{port}'}{path}"


def dns_candidates(domain: str, port: int) -> list[Candidate]:
    """Steps 2 and 3: the URLs every client derives from the address's domain."""
    return [
        Candidate("root domain", https_url(domain, port)),
        Candidate("autodiscover domain", https_url(f"autodiscover.{domain}", port)),
    ]


def scp_candidates(urls: Iterable[str]) -> list[Candidate]:
    """Step 1: the SCP URLs in the order given (duplicates once)."""
    return [Candidate("SCP", url) for url in dict.fromkeys(urls)]


def http_redirect_url(domain: str, port: int = 80) -> str:
    """Step 4: the plain-http URL whose 302 a client follows."""
    return f"http://autodiscover.{domain}{'' if port == 80 else f':{port}'}{POX_PATH}"


def srv_name(domain: str) -> str:
    """Step 5: the SRV record a client asks for."""
    return SRV_PREFIX + domain


def srv_candidate(target: str, port: int) -> Candidate:
    return Candidate("SRV record", https_url(target.rstrip("."), port))


def domain_of(address: str) -> str:
    """The domain of an e-mail address; ValueError when it is not user@domain."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain or "." not in domain or " " in address.strip():
        raise ValueError(f"{address!r} is not an e-mail address (user@domain)")
    return domain.lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class RedirectPolicy:
    """Which redirects the check follows: at most `limit`, only https, only to `allowed` names."""

    allowed: frozenset[str]
    limit: int = MAX_REDIRECTS

    @classmethod
    def build(cls, names: Iterable[str], limit: int = MAX_REDIRECTS) -> RedirectPolicy:
        return cls(frozenset(_host(name) for name in names), limit)

    def refusal(self, url: str, followed: int) -> str | None:
        """Why the redirect to `url` (the followed+1-th) is not followed, or None when it is."""
        if followed >= self.limit:
            return f"not followed: {self.limit} redirects already (a client stops after {self.limit})"
        parts = split_url(url)
        if parts is None:
            return f"not followed: {url!r} is not an absolute URL"
        if parts.scheme.lower() != "https":
            return f"not followed: {parts.scheme} is not https (credentials would travel in clear)"
        host = _host(parts.hostname or "")
        if host not in self.allowed:
            names = ", ".join(sorted(self.allowed))
            return f"not followed: {host} is not a name you allow ({names}; add it with --allow-redirect)"
        return None

    def address_refusal(self, address: str, followed: int) -> str | None:
        """Why a redirect to another address is not followed, or None."""
        if followed >= self.limit:
            return f"not followed: {self.limit} redirects already (a client stops after {self.limit})"
        try:
            domain = domain_of(address)
        except ValueError as exc:
            return f"not followed: {exc}"
        reachable = {domain, f"autodiscover.{domain}"} & self.allowed
        if not reachable:
            names = ", ".join(sorted(self.allowed))
            return (
                f"not followed: Autodiscover for {domain} is on none of the names you allow ({names}; "
                "add it with --allow-redirect)"
            )
        return None


def url_host_port(url: str) -> tuple[str, int] | None:
    """(lower-case host, port with the scheme's default) of an absolute URL, else None."""
    parts = split_url(url)
    if parts is None or parts.hostname is None:
        return None
    port = url_port(parts)
    return (parts.hostname, port) if port is not None else None


def _host(name: str) -> str:
    return name.strip().lower().rstrip(".")


class Search:
    """One client's search for Autodiscover, without I/O: the shell asks `next()` for the URL to try,
    tries it, and tells the search a redirect (`redirect_to`, `redirect_to_address`); when `next()` has
    nothing left, the shell may `add()` the fallbacks (steps 4 and 5) once.

    A redirect to a URL is tried next; a redirect to an address starts over with that address's domain
    (its fallbacks may be added again). Each followed redirect counts against the policy's limit."""

    def __init__(
        self, address: str, port: int, policy: RedirectPolicy, first: Iterable[Candidate] = ()
    ) -> None:
        self.address = address
        self.domain = domain_of(address)
        self.port = port
        self.policy = policy
        self.followed = 0
        self.fallbacks_added = False
        self._queue = [*first, *dns_candidates(self.domain, port)]

    def next(self) -> Candidate | None:
        return self._queue.pop(0) if self._queue else None

    def add(self, candidates: Iterable[Candidate]) -> None:
        self.fallbacks_added = True
        self._queue += candidates

    def redirect_to(self, url: str) -> str | None:
        """Follow a redirect to another Autodiscover URL (HTTP 302, redirectUrl); the refusal or None."""
        refusal = self.policy.refusal(url, self.followed)
        if refusal is None:
            self.followed += 1
            self._queue.insert(0, Candidate("redirect", url))
        return refusal

    def redirect_to_address(self, address: str) -> str | None:
        """Follow redirectAddr (a phone's Redirect): a new search for that address; the refusal or None."""
        refusal = self.policy.address_refusal(address, self.followed)
        if refusal is None:
            self.followed += 1
            self.address, self.domain = address, domain_of(address)
            self._queue = dns_candidates(self.domain, self.port)
            self.fallbacks_added = False
        return refusal
