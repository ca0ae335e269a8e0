"""The Layer-7 session core: one client connection's protocol rules, with no sockets, no clock, no tasks.

Events come in as method calls, each with `now` (the loop time the shell read): bytes and EOF from the
client, an upstream connection opened or failed, bytes, EOF or loss from the upstream, a member marked
down, a sweep tick. Answers go out through narrow interfaces instead of action lists (the hot path
allocates nothing for them): `ClientSide` (an asyncio.Transport satisfies it as it is), `UpstreamSide`
(one upstream connection: a compiled class the shell holds, around its transport), and `Shell` (open
an upstream to a member, cancel that, the session ended).
The sweep reads `phase` and `deadline`: the next thing the session waits for and until when.
engine/l7.py holds the asyncio shells; tests/unit/test_l7_session.py drives this core with bytes.

The rules it enforces (DESIGN.md §6, with the sources in shared research):
- NTLM/Negotiate authenticate a *connection* and IIS keeps it authenticated, so a session owns at most
  one upstream connection (`upstream`) and the shell gives an upstream connection one owner for its
  whole life (`L7Upstream.owner`, `Final`). There is no pool shared between sessions: sharing would
  hand one user's authenticated connection to another (HAProxy issues 581 and 2985). A request on a
  pinned connection stays on it while its server serves the request's service.
- An upstream connection that has carried NTLM or Negotiate (an `Authorization` in a request, or a
  401 challenge in a response) is *private* (HAProxy's word) and stays with its client connection for
  life. One that never did is closed once its client connection has been idle between requests for
  `timeouts.upstream_release`: never handed to anyone, and the client's next request opens a new one.
- Bodies stream both ways as they arrive, never buffered whole; backpressure pauses the other side.
- What cannot be answered safely is answered by the balancer (proxy/answers.py) with one log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final, Protocol

from mypy_extensions import mypyc_attr

from casarray.balance.state import ServerState
from casarray.config.model import Config
from casarray.exchange import catalog
from casarray.http.errors import ProtocolError
from casarray.http.h1 import (
    END,
    NO_BODY,
    UNTIL_CLOSE,
    Body,
    End,
    Event,
    Limits,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
)
from casarray.http.target import normalize_target
from casarray.proxy.answers import error_response, found
from casarray.proxy.forwarding import IDEMPOTENT_RETRY, forward_request, forward_response, forwarded_fields
from casarray.proxy.router import REDIRECT, Router

if TYPE_CHECKING:
    from casarray.engine.accesslog import AccessLog

log = logging.getLogger("casarray.l7")

PIPELINE_LIMIT = 64 * 1024  # bytes of pipelined requests held while one is answered

_NO_SERVERS: tuple[ServerState, ...] = ()

# Phases of a client connection (what the sweep's deadline means).
IDLE, HEAD, EXCHANGE, CLOSING = 0, 1, 2, 3

# Authentication schemes that authenticate the connection, not the request. NTLM over HTTP (MS-NTHT
# §2.2, MS-NLMP's connection-oriented mode) and Negotiate (RFC 4559 §4, legs answered on the same
# connection) leave the user's identity on the TCP connection: Windows' HTTP Server API caches NTLM
# credentials on a keep-alive connection (its "Credential Caching" page) and IIS keeps Kerberos there
# too (authPersistNonNTLM, on by default). Such a connection must stay with its client and may not be
# closed under it: the client would have to authenticate again. HAProxy calls such a server
# connection "private" and never shares it (configuration manual §4.2, http-reuse). Basic, Bearer and
# forms (cookies) authenticate each request on its own.
CONNECTION_AUTH: Final = frozenset({b"ntlm", b"negotiate"})
# A 401 that offers NTLM or Negotiate (RFC 9110 §11.6.1: challenges may share one field, comma-
# separated, or come in several): the client's answer will arrive on this connection.
_CONNECTION_CHALLENGE: Final = re.compile(
    rb"\nwww-authenticate:[ \t]*(?:[^\r]*,[ \t]*)?(?:ntlm|negotiate)(?![!#$%&'*+.^_`|~0-9a-z-])",
    re.IGNORECASE,
)


class Connection(Protocol):
    """A connection as the session writes to it (an asyncio.Transport is one)."""

    def write(self, data: bytes) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


class ClientSide(Connection, Protocol):
    """The client connection as the session writes to it (an asyncio.Transport is one)."""

    def writelines(self, list_of_data: Iterable[bytes]) -> None: ...


# Compiled by mypyc (casarray/compiled.py): the unit tests' upstream is a Python subclass.
@mypyc_attr(allow_interpreted_subclasses=True)
class UpstreamSide:
    """One connection to one server, owned by this session alone (the NTLM rule): its state as the
    session reads it, and its transport (`connection`, set when it is made). A plain class, not a
    Protocol: compiled, the session reads these attributes and calls these methods directly. The shell
    (engine/l7.py `L7Upstream`) holds one per connection and counts what it receives in `bytes_out`."""

    def __init__(self, server: ServerState) -> None:
        self.server: Final = server
        self.reader: Final = ResponseReader()
        self.connection: Connection = None  # type: ignore[assignment]  # set when it is made
        self.closed = False
        # Carried NTLM/Negotiate: stays with its client connection for life (CONNECTION_AUTH).
        self.private = False
        self.bytes_in = 0  # client -> server bytes sent on it
        self.bytes_out = 0  # server -> client bytes received on it so far

    def write(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.connection.write(data)

    def close(self) -> None:
        if not self.closed:
            self.connection.close()

    def pause_reading(self) -> None:
        self.connection.pause_reading()

    def resume_reading(self) -> None:
        self.connection.resume_reading()


class Shell(Protocol):
    """What the session asks of the I/O around it beyond writing bytes."""

    def open_upstream(self, server: ServerState, head: bytes) -> None:
        """Connect to `server`; later `upstream_connected(upstream, head, now)` or
        `upstream_failed(server, head, reason, now)`."""

    def cancel_open(self) -> None:
        """Abandon the connection being opened, if any (the session closed)."""

    def finished(self) -> None:
        """The session is closed: its slot is free."""


# Compiled by mypyc (casarray/compiled.py): the unit tests' site is a Python subclass.
@mypyc_attr(allow_interpreted_subclasses=True)
class SiteSettings:
    """The listener's shared state as a session reads it, and what it reads of the configuration
    derived once per listener: plain attributes of a compiled class, not the pydantic models (read per
    request). engine/l7.py's L7Frontend and the unit tests' site both start from it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.router: Router
        self.retries = config.retries
        self.host_check = config.host_check
        self.limits = Limits()
        t = config.timeouts
        self.request_header_timeout = t.request_header
        self.keepalive_timeout = t.keepalive
        self.server_timeout = t.server
        self.body_idle = t.body_idle
        self.upstream_release = t.upstream_release
        self.min_upload_rate = config.limits.min_upload_rate
        self.access: AccessLog | None = None
        self.draining = False  # the generation was replaced or is stopping: close after each response
        self.refused = 0  # requests the balancer answered itself
        self.upstream_releases = 0  # idle upstream connections closed after timeouts.upstream_release
        # service -> counts per status class (index 1..5 for 1xx..5xx); "balancer" for our own answers
        self.statuses: dict[str, list[int]] = {}

    def count(self, service: str, status: int) -> None:
        counts = self.statuses.get(service)
        if counts is None:
            counts = self.statuses[service] = [0] * 6
        counts[status // 100 if status < 600 else 5] += 1


class L7Session:
    """One client connection: reads requests, routes each, relays the response."""

    __slots__ = (
        "_last_in",
        "_last_out",
        "_out_mark",
        "_rate_from",
        "_rate_head",
        "_rate_since",
        "_seen_in",
        "_seen_out",
        "bytes_in",
        "bytes_out",
        "client",
        "close_after",
        "closed",
        "deadline",
        "events",
        "forwarded",
        "head",
        "idle_since",
        "in_start",
        "interim",
        "now",
        "out_start",
        "paused",
        "peer",
        "phase",
        "reader",
        "request_done",
        "response_started",
        "retries_left",
        "retry_head",
        "service",
        "set_cookie",
        "shell",
        "site",
        "status",
        "t_first",
        "t_start",
        "tried",
        "upstream",
        "upstream_keep",
    )

    def __init__(self, site: SiteSettings, shell: Shell) -> None:
        self.site = site
        self.shell = shell
        self.client: ClientSide = None  # type: ignore[assignment]  # set by connected()
        self.now = 0.0  # the time of the event being handled
        self.reader = RequestReader(site.limits)
        self.upstream: UpstreamSide | None = None
        self.events: list[Event] = []  # parsed but not yet handled (while connecting or paused)
        self.head: RequestHead | None = None  # request in flight
        self.service = ""
        self.retry_head: bytes | None = None  # the serialized head, kept to retry a bodiless GET/HEAD
        self.tried: Sequence[ServerState] = _NO_SERVERS
        self.set_cookie: bytes | None = None
        self.request_done = False
        self.response_started = False
        self.interim = False
        self.upstream_keep = True
        self.retries_left = 0
        self.status = 0
        self.t_start = self.t_first = 0.0
        self.in_start = self.out_start = 0
        self.close_after = False
        self.closed = False
        self.paused = False
        self.phase = IDLE
        self.deadline = 0.0
        self.idle_since = 0.0  # when the last exchange ended (phase IDLE): for timeouts.upstream_release
        self.peer = "?"
        # The fields appended to every forwarded request; None when the peer is a trusted proxy (its
        # X-Forwarded-For is extended instead, per request).
        self.forwarded: bytes | None = None
        self.bytes_in = self.bytes_out = 0
        self._seen_in = self._seen_out = 0
        self._last_in = self._last_out = 0.0
        # The upload-rate bound: the request whose body is measured, since when and from which count.
        self._rate_head: RequestHead | None = None
        self._rate_since = 0.0
        self._rate_from = 0
        self._out_mark = 0  # the upstream's byte count when the request in flight was sent

    # --- client events -----------------------------------------------------------------------------
    def connected(self, client: ClientSide, peer: str) -> None:
        self.client = client
        self.peer = peer
        if not self.site.router.trusted_peer(peer):
            self.forwarded = forwarded_fields(peer)

    def client_data(self, data: bytes, now: float) -> None:
        self.now = now
        self.bytes_in += len(data)
        if self.phase == IDLE:
            self.phase = HEAD
            self.deadline = now + self.site.request_header_timeout
        try:
            events = self.reader.feed(data)
        except ProtocolError as exc:
            if self.head is not None:  # in the middle of a body: nothing more goes to the server
                self.fail(exc.status, f"malformed request body: {exc.what}")
            else:
                self.refuse(exc.status, exc.what, log_level=logging.WARNING)
            return
        if self.events:
            self.events += events
        else:
            self.events = events
        if self.request_done and self.reader.buffered > PIPELINE_LIMIT:
            self.pause()  # a client pipelining a lot while its request is answered: stop reading
        self.process()

    def client_eof(self, now: float) -> bool:
        """The client half-closed; True keeps the connection open to answer what it sent."""
        self.now = now
        if self.head is None and not self.reader.buffered:
            self.close()
            return False
        if self.head is not None and (self.request_done or self.response_started or END in self.events):
            # The whole request arrived, then the client half-closed (RFC 9112 §9.6): answer it. Or
            # the server answered before the body was whole (401, 413) and the client stopped
            # sending: the answer still goes out, then the connection closes.
            self.close_after = True
            return True
        # The client has finished sending but its request is incomplete: it can never complete, so
        # holding the connection, its upstream and its maxconn slot until body_idle/client_idle only
        # locks other clients out. Abort it now, like HAProxy's client-abort ("CD"/"CR").
        self.client_gone("closed its side")
        return False

    def client_lost(self, reset: bool, now: float) -> None:
        self.now = now
        if not self.closed and (self.head is not None or self.reader.buffered):
            self.client_gone("reset the connection" if reset else "closed the connection")
        else:
            self.close()

    def client_gone(self, how: str) -> None:
        """The client went away in the middle of a request: one log line, one access-log line, and both
        sides closed. A server that never answered gets nothing more; its connection goes with it."""
        head = self.head
        if head is None:
            log.info("%s: client %s in the middle of a request head", self.peer, how)
        else:
            log.info(
                "%s: client %s during %s %s (%s): request aborted",
                self.peer,
                how,
                head.method.decode("latin-1"),
                head.target[:80].decode("latin-1"),
                "response under way"
                if self.response_started
                else "before the response"
                if self.request_done
                else "in the middle of its body",
            )
            if self.t_start:
                upstream = self.upstream
                # HAProxy's codes: C client side; D data (body either way), H waiting for the response.
                term = "CH" if self.request_done and not self.response_started else "CD"
                self.access_line(upstream.server.name if upstream is not None else "-", term)
        self.close()

    def client_paused_writing(self) -> None:
        """The client reads slower than the server sends: stop reading the server."""
        if self.upstream is not None:
            self.upstream.pause_reading()

    def client_resumed_writing(self) -> None:
        if self.upstream is not None and not self.upstream.closed:
            self.upstream.resume_reading()

    def upstream_paused_writing(self) -> None:
        """The server reads slower than the client sends: stop reading the client."""
        self.client.pause_reading()

    def upstream_resumed_writing(self) -> None:
        if not self.paused and not self.closed:
            self.client.resume_reading()

    # --- request handling --------------------------------------------------------------------------
    def process(self) -> None:
        """Handle queued events until one needs to wait (connecting, or the response to come)."""
        while self.events and not self.closed:
            if self.request_done or (self.head is not None and self.upstream is None):
                # waiting: for the response (no pipelining upstream) or for the connection
                self.pause()
                return
            event = self.events.pop(0)
            if isinstance(event, RequestHead):
                self.request_head(event)
            elif isinstance(event, Body):
                if self.upstream is not None and self.head is not None:
                    self.upstream.write(event.data)
            elif isinstance(event, End):
                self.request_end()

    def pause(self) -> None:
        if not self.paused:
            self.paused = True
            self.client.pause_reading()

    def unpause(self) -> None:
        if self.paused:
            self.paused = False
            if not self.closed:
                self.client.resume_reading()

    def request_head(self, head: RequestHead) -> None:
        site = self.site
        router = site.router
        self.phase = EXCHANGE
        self.response_started = False
        self.request_done = False
        self.set_cookie = None
        self.tried = _NO_SERVERS
        self.retries_left = site.retries
        method, target = head.method, head.target
        if site.access is not None:
            self.t_start = self.now
            self.t_first = 0.0
            self.in_start, self.out_start = self.bytes_in, self.bytes_out
            self.status = 0
        if method == b"CONNECT":
            self.refuse(405, "CONNECT is not served", log_level=logging.WARNING)
            return
        host = head.host
        if target[:1] != b"/":
            # absolute-form (RFC 9112 §3.2.2): the target's authority replaces Host.
            scheme, sep, rest = target.partition(b"://")
            if not sep or scheme.lower() not in (b"http", b"https"):
                self.refuse(400, f"request target {target[:60]!r} is not a path", log_level=logging.WARNING)
                return
            host, slash, path = rest.partition(b"/")
            host = host.lower()
            target = b"/" + path if slash else b"/"
        authority = None
        if site.host_check:
            authority = router.authority(host)
            if authority is None:
                self.refuse(
                    421,
                    f"host {host[:80].decode('latin-1')!r} is not served here",
                    log_level=logging.WARNING,
                    keep=head,
                )
                return
        try:
            target = normalize_target(target)  # routed and forwarded as the server will read it
        except ProtocolError as exc:
            self.refuse(exc.status, exc.what, log_level=logging.WARNING, keep=head)
            return
        service = router.route(target)
        if service is None:
            path_only = target.split(b"?", 1)[0]
            self.refuse(
                404,
                f"{path_only[:80].decode('latin-1')!r} is not an Exchange virtual directory",
                log_level=logging.INFO,
                keep=head,
            )
            return
        if service is REDIRECT:
            # To the configured name and checked port the client used, else to the namespace.
            self.redirect(head, b"/owa/", authority)
            return
        self.head = head
        self.service = service
        out = forward_request(head, target, host, self.peer, self.forwarded)
        self.retry_head = out if (method in IDEMPOTENT_RETRY and head.length == NO_BODY) else None
        upstream = self.upstream
        if upstream is not None and not upstream.closed and upstream.server.members[service].available:
            self.send_head(upstream, out)  # stay on the pinned connection (NTLM state lives there)
            return
        if upstream is not None:
            # The pinned server cannot serve this service: a new connection; the client re-authenticates.
            log.info(
                "%s: %s not available on %s for %s: new upstream connection",
                self.peer,
                service,
                upstream.server.name,
                target.split(b"?", 1)[0][:60].decode("latin-1"),
            )
            self.drop_upstream()
        self.connect(out)

    def connect(self, head_bytes: bytes) -> None:
        site = self.site
        assert self.head is not None
        jar = site.router.cookie
        cookie = pinned = None
        if jar is not None:
            cookie = jar.find(self.head.headers)
            pinned = jar.server(cookie)
        server = site.router.pick(self.service, self.peer, pinned, self.tried)
        if server is None:
            if self.tried:
                self.fail(502, f"no server of {self.service} accepted a connection")
            else:
                self.refuse(
                    503,
                    f"no server is available for {catalog.get(self.service).title}",
                    log_level=logging.WARNING,
                    keep=self.head,
                    extra=[(b"Retry-After", b"10")],
                )
            return
        if jar is not None:
            if cookie is not None and server.name != pinned:
                # Balanced as if there were no cookie; the response pins the client anew.
                log.debug(
                    "%s: affinity cookie %s for %s: balanced to %s",
                    self.peer,
                    "names no server (stale, forged or a retired secret)"
                    if pinned is None
                    else f"names {pinned}, not available or already tried",
                    self.service,
                    server.name,
                )
            # Set on every pick: after a retry on another server, the cookie names the one that answers.
            self.set_cookie = jar.set_cookie(server.name, cookie)
        self.tried = [*self.tried, server]
        self.pause()
        self.shell.open_upstream(server, head_bytes)

    def upstream_failed(self, server: ServerState, head_bytes: bytes, reason: str, now: float) -> None:
        """The connection to `server` could not be opened (TCP or TLS): the next member, or a 502."""
        self.now = now
        log.warning(
            "connect to %s (%s:%d) for %s failed: %s",
            server.name,
            server.address,
            server.port,
            self.peer,
            reason,
        )
        if not self.closed:
            if len(self.tried) <= self.site.retries:
                self.connect(head_bytes)
            else:
                self.fail(502, f"no server of {self.service} accepted a connection")

    def upstream_connected(self, upstream: UpstreamSide, head_bytes: bytes, now: float) -> None:
        self.now = now
        if self.closed:
            upstream.close()
            return
        self.upstream = upstream
        self.send_head(upstream, head_bytes)
        self.unpause()
        self.process()

    def send_head(self, upstream: UpstreamSide, head_bytes: bytes) -> None:
        head = self.head
        assert head is not None
        scheme = head.auth_scheme
        if scheme and not upstream.private and scheme in CONNECTION_AUTH:
            self.mark_private(upstream, f"the client sent Authorization: {scheme.decode('latin-1')}")
        upstream.reader.expect(head.method)
        upstream.server.members[self.service].requests += 1
        self._out_mark = upstream.bytes_out
        upstream.write(head_bytes)

    def request_end(self) -> None:
        # No pause here: reading stays on (pausing and resuming a TLS transport per request costs more
        # than the request); bytes a client pipelines meanwhile wait in the reader, bounded below.
        self.request_done = True
        self.deadline = self.now + self.site.server_timeout

    # --- response handling -------------------------------------------------------------------------
    def upstream_data(self, upstream: UpstreamSide, data: bytes, now: float) -> None:
        self.now = now
        if upstream is not self.upstream or self.closed:
            upstream.close()
            return
        if self.head is None:
            # Nothing was asked: bytes after a complete response (e.g. a body after a 204), or a server
            # talking out of turn. They would be read as the answer to the client's next request.
            log.warning(
                "%s: %s sent %d bytes with no request outstanding: upstream connection closed",
                self.peer,
                upstream.server.name,
                len(data),
            )
            self.drop_upstream()
            return
        try:
            events = upstream.reader.feed(data)
        except ProtocolError as exc:
            self.bad_response(upstream, exc)
            return
        self.response_events(upstream, events)

    def bad_response(self, upstream: UpstreamSide, exc: ProtocolError) -> None:
        """A malformed or ambiguous response: the client gets a 502 (or, mid-body, a closed
        connection) and the upstream connection is closed, never reused."""
        self.fail(502, f"invalid response from {upstream.server.name}: {exc.what}")

    def response_events(self, upstream: UpstreamSide, events: list[Event]) -> None:
        # Everything one read produced goes out in one write: the head and the first body bytes share a
        # TLS record and a send instead of costing one each. Interim (1xx) responses are iterated, not
        # recursed into: the reader bounds how many one request may get (h1.MAX_INTERIM).
        while True:
            parts: list[bytes] = []
            for event in events:
                if isinstance(event, Body):
                    self.bytes_out += len(event.data)
                    parts.append(event.data)
                elif isinstance(event, ResponseHead):
                    parts.append(self.response_head(event, upstream))
                else:  # End: always the last event, the reader holds what follows
                    self.send(parts)
                    if not self.interim:
                        self.response_end(upstream)
                        return
                    self.interim = False  # the end of a 1xx interim response: the final one follows
                    try:
                        events = upstream.reader.next_message()
                    except ProtocolError as exc:
                        self.bad_response(upstream, exc)
                        return
                    break
            else:
                self.send(parts)
                return

    def send(self, parts: list[bytes]) -> None:
        if len(parts) == 1:
            self.client.write(parts[0])
        elif parts:
            # Small pieces are joined (one TLS record); big bodies are handed over without a copy.
            size = 0
            for part in parts:  # a loop, not sum(map(len, ...)): compiled, it calls nothing
                size += len(part)
            if size <= 16384:
                self.client.write(b"".join(parts))
            else:
                self.client.writelines(parts)

    def response_head(self, head: ResponseHead, upstream: UpstreamSide) -> bytes:
        if head.status == 401 and not upstream.private and _CONNECTION_CHALLENGE.search(head.block):
            self.mark_private(upstream, "the server answered 401 with an NTLM/Negotiate challenge")
        if head.status < 200:
            # 100 Continue and friends: relay and wait for the final response (RFC 9110 §15.2).
            self.interim = True
            return forward_response(head, close=False, set_cookie=None)
        self.response_started = True
        self.status = head.status
        self.site.count(self.service, head.status)
        if self.site.access is not None:
            self.t_first = self.now
        request = self.head
        assert request is not None
        # Close after this response when the client or a close-delimited body asks for it, or when the
        # server answered before the whole request arrived (e.g. 401 or 413 to an upload): the rest of
        # that body could not be told apart from a next request.
        # A draining frontend (reload) closes each connection after its next response: the client is
        # told so (`Connection: close`, HAProxy's idle-close-on-response) and cannot lose a request.
        if (
            not request.keep_alive
            or head.length == UNTIL_CLOSE
            or self.close_after
            or not self.request_done
            or self.site.draining
        ):
            self.close_after = True
        self.upstream_keep = head.keep_alive
        return forward_response(head, close=self.close_after, set_cookie=self.set_cookie)

    def response_end(self, upstream: UpstreamSide) -> None:
        if self.site.access is not None:
            self.access_line(upstream.server.name, "--")
        try:
            stray = upstream.reader.next_message() if self.upstream_keep else []
        except ProtocolError:
            stray = [END]
        if not self.upstream_keep or stray:  # bytes beyond the response: do not trust this connection
            self.drop_upstream()
        self.finish_exchange()

    def finish_exchange(self) -> None:
        self.head = None
        self.request_done = False
        self.retry_head = None
        if self.close_after:
            self.close()
            return
        self.phase = HEAD if self.reader.buffered else IDLE
        self.idle_since = self.now
        site = self.site
        self.deadline = self.now + (
            site.request_header_timeout if self.reader.buffered else site.keepalive_timeout
        )
        try:
            pipelined = self.reader.next_message()
        except ProtocolError as exc:
            self.refuse(exc.status, exc.what, log_level=logging.WARNING)
            return
        if pipelined:
            self.events = pipelined + self.events
        self.unpause()
        self.process()

    def upstream_eof(self, upstream: UpstreamSide, now: float) -> None:
        self.now = now
        if upstream is not self.upstream:
            return
        try:
            events = upstream.reader.eof()
        except ProtocolError:
            events = []
        if events and self.head is not None:
            self.response_events(upstream, events)

    def upstream_lost(self, upstream: UpstreamSide, now: float) -> None:
        self.now = now
        if upstream is not self.upstream:
            return
        self.upstream = None
        if self.closed or self.head is None:
            return  # between requests: the next request opens a new connection
        if self.response_started:
            log.warning(
                "%s: %s closed the connection in the middle of a response", self.peer, upstream.server.name
            )
            self.close()
            return
        if self.retry_head is not None and self.request_done and self.retries_left > 0:
            self.retries_left -= 1
            self.tried = (
                _NO_SERVERS  # the server may just have closed an idle connection: it may serve the retry
            )
            log.info(
                "%s: %s closed before answering %s; retrying on another server",
                self.peer,
                upstream.server.name,
                self.head.method.decode(),
            )
            self.connect(self.retry_head)
            return
        self.fail(502, f"{upstream.server.name} closed the connection before answering")

    def server_down(self, server: ServerState, now: float) -> None:
        """The checks marked down the server this connection's upstream goes to (HAProxy's
        `on-marked-down shutdown-sessions`, for what has no answer yet): a request still waiting is
        retried elsewhere when that is safe — GET/HEAD without a body, not a byte answered — and failed
        at once otherwise; it is never left to timeouts.server. A response under way is left to its
        idle timeout; an idle pinned connection is dropped (the next request goes elsewhere anyway)."""
        self.now = now
        upstream = self.upstream
        if self.closed or upstream is None or upstream.server is not server or self.response_started:
            return
        head = self.head
        if head is None:
            self.drop_upstream()
            return
        retry = self.retry_head  # set only for GET/HEAD without a body
        answered = upstream.bytes_out != self._out_mark  # an interim response, or part of a head
        if retry is not None and self.request_done and not answered and self.retries_left > 0:
            self.retries_left -= 1
            log.warning(
                "%s: retrying %s %s on another server: %s was marked down before answering",
                self.peer,
                head.method.decode("latin-1"),
                head.target[:80].decode("latin-1"),
                server.name,
            )
            self.drop_upstream()  # its connection_lost finds it detached: no second retry
            self.tried = [server]
            self.connect(retry)
            return
        self.fail(503, f"{server.name} was marked down before answering", "DH")

    def mark_private(self, upstream: UpstreamSide, why: str) -> None:
        """The connection carries connection-bound authentication (CONNECTION_AUTH): it stays with this
        client connection for life, never released when idle."""
        upstream.private = True
        log.debug("%s: upstream connection to %s is private: %s", self.peer, upstream.server.name, why)

    def release_upstream(self, now: float) -> None:
        """The client connection has been idle for timeouts.upstream_release and its upstream connection
        never carried NTLM/Negotiate: close it (never handed on); the next request opens a new one, to
        whichever server the balancing and affinity rules pick then."""
        upstream = self.upstream
        assert upstream is not None
        self.site.upstream_releases += 1
        log.debug(
            "%s: upstream connection to %s released after %.1fs idle (timeouts.upstream_release)",
            self.peer,
            upstream.server.name,
            now - self.idle_since,
        )
        self.drop_upstream()

    def drop_upstream(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close()

    def access_line(self, server: str, termination: str) -> None:
        access = self.site.access
        head = self.head
        if access is None or head is None or self.t_start == 0.0:
            return
        now = self.now
        access.l7(
            self.peer,
            head.method.decode("latin-1"),
            head.target[:200].decode("latin-1"),
            self.service,
            server,
            self.status,
            self.bytes_in - self.in_start,
            self.bytes_out - self.out_start,
            (self.t_first or now) - self.t_start,
            now - self.t_start,
            termination,
        )
        self.t_start = 0.0

    # --- answers from the balancer itself ----------------------------------------------------------
    def redirect(self, head: RequestHead, location: bytes, host: bytes | None = None) -> None:
        site = self.site
        if host is None:
            host = site.config.namespace.encode()
        body_close = head.length != NO_BODY or not head.keep_alive or site.draining
        tls = site.config.tls
        hsts = tls.hsts if tls is not None else None
        self.client.write(found(host, location, hsts=hsts, close=body_close))
        self.after_local_answer(head, body_close)

    def refuse(
        self,
        status: int,
        detail: str,
        *,
        log_level: int,
        keep: RequestHead | None = None,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """Answer from the balancer and log one line. The connection stays open only for a bodiless
        request on a keep-alive connection; after a protocol error it always closes."""
        site = self.site
        close = keep is None or keep.length != NO_BODY or not keep.keep_alive or site.draining
        request = (
            f"{keep.method.decode('latin-1')} {keep.target[:80].decode('latin-1')}" if keep else "request"
        )
        log.log(log_level, "refused %s %s: %d %s", self.peer, request, status, detail)
        site.refused += 1
        site.count("balancer", status)
        if site.access is not None and keep is not None:
            self.head, self.status = keep, status
            self.t_start = self.t_start or self.now
            self.access_line("-", "cR" if status == 408 else "PR")
        self.client.write(error_response(status, detail, close=close, extra=extra))
        if keep is not None:
            self.after_local_answer(keep, close)
        else:
            self.close()

    def after_local_answer(self, head: RequestHead, close: bool) -> None:
        if close:
            self.close()
            return
        # Skip the (empty) rest of this request: its End is next in the queue.
        while self.events:
            event = self.events.pop(0)
            if isinstance(event, End):
                break
        self.head = None
        self.phase = IDLE
        self.idle_since = self.now
        self.deadline = self.now + self.site.keepalive_timeout
        try:
            self.events = self.reader.next_message() + self.events
        except ProtocolError as exc:
            self.refuse(exc.status, exc.what, log_level=logging.WARNING)

    def fail(self, status: int, detail: str, term: str | None = None) -> None:
        """The balancer could not get an answer from a server: an error page, then close."""
        log.warning(
            "%s %s %s: %d %s",
            self.peer,
            self.head.method.decode("latin-1") if self.head else "-",
            self.head.target[:80].decode("latin-1") if self.head else "-",
            status,
            detail,
        )
        self.site.refused += 1
        if not self.response_started:
            self.site.count(self.service or "balancer", status)
            self.status = status
            self.client.write(error_response(status, detail, close=True))
        if self.site.access is not None:
            if term is None:
                term = {502: "SH", 503: "SC", 504: "sH", 408: "cD"}.get(status, "PH")
            self.access_line(self.upstream.server.name if self.upstream else "-", term)
        self.close()

    # --- timeouts (the listener's sweep) ------------------------------------------------------------
    def sweep(self, now: float) -> None:
        if self.closed:
            return
        self.now = now
        if self.bytes_in != self._seen_in:
            self._seen_in, self._last_in = self.bytes_in, now
        upstream = self.upstream
        out = self.bytes_out + (upstream.bytes_out if upstream else 0)
        if out != self._seen_out:
            self._seen_out, self._last_out = out, now
        site = self.site
        if self.phase == IDLE:
            if now >= self.deadline:
                self.close()
            elif (
                upstream is not None
                and not upstream.private
                and site.upstream_release
                and now - self.idle_since >= site.upstream_release
            ):
                # Idle between requests: no request is outstanding and no response under way (a
                # streamed MAPI/RPC response is phase EXCHANGE), so nothing can be lost by closing.
                self.release_upstream(now)
        elif self.phase == HEAD:
            if now >= self.deadline:
                self.refuse(
                    408,
                    "the request head did not arrive in time (timeouts.request_header)",
                    log_level=logging.WARNING,
                )
        elif self.phase == EXCHANGE:
            if self.request_done and not self.response_started:
                if now >= self.deadline:
                    self.fail(504, f"no response within {site.server_timeout:g}s (timeouts.server)")
                return
            long_lived = catalog.get(self.service).long_lived if self.service else False
            limit_in = site.config.timeouts.client_idle if long_lived else site.body_idle
            limit_out = site.config.timeouts.server_idle if long_lived else site.body_idle
            if not self.request_done:
                if now - self._last_in >= limit_in:
                    self.fail(408, "the request body stalled")
                    return
                if self.head is not self._rate_head:  # a new body: start measuring
                    self._rate_head, self._rate_since, self._rate_from = self.head, now, self.bytes_in
                elif site.min_upload_rate and not long_lived:
                    # Apache mod_reqtimeout's MinRate: body_idle to start, then one more second per
                    # min_upload_rate bytes received. A trickle that never falls silent for body_idle
                    # would otherwise hold its slot and its upstream for as long as the body is long.
                    # Long-lived services trickle by design (RPC_IN_DATA, MAPI, EAS Ping): exempt.
                    received = self.bytes_in - self._rate_from
                    if now - self._rate_since > site.body_idle + received / site.min_upload_rate:
                        self.fail(
                            408,
                            f"the request body arrives below limits.min_upload_rate "
                            f"({received / (now - self._rate_since):.0f} < {site.min_upload_rate} bytes/s)",
                        )
                        return
            if self.response_started and now - self._last_out >= limit_out:
                log.warning(
                    "%s: closing: response from %s idle for %.0fs",
                    self.peer,
                    upstream.server.name if upstream else "-",
                    now - self._last_out,
                )
                self.close()

    def close(self, now: float | None = None) -> None:
        """Close both sides (an access-log line for a request cut short); `now` when the listener asks
        (maintenance, stop) rather than an event of this session."""
        if self.closed:
            return
        if now is not None:
            self.now = now
        if self.head is not None and self.t_start:
            self.access_line(
                self.upstream.server.name if self.upstream else "-", "CD" if self.response_started else "CH"
            )
        self.closed = True
        self.phase = CLOSING
        self.shell.cancel_open()
        self.client.close()
        self.drop_upstream()
        self.shell.finished()
