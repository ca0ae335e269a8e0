"""The Layer-7 session core driven with bytes: no sockets, no loop, no clock.

A recording client side, fake upstream connections and a recording shell stand in for the asyncio
shells of engine/l7.py; time is a number the test moves. Each test is one rule of the proxy: retries,
the balancer's own 502/504/408, pipelining, 100-continue, pinning (the NTLM rule), releasing idle upstream
connections that never carried NTLM/Negotiate, and cookie affinity."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pytest

from casarray.balance.affinity import cookie_value
from casarray.balance.state import Member, Operator, ServerState
from casarray.config.load import parse_config
from casarray.config.model import Config
from casarray.health.state import HealthState
from casarray.proxy.router import Router
from casarray.proxy.session import CLOSING, L7Session, SiteSettings, UpstreamSide

NAMESPACE = b"outlook.alwayshotcafe.com"


def config_text(**extra: str) -> str:
    lines = "".join(f"{key}: {value}\n" for key, value in extra.items())
    return (
        textwrap.dedent(
            """\
            namespace: outlook.alwayshotcafe.com
            mode: l7
            tls: {certificate: /lab/outlook.pem, key: /lab/outlook.key}
            servers: [{name: MB1, address: 127.0.0.2}, {name: MB2, address: 127.0.0.3}]
            services: [owa, ews, mapi, rpc]
            health: {enabled: false}
            """
        )
        + lines
    )


class RecordingClient:
    """The client connection: what was written to it, whether reading is paused, whether it closed."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.paused = False
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.data += data

    def writelines(self, list_of_data: Iterable[bytes]) -> None:
        for data in list_of_data:
            self.write(data)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data, self.data = bytes(self.data), bytearray()
        return data


class FakeUpstream(UpstreamSide):
    """One upstream connection: what the session wrote to it; `bytes_out` counts what it answered."""

    def __init__(self, server: ServerState) -> None:
        super().__init__(server)
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.data += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@dataclass
class RecordingShell:
    """The shell: the upstream connections the session asked for (server, forwarded head)."""

    opens: list[tuple[ServerState, bytes]] = field(default_factory=list)
    cancels: int = 0
    ended: bool = False

    def open_upstream(self, server: ServerState, head: bytes) -> None:
        self.opens.append((server, head))

    def cancel_open(self) -> None:
        self.cancels += 1

    def finished(self) -> None:
        self.ended = True


class FakeSite(SiteSettings):
    """The listener's shared state with the configured timeouts."""

    def __init__(
        self, config: Config, servers: list[ServerState], cookie_secrets: Sequence[bytes] = ()
    ) -> None:
        super().__init__(config)
        self.router = Router(config, servers, cookie_secrets)
        self.counts: list[tuple[str, int]] = []

    def count(self, service: str, status: int) -> None:
        self.counts.append((service, status))


class Harness:
    """One session, its client side and shell, the servers, and the time."""

    def __init__(self, cookie_secrets: Sequence[bytes] = (), **extra: str) -> None:
        self.config = parse_config(config_text(**extra))
        self.servers = []
        for i, server_config in enumerate(self.config.servers):
            server = ServerState(server_config, f"127.0.0.{i + 2}", 443)
            for name in self.config.services:
                member = Member(server, name, HealthState(1, 1))
                member.health.force_up(0.0)
                server.members[name] = member
            self.servers.append(server)
        self.site = FakeSite(self.config, self.servers, cookie_secrets)
        self.shell = RecordingShell()
        self.client = RecordingClient()
        self.session = L7Session(self.site, self.shell)
        self.session.connected(self.client, "192.0.2.7")
        self.now = 1000.0

    def send(self, data: bytes) -> None:
        self.session.client_data(data, self.now)

    def connect(self, index: int = -1) -> FakeUpstream:
        """The shell's connection to the server of the `index`th open succeeded."""
        server, head = self.shell.opens[index]
        upstream = FakeUpstream(server)
        self.session.upstream_connected(upstream, head, self.now)
        return upstream

    def answer(self, upstream: FakeUpstream, data: bytes) -> None:
        upstream.bytes_out += len(data)
        self.session.upstream_data(upstream, data, self.now)

    def lose(self, upstream: FakeUpstream) -> None:
        """The upstream connection went away (the shell's connection_lost)."""
        upstream.closed = True
        self.session.upstream_lost(upstream, self.now)

    def down(self, server: ServerState, service: str) -> None:
        server.members[service].health.up = False

    def opened_to(self) -> list[str]:
        return [server.name for server, _ in self.shell.opens]


def get(path: bytes = b"/owa/", *fields: bytes) -> bytes:
    return (
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: "
        + NAMESPACE
        + b"\r\n"
        + b"".join(f + b"\r\n" for f in fields)
        + b"\r\n"
    )


def ok(body: bytes = b"hello", *fields: bytes) -> bytes:
    extra = b"".join(f + b"\r\n" for f in fields)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_a_proxied_get_reaches_one_server_and_its_answer_the_client() -> None:
    h = Harness()
    h.send(get())
    assert len(h.shell.opens) == 1
    assert h.client.paused
    up = h.connect()
    assert up.data.startswith(b"GET /owa/ HTTP/1.1\r\n")
    assert b"X-Forwarded-For: 192.0.2.7\r\n" in up.data
    h.answer(up, ok())
    assert h.client.take() == ok()
    assert not h.client.closed
    assert not h.client.paused
    assert h.site.counts == [("owa", 200)]


def test_a_failed_connect_goes_to_the_next_member() -> None:
    h = Harness()
    h.send(get())
    first = h.shell.opens[0][0]
    h.session.upstream_failed(first, h.shell.opens[0][1], "connection refused", h.now)
    assert len(h.shell.opens) == 2
    assert h.shell.opens[1][0] is not first  # never the one that just failed
    up = h.connect()
    h.answer(up, ok())
    assert status_of(h.client.take()) == 200


def test_when_every_member_fails_to_connect_the_client_gets_502() -> None:
    h = Harness()
    h.send(get())
    for _ in range(2):
        server, head = h.shell.opens[-1]
        h.session.upstream_failed(server, head, "connection refused", h.now)
    assert status_of(h.client.data) == 502
    assert h.client.closed
    assert h.shell.ended


def test_a_get_is_retried_after_a_reset_with_no_response_byte() -> None:
    h = Harness()
    h.send(get())
    first = h.connect()
    h.lose(first)  # reset before a byte of answer: a GET without a body may be sent again
    assert len(h.shell.opens) == 2
    assert h.shell.opens[1][1] == bytes(first.data)  # the same forwarded head
    second = h.connect()
    h.answer(second, ok())
    assert h.client.take() == ok()  # one answer, no error page before it
    assert not h.client.closed


def test_a_get_is_not_retried_once_its_response_started() -> None:
    h = Harness()
    h.send(get())
    up = h.connect()
    h.answer(up, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    h.lose(up)
    assert len(h.shell.opens) == 1
    assert h.client.closed  # the client sees a cut response, never a second one


def test_a_post_whose_body_was_sent_gets_502_when_the_server_closes() -> None:
    h = Harness()
    h.send(b"POST /ews/Exchange.asmx HTTP/1.1\r\nHost: " + NAMESPACE + b"\r\nContent-Length: 5\r\n\r\n")
    up = h.connect()
    h.send(b"hello")
    assert up.data.endswith(b"\r\n\r\nhello")
    h.lose(up)  # the body is gone: a retry could repeat what the server did
    assert len(h.shell.opens) == 1
    assert status_of(h.client.data) == 502
    assert h.client.closed


def test_a_response_that_never_starts_gets_504_after_the_server_timeout() -> None:
    h = Harness()
    h.send(get())
    up = h.connect()
    h.session.sweep(h.now + h.site.server_timeout - 0.5)
    assert not h.client.data
    h.session.sweep(h.now + h.site.server_timeout)
    assert status_of(h.client.data) == 504
    assert h.client.closed
    assert up.closed


def test_a_slow_request_head_gets_408() -> None:
    h = Harness()
    h.send(b"GET /owa/ HTTP/1.1\r\nHo")
    h.session.sweep(h.now + h.site.request_header_timeout - 0.5)
    assert not h.client.data
    h.session.sweep(h.now + h.site.request_header_timeout)
    assert status_of(h.client.data) == 408
    assert h.client.closed
    assert not h.shell.opens


def test_pipelined_requests_are_answered_in_order() -> None:
    h = Harness()
    h.send(get(b"/owa/1") + get(b"/owa/2") + get(b"/owa/3"))
    up = h.connect()
    for i in (1, 2, 3):
        # one request at a time upstream: the next head goes out only after this response
        assert up.data.count(b"GET ") == i
        assert up.data.rsplit(b"GET ", 1)[1].startswith(b"/owa/%d " % i)
        h.answer(up, ok(b"answer %d" % i))
    assert h.client.take() == ok(b"answer 1") + ok(b"answer 2") + ok(b"answer 3")
    assert len(h.shell.opens) == 1


def test_100_continue_is_relayed_then_the_body_then_the_final_response() -> None:
    h = Harness()
    h.send(
        b"POST /ews/Exchange.asmx HTTP/1.1\r\nHost: "
        + NAMESPACE
        + b"\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    )
    up = h.connect()
    assert b"Expect: 100-continue\r\n" in up.data
    h.answer(up, b"HTTP/1.1 100 Continue\r\n\r\n")
    assert h.client.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    h.send(b"body")
    assert up.data.endswith(b"\r\n\r\nbody")
    h.answer(up, ok())
    assert h.client.take() == ok()
    assert not h.client.closed


def test_a_second_service_stays_on_the_pinned_connection_while_its_server_serves_it() -> None:
    h = Harness()
    h.send(get(b"/owa/"))
    up = h.connect()
    h.answer(up, ok())
    h.send(get(b"/ews/Exchange.asmx"))
    assert len(h.shell.opens) == 1  # the same upstream connection, not a new one
    assert up.data.count(b"GET ") == 2
    assert not up.closed
    h.answer(up, ok())
    assert h.client.take() == ok() + ok()


def test_a_second_service_its_server_does_not_serve_gets_a_new_connection() -> None:
    h = Harness()
    h.send(get(b"/owa/"))
    up = h.connect()
    h.answer(up, ok())
    h.down(up.server, "ews")  # the pinned server's EWS is down, its OWA is not
    h.send(get(b"/ews/Exchange.asmx"))
    assert up.closed  # closed, never handed on
    assert len(h.shell.opens) == 2
    assert h.shell.opens[1][0] is not up.server
    second = h.connect()
    h.answer(second, ok())
    assert h.client.take() == ok() + ok()


def test_an_ntlm_pinned_connection_is_never_rerouted() -> None:
    h = Harness()  # roundrobin over two servers: a new connection would alternate
    h.send(get(b"/ews/Exchange.asmx", b"Authorization: NTLM TlRMTVNTUAABAAAA"))
    up = h.connect()
    challenge = (
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM TlRMTVNTUAACAAAA\r\nContent-Length: 0\r\n\r\n"
    )
    h.answer(up, challenge)
    for _ in range(5):
        h.send(get(b"/ews/Exchange.asmx", b"Authorization: NTLM TlRMTVNTUAADAAAA"))
        h.answer(up, ok())
    assert len(h.shell.opens) == 1  # every request on the connection that carried the handshake
    assert up.data.count(b"Authorization: NTLM") == 6
    assert not up.closed
    assert h.session.upstream is up


def test_a_pinned_connection_that_closed_between_requests_is_replaced_not_shared() -> None:
    h = Harness()
    h.send(get())
    up = h.connect()
    h.answer(up, ok())
    h.lose(up)  # the server closed its idle keep-alive
    assert h.session.upstream is None
    assert not h.client.closed
    h.send(get())
    assert len(h.shell.opens) == 2  # a new connection of this session's own
    second = h.connect()
    assert second is not up
    h.answer(second, ok())
    assert h.client.take() == ok() + ok()


# --- releasing idle upstream connections (timeouts.upstream_release) --------------------------------
RELEASE = 5.0  # the default of timeouts.upstream_release

CHALLENGE_401 = b"HTTP/1.1 401 Unauthorized\r\n%s\r\nContent-Length: 0\r\n\r\n"


def idle_exchange(h: Harness, request: bytes, answer: bytes) -> FakeUpstream:
    """One request answered on a new upstream connection; the client connection is then idle."""
    h.send(request)
    up = h.connect()
    h.answer(up, answer)
    h.client.take()
    assert h.session.upstream is up
    return up


@pytest.mark.parametrize(
    "authorization",
    [
        b"Authorization: NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==",
        b"Authorization: Negotiate YIIHLgYGKwYBBQUCoIIHIjCCBx6gMDAuBgkqhkiC9xIBAgI=",
        b"authorization:  ntlm TlRMTVNTUAADAAAA",  # names and schemes are case-insensitive
    ],
)
def test_a_request_carrying_ntlm_or_negotiate_makes_its_upstream_private(authorization: bytes) -> None:
    h = Harness()
    up = idle_exchange(h, get(b"/ews/Exchange.asmx", authorization), ok())
    assert up.private
    h.session.sweep(h.now + h.site.keepalive_timeout - 1)  # long past upstream_release
    assert not up.closed
    assert h.session.upstream is up
    assert h.site.upstream_releases == 0


@pytest.mark.parametrize(
    "challenge",
    [
        b"WWW-Authenticate: NTLM",
        b"WWW-Authenticate: Negotiate\r\nWWW-Authenticate: NTLM",  # IIS's usual pair
        b'WWW-Authenticate: Basic realm="mail"\r\nWWW-Authenticate: Negotiate',
        b'www-authenticate: Basic realm="mail", negotiate',  # several challenges in one field
        b"WWW-Authenticate: NTLM TlRMTVNTUAACAAAADAAMADgAAAA1gonilM550+1I+dYAAAAAAAAAAJIAkgBEAAAA",
    ],
)
def test_a_401_offering_ntlm_or_negotiate_makes_its_upstream_private(challenge: bytes) -> None:
    h = Harness()
    up = idle_exchange(h, get(b"/ews/Exchange.asmx"), CHALLENGE_401 % challenge)
    assert up.private  # the client's NTLM answer will come on this connection
    h.session.sweep(h.now + h.site.keepalive_timeout - 1)
    assert not up.closed
    assert h.session.upstream is up


@pytest.mark.parametrize(
    ("request_bytes", "answer"),
    [
        (get(b"/owa/"), ok()),  # anonymous
        (get(b"/ews/Exchange.asmx", b"Authorization: Basic dXNlcjAxOlBhc3MtdXNlcjAx"), ok()),
        (get(b"/ews/Exchange.asmx", b"Authorization: Bearer eyJ0eXAiOiJKV1QifQ.e30.c2ln"), ok()),
        # Proxy-Authorization is hop-by-hop: dropped, it never reaches the server
        (get(b"/owa/", b"Proxy-Authorization: NTLM TlRMTVNTUAABAAAA"), ok()),
        (get(b"/ews/Exchange.asmx"), CHALLENGE_401 % b'WWW-Authenticate: Basic realm="NTLM"'),
        (get(b"/ews/Exchange.asmx"), CHALLENGE_401 % b"WWW-Authenticate: Bearer"),
        # a challenge in a response other than 401 asks nothing of the client
        (get(b"/owa/"), ok(b"hello", b"WWW-Authenticate: Negotiate")),
        (get(b"/owa/", b"X-Note: Authorization: NTLM TlRMTVNTUAABAAAA"), ok()),  # not the field
    ],
)
def test_basic_bearer_and_anonymous_upstreams_are_released_when_idle(
    request_bytes: bytes, answer: bytes
) -> None:
    h = Harness()
    up = idle_exchange(h, request_bytes, answer)
    assert not up.private
    h.session.sweep(h.now + RELEASE - 0.5)
    assert not up.closed
    h.session.sweep(h.now + RELEASE)
    assert up.closed  # closed, never handed to anyone
    assert h.session.upstream is None
    assert not h.client.closed  # the client connection stays
    assert h.site.upstream_releases == 1
    h.session.sweep(h.now + RELEASE * 2)
    assert h.site.upstream_releases == 1  # counted once


def test_the_next_request_after_a_release_opens_a_new_connection_balanced_anew() -> None:
    h = Harness()  # roundrobin, affinity none: the new connection may go to the other server
    first = idle_exchange(h, get(b"/owa/"), ok(b"one"))
    h.now += RELEASE
    h.session.sweep(h.now)
    assert first.closed
    h.send(get(b"/owa/"))
    assert len(h.shell.opens) == 2
    second = h.connect()
    assert second is not first
    assert h.opened_to() == ["MB1", "MB2"]
    h.answer(second, ok(b"two"))
    assert h.client.take() == ok(b"two")
    assert first.data.count(b"GET ") == 1  # nothing more was written to the released connection


def test_the_idle_time_counts_from_the_end_of_the_last_exchange() -> None:
    h = Harness()
    up = idle_exchange(h, get(b"/owa/"), ok())
    for _ in range(3):  # a request every RELEASE - 1 seconds keeps the connection
        h.now += RELEASE - 1
        h.session.sweep(h.now)
        h.send(get(b"/owa/"))
        h.answer(up, ok())
    assert not up.closed
    assert len(h.shell.opens) == 1
    h.session.sweep(h.now + RELEASE)
    assert up.closed


def test_an_upstream_is_never_released_with_a_response_outstanding() -> None:
    h = Harness()
    h.send(get(b"/owa/"))
    up = h.connect()
    h.session.sweep(h.now + RELEASE * 10)  # the server thinks (within timeouts.server)
    assert not up.closed
    h.answer(up, ok())
    assert h.client.take() == ok()


def test_an_upstream_is_never_released_in_the_middle_of_a_request_body() -> None:
    h = Harness()
    h.send(b"POST /ews/Exchange.asmx HTTP/1.1\r\nHost: " + NAMESPACE + b"\r\nContent-Length: 10\r\n\r\nhalf")
    up = h.connect()
    h.now += RELEASE * 3  # a pause inside the body (within body_idle and the upload rate)
    h.session.sweep(h.now)
    assert not up.closed
    h.send(b"+rest!")
    h.answer(up, ok())
    assert h.client.take() == ok()


def test_an_upstream_is_never_released_while_the_next_request_head_arrives() -> None:
    h = Harness()
    up = idle_exchange(h, get(b"/owa/"), ok())
    h.send(b"GET /owa/next HTTP/1.1\r\nHo")  # started: no longer idle
    h.session.sweep(h.now + RELEASE + 1)  # within timeouts.request_header (10 s)
    assert not up.closed
    h.send(b"st: " + NAMESPACE + b"\r\n\r\n")
    assert up.data.count(b"GET ") == 2  # the same connection carries it
    h.answer(up, ok())


def test_a_streamed_response_is_not_idle() -> None:
    h = Harness()
    h.send(
        b"POST /mapi/emsmdb/?MailboxId=x HTTP/1.1\r\nHost: " + NAMESPACE + b"\r\nContent-Length: 0\r\n\r\n"
    )
    up = h.connect()
    # MAPI/HTTP NotificationWait: chunks with PENDING every 30 s, the final answer minutes later.
    h.answer(up, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nPENDING\r\n\r\n")
    for _ in range(4):
        h.now += 30
        h.session.sweep(h.now)
        assert not up.closed
        h.answer(up, b"9\r\nPENDING\r\n\r\n")
    h.answer(up, b"4\r\nDONE\r\n0\r\n\r\n")
    assert not h.client.closed
    h.session.sweep(h.now + RELEASE)  # now idle: released
    assert up.closed


def test_upstream_release_0_never_releases() -> None:
    h = Harness(timeouts="{upstream_release: 0}")
    up = idle_exchange(h, get(b"/owa/"), ok())
    h.session.sweep(h.now + h.site.keepalive_timeout - 1)
    assert not up.closed
    assert h.session.upstream is up


def test_a_released_connection_that_closes_later_changes_nothing() -> None:
    h = Harness()
    up = idle_exchange(h, get(b"/owa/"), ok())
    h.session.sweep(h.now + RELEASE)
    h.lose(up)  # its connection_lost arrives after the release
    assert not h.client.closed
    h.send(get(b"/owa/"))
    h.answer(h.connect(), ok())
    assert h.client.take() == ok()


def cookie(h: Harness, server: ServerState) -> bytes:
    jar = h.site.router.cookie
    assert jar is not None
    return jar.name + b"=" + jar.value(server.name)


def set_cookie_in(answer: bytes) -> bytes | None:
    """The value of the Set-Cookie field of a response (the part before the first ';'), or None."""
    for line in answer.split(b"\r\n"):
        if line.lower().startswith(b"set-cookie: "):
            return line[len(b"set-cookie: ") :].split(b";")[0]
    return None


def test_cookie_affinity_is_honoured() -> None:
    h = Harness(affinity="cookie")
    mb2 = h.servers[1]
    for _ in range(3):  # roundrobin alone would alternate; the cookie keeps MB2
        client = RecordingClient()
        session = L7Session(h.site, h.shell)
        session.connected(client, "192.0.2.7")
        session.client_data(get(b"/owa/", b"Cookie: a=b; " + cookie(h, mb2)), h.now)
        server, head = h.shell.opens[-1]
        assert server is mb2
        up = FakeUpstream(server)
        session.upstream_connected(up, head, h.now)
        up.bytes_out += len(ok())
        session.upstream_data(up, ok(), h.now)
        assert client.take() == ok()  # already the right cookie: none set


def test_cookie_affinity_is_chosen_again_when_its_server_is_down() -> None:
    h = Harness(affinity="cookie")
    mb1, mb2 = h.servers
    h.down(mb2, "owa")
    h.send(get(b"/owa/", b"Cookie: " + cookie(h, mb2)))
    assert h.opened_to() == ["MB1"]
    up = h.connect()
    h.answer(up, ok())
    answer = h.client.take()
    assert b"Set-Cookie: " + cookie(h, mb1) + b"; Path=/; Secure; HttpOnly; SameSite=None\r\n" in answer


NEW_SECRET = b"n" * 32
OLD_SECRET = b"o" * 32


def answered_cookie(h: Harness, request: bytes) -> tuple[str, bytes | None]:
    """Send `request`, answer it from the server the session opened to; (that server, the cookie set)."""
    h.send(request)
    up = h.connect()
    h.answer(up, ok())
    return up.server.name, set_cookie_in(h.client.take())


@pytest.mark.parametrize(
    "presented",
    [
        b"CASARRAY=" + b"0" * 32,  # forged: the right shape, no valid MAC
        b"CASARRAY=" + cookie_value(OLD_SECRET, "MB2"),  # signed with a secret no longer accepted
        b"CASARRAY=" + cookie_value(NEW_SECRET, "MB9"),  # valid MAC for a server not in this config
        b"CASARRAY=127.0.0.3:443",  # an address: never followed
        b"CASARRAY=MB2",  # a name in clear: never followed
    ],
)
def test_a_cookie_that_names_no_server_here_is_balanced_as_absent(presented: bytes) -> None:
    h = Harness(cookie_secrets=[NEW_SECRET], affinity="cookie")
    server, set_cookie = answered_cookie(h, get(b"/owa/", b"Cookie: " + presented))
    assert server == "MB1"  # roundrobin's first choice, as without a cookie
    assert set_cookie == b"CASARRAY=" + cookie_value(NEW_SECRET, "MB1")


def test_a_cookie_signed_with_an_older_accepted_secret_is_followed_and_signed_anew() -> None:
    h = Harness(cookie_secrets=[NEW_SECRET, OLD_SECRET], affinity="cookie")
    server, set_cookie = answered_cookie(
        h, get(b"/owa/", b"Cookie: CASARRAY=" + cookie_value(OLD_SECRET, "MB2"))
    )
    assert server == "MB2"
    assert set_cookie == b"CASARRAY=" + cookie_value(NEW_SECRET, "MB2")


@pytest.mark.parametrize("operator", [Operator.DRAIN, Operator.MAINT])
def test_a_cookie_for_a_server_out_of_service_is_balanced_and_replaced(operator: Operator) -> None:
    h = Harness(cookie_secrets=[NEW_SECRET], affinity="cookie")
    mb1, mb2 = h.servers
    mb2.operator = operator
    server, set_cookie = answered_cookie(h, get(b"/owa/", b"Cookie: " + cookie(h, mb2)))
    assert server == "MB1"
    assert set_cookie == cookie(h, mb1)


def test_without_cookie_affinity_no_cookie_is_read_or_set() -> None:
    h = Harness()
    assert h.site.router.cookie is None
    server, set_cookie = answered_cookie(
        h, get(b"/owa/", b"Cookie: CASARRAY=" + cookie_value(b"k" * 32, "MB2"))
    )
    assert server == "MB1"
    assert set_cookie is None


def test_a_member_marked_down_retries_a_waiting_get_elsewhere_at_once() -> None:
    h = Harness()
    h.send(get())
    up = h.connect()
    h.down(up.server, "owa")
    h.session.server_down(up.server, h.now)
    assert up.closed
    assert len(h.shell.opens) == 2
    assert h.shell.opens[1][0] is not up.server
    h.answer(h.connect(), ok())
    assert h.client.take() == ok()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /favicon.ico HTTP/1.1\r\nHost: outlook.alwayshotcafe.com\r\n\r\n", 404),
        (b"GET /owa/ HTTP/1.1\r\nHost: evil.example\r\n\r\n", 421),
        (b"GET / HTTP/1.1\r\nHost: outlook.alwayshotcafe.com\r\n\r\n", 302),
        (b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ],
)
def test_local_answers_need_no_server(request_bytes: bytes, status: int) -> None:
    h = Harness()
    h.send(request_bytes)
    assert status_of(h.client.data) == status
    assert not h.shell.opens


def test_a_client_that_goes_away_mid_request_closes_its_upstream() -> None:
    h = Harness()
    h.send(b"POST /ews/Exchange.asmx HTTP/1.1\r\nHost: " + NAMESPACE + b"\r\nContent-Length: 100\r\n\r\n")
    up = h.connect()
    h.session.client_lost(True, h.now)
    assert up.closed
    assert h.client.closed
    assert h.shell.ended
    assert h.session.phase == CLOSING


def test_the_proxy_core_imports_no_asyncio_and_no_engine() -> None:
    """DESIGN.md §7: protocol cores are sans-I/O; the asyncio shells import them, never the reverse."""
    code = (
        "import sys, casarray.proxy.session, casarray.proxy.router, casarray.proxy.answers, "
        "casarray.proxy.forwarding; "
        "print(sorted(m for m in sys.modules if m == 'asyncio' or m.startswith('casarray.engine')))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]"
