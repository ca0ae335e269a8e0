"""`doctor --user`: the deployment as a user's Outlook and phone see it, through the VIP.

1. Find Autodiscover as Outlook does (discovery.py: the SCP URLs when given, then the address's domain,
   autodiscover.<domain>, the HTTP redirect method, the SRV record), and as a phone does (the same
   without the SCP); POST the POX request (outlook, then mobilesync schema) and follow redirects within
   the policy; log on with the user's credentials when challenged.
2. Ask again until every server of the config has answered (X-FEServer) or twice as many times as there
   are servers: through the VIP each new connection may reach another server, and a client told
   server-specific URLs by one server fails only when it lands there.
3. Ask Autodiscover v2 (EWS, ActiveSync) at the name where the phone found Autodiscover.
4. Judge every URL those answers told (told.py): on the namespace, resolves to the VIP, answers through
   the VIP like its vdir, and by whom.

Every request goes to the VIP (listen.address), with SNI and Host the URL's name and its port: the check
never contacts a server directly, and never a name that does not resolve to the VIP.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from casarray.config.model import Config
from casarray.doctor.autodiscover import (
    POX_PATH,
    V2_PROTOCOLS,
    Answer,
    AutodiscoverParseError,
    ErrorAnswer,
    RedirectAddr,
    RedirectUrl,
    Schema,
    Settings,
    ToldUrl,
    parse_pox,
    parse_v2,
    pox_request,
    v2_path,
)
from casarray.doctor.checks import CONCURRENCY, connect_address, worst
from casarray.doctor.discovery import (
    MAX_REDIRECTS,
    Candidate,
    RedirectPolicy,
    Search,
    domain_of,
    http_redirect_url,
    https_url,
    scp_candidates,
    srv_candidate,
    srv_name,
    url_host_port,
)
from casarray.doctor.reply import Reply, offered_schemes
from casarray.doctor.resolution import is_local_address, judge, resolve, resolve_srv
from casarray.doctor.rows import Row, Status, UrlRow
from casarray.doctor.told import autoconfiguration, judge_reply, on_namespace, service_of, trailing_slash
from casarray.doctor.wire import Credentials, Fetched, fetch
from casarray.engine.tls import upstream_context
from casarray.errors import CasarrayError
from casarray.exchange.namespace.plan import split_url

_XML: Final = (("Content-Type", "text/xml; charset=utf-8"),)
# Outlook 2013 and later say they can use Negotiate and EXHTTP blocks ([MS-OXDSCLI] 2.2.2.2); Outlook 2016
# asks for the MAPI/HTTP settings with X-MapiHttpCapability ([MS-OXDSCLI] 2.2.2.1, 3.2.5.1: the answer
# then has a mapiHttp block in place of EXCH and EXPR). X-AnchorMailbox routes the request to the
# mailbox's server, as Outlook sends it.
_OUTLOOK_HEADERS: Final = (("X-ClientCanHandle", "Negotiate, ExHttpInfo"),)
_MAPI_HTTP: Final = (("X-MapiHttpCapability", "1"),)
_JSON: Final = (("Accept", "application/json"),)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    address: str  # the user's e-mail address
    credentials: Credentials | None = None
    scp: tuple[str, ...] = ()  # the SCP URLs a domain-joined client would read from Active Directory
    allow: tuple[str, ...] = ()  # names redirects may lead to, besides the namespace and Autodiscover name
    max_redirects: int = MAX_REDIRECTS
    nameservers: Sequence[tuple[str, int]] = ()


@dataclass(frozen=True, slots=True)
class ClientReport:
    address: str
    steps: tuple[Row, ...]  # how Autodiscover was found and what it answered
    urls: tuple[UrlRow, ...]  # every URL the client was told, judged
    autoconfiguration: tuple[str, ...]  # what Outlook's Test E-mail AutoConfiguration would show

    @property
    def failed(self) -> bool:
        return any(r.status == "fail" for r in self.steps) or any(r.status == "fail" for r in self.urls)

    def as_json(self) -> dict[str, object]:
        return {
            "user": self.address,
            "ok": not self.failed,
            "steps": [row.as_json() for row in self.steps],
            "urls": [row.as_json() for row in self.urls],
            "autoconfiguration": list(self.autoconfiguration),
        }


@dataclass(slots=True)
class _Found:
    """Where a client found Autodiscover and the settings it got there."""

    url: str
    address: str
    settings: Settings
    fe_server: str | None


@dataclass(frozen=True, slots=True)
class _Redirect:
    """An answer that sends the client elsewhere: another URL, or another address (a new search)."""

    value: str
    address: bool = False


_STOP: Final = "stop"  # the client gives up: a failed log-on, an Autodiscover error
_Outcome = _Found | _Redirect | Literal["stop"] | None


@dataclass(frozen=True, slots=True)
class _Where:
    """How a name resolves, as doctor's DNS rows judge it."""

    status: Status
    detail: str
    resolves: bool  # it has addresses at all
    on_vip: bool  # the VIP is among them


@dataclass(slots=True)
class _Told:
    protocol: str
    url: str
    told_by: list[str] = field(default_factory=list)


async def run_client_check(
    config: Config, options: ClientOptions, *, is_local: Callable[[str], bool] = is_local_address
) -> ClientReport:
    """Everything `doctor --user` reports; each network exchange is bounded by health.timeout."""
    return await _Client(config, options, is_local).run()


class _Client:
    def __init__(self, config: Config, options: ClientOptions, is_local: Callable[[str], bool]) -> None:
        self.config = config
        self.options = options
        self.is_local = is_local
        self.timeout = config.health.timeout
        self.vip = connect_address(config.listen.address)
        self.policy = RedirectPolicy.build([*config.names, *options.allow], options.max_redirects)
        self.steps: list[Row] = []
        self.log: list[str] = []
        self.told: dict[tuple[str, str], _Told] = {}
        self.resolutions: dict[str, asyncio.Future[_Where]] = {}
        self.context: ssl.SSLContext | None = None
        self.urls: list[UrlRow] = []
        self.logon_failed = False  # once the log-on fails, every later request would fail the same way

    async def run(self) -> ClientReport:
        address = self.options.address
        try:
            domain_of(address)
        except ValueError as exc:
            self.step("user", address, "fail", str(exc))
            return self.report(None, None)
        try:
            self.context = upstream_context(self.config)
        except CasarrayError as exc:
            self.step("TLS", exc.where or "upstream_tls", "fail", str(exc))
            return self.report(None, None)
        for url in self.options.scp:
            self.tell("SCP", url, "Active Directory (SCP)")

        # Outlook: SCP first (domain-joined), then DNS.
        outlook = await self.discover("outlook", address, scp_candidates(self.options.scp))
        first_outlook = outlook.settings if outlook else None
        if outlook is not None:
            await self.cover("outlook", outlook)
            await self.cover("outlook", outlook, mapi=False)
        # A phone: no Active Directory.
        phone = None if self.logon_failed else await self.discover("mobilesync", address, [])
        if phone is not None:
            await self.cover("mobilesync", phone)
        # Autodiscover v2 where the phone (else Outlook) found Autodiscover.
        where = phone or outlook
        if where is not None and not self.logon_failed:
            for protocol in V2_PROTOCOLS:
                await self.ask_v2(where, protocol)
        await self.judge_told()
        return self.report(first_outlook, outlook.fe_server if outlook else None)

    # -- the report ------------------------------------------------------------------------------

    def step(self, check: str, target: str, status: Status, detail: str) -> None:
        self.steps.append(Row(check, target, status, detail))

    def tell(self, protocol: str, url: str, by: str) -> None:
        entry = self.told.setdefault((protocol, url), _Told(protocol, url))
        if by not in entry.told_by:
            entry.told_by.append(by)

    def report(self, settings: Settings | None, fe_server: str | None) -> ClientReport:
        lines = autoconfiguration(self.options.address, settings, self.log, fe_server)
        return ClientReport(self.options.address, tuple(self.steps), tuple(self.urls), tuple(lines))

    # -- Autodiscover ----------------------------------------------------------------------------

    async def discover(self, schema: Schema, address: str, first: list[Candidate]) -> _Found | None:
        """The client's search (discovery.Search) for `schema`; None when it finds nothing. Outlook's
        attempts go to the log its Test E-mail AutoConfiguration shows."""
        log = self.log if schema == "outlook" else []
        who = "Outlook" if schema == "outlook" else "a phone (ActiveSync)"
        check = f"Autodiscover for {who}"
        search = Search(address, self.config.listen.https_port, self.policy, first)
        while True:
            candidate = search.next()
            if candidate is None and not search.fallbacks_added:
                search.add(await self.fallbacks(check, search.domain, search.followed, log))
                candidate = search.next()
            if candidate is None:
                break
            log.append(f"Attempting URL {candidate.url} found through {candidate.method}")
            outcome = await self.try_candidate(check, schema, search.address, candidate)
            if isinstance(outcome, _Found):
                log.append(f"Autodiscover to {candidate.url} succeeded")
                return outcome
            if outcome is None:
                log.append(f"Autodiscover to {candidate.url} failed")
                continue
            if not isinstance(outcome, _Redirect):
                log.append(f"Autodiscover to {candidate.url} failed: the client stops here")
                return None
            follow = search.redirect_to_address if outcome.address else search.redirect_to
            refusal = follow(outcome.value)
            if refusal is not None:
                self.step(check, outcome.value, "fail", f"redirect from {candidate.url} {refusal}")
                log.append(f"Redirect to {outcome.value} refused")
            else:
                log.append(f"Redirected to {outcome.value}")
        self.step(
            check,
            self.options.address,
            "fail",
            f"no Autodiscover answer with settings: {who} cannot set up the account",
        )
        return None

    async def fallbacks(self, check: str, domain: str, followed: int, log: list[str]) -> list[Candidate]:
        """Steps 4 and 5, tried when the https URLs gave nothing: the http redirect, the SRV record."""
        found: list[Candidate] = []
        http_port = self.config.listen.http_port
        url = http_redirect_url(domain, http_port or 80)
        if http_port is None:
            self.step(check, url, "ok", "not tried: the balancer has no http listener (listen.http_port)")
        else:
            host = f"autodiscover.{domain}"
            where = await self.resolution(host)
            if not where.on_vip:
                self.step(check, url, "ok", f"HTTP redirect method: {host} {where.detail}")
            else:
                log.append(f"Attempting the HTTP redirect method at {url}")
                fetched = await fetch(self.vip, http_port, host, "GET", POX_PATH, None, self.timeout)
                reply = fetched.reply
                location = reply.header("Location") if reply is not None else None
                if reply is None or reply.status not in (301, 302, 303, 307, 308) or not location:
                    shown = fetched.reason if reply is None else f"HTTP {reply.status}, no redirect"
                    self.step(check, url, "ok", f"HTTP redirect method: {shown}")
                else:
                    refusal = self.policy.refusal(location, followed)
                    status: Status = "ok" if refusal is None else "warn"
                    self.step(check, url, status, f"HTTP redirect method: 302 to {location} {refusal or ''}")
                    if refusal is None:
                        found.append(Candidate("HTTP redirect", location))
                        self.tell("HTTP redirect", location, reply.fe_server or "?")
        records, why = await resolve_srv(
            srv_name(domain), nameservers=self.options.nameservers, timeout=self.timeout
        )
        if not records:
            self.step(check, srv_name(domain), "ok", f"SRV record: {why}")
        for record in records:
            candidate = srv_candidate(record.target, record.port)
            refusal = self.policy.refusal(candidate.url, followed)
            self.tell("SRV record", candidate.url, "DNS")
            if refusal is None:
                found.append(candidate)
            else:
                self.step(check, srv_name(domain), "warn", f"SRV record → {candidate.url} {refusal}")
        return found

    async def try_candidate(self, check: str, schema: Schema, address: str, candidate: Candidate) -> _Outcome:
        """_Found; a _Redirect; _STOP when the client gives up (a failed log-on, an Autodiscover
        error); None to go on with the next candidate."""
        url = candidate.url
        method = candidate.method
        place = url_host_port(url)
        if place is None:
            self.step(check, url, "fail", f"{method}: not an absolute URL")
            return None
        host, port = place
        where = await self.resolution(host)
        if not where.resolves:
            # A root domain without an address is the usual case: the client moves on.
            status: Status = "ok" if method == "root domain" else "fail"
            if method == "autodiscover domain":
                status = "warn"
            self.step(check, url, status, f"{method}: {where.detail}; not tried")
            return None
        if not where.on_vip:
            self.step(
                check,
                url,
                "warn" if method == "root domain" else "fail",
                f"{method}: {where.detail}: a client would ask there, outside the balancer (not asked)",
            )
            return None
        fetched = await self.post(url, host, port, schema, address)
        return self.read_pox(check, candidate, fetched, address)

    def read_pox(self, check: str, candidate: Candidate, fetched: Fetched, address: str) -> _Outcome:
        url, method = candidate.url, candidate.method
        reply = fetched.reply
        if reply is None:
            self.step(check, url, "fail", f"{method}: {fetched.code} {fetched.reason}")
            return None
        by = _by(reply)
        if fetched.refused:
            self.step(check, url, "fail", self.refused_text(fetched, reply))
            self.logon_failed = True
            return _STOP
        if reply.status == 401:
            self.logon_failed = True
            offered = ", ".join(offered_schemes(reply.all("WWW-Authenticate"))) or "no scheme"
            if self.options.credentials is None:
                self.step(
                    check,
                    url,
                    "fail",
                    f"{method}: asks for credentials ({offered}){by}; give --password-file to see "
                    "what it tells the user",
                )
            else:
                self.step(check, url, "fail", f"{method}: 401 offering {offered}{by}: cannot log on")
            return _STOP
        if reply.status in (301, 302, 303, 307, 308):
            location = reply.header("Location") or ""
            self.step(check, url, "ok", f"{method}: {reply.status} to {location}{by}")
            self.tell("HTTP redirect", location, reply.fe_server or "?")
            return _Redirect(location)
        if reply.status != 200:
            self.step(check, url, "fail", f"{method}: HTTP {reply.status} {reply.reason}{by}")
            return None
        try:
            answer = parse_pox(reply.body)
        except AutodiscoverParseError as exc:
            self.step(check, url, "fail", f"{method}: 200 but not an Autodiscover answer: {exc}{by}")
            return None
        return self.take(check, candidate, answer, reply, address)

    def take(self, check: str, candidate: Candidate, answer: Answer, reply: Reply, address: str) -> _Outcome:
        url, method, by = candidate.url, candidate.method, _by(reply)
        if isinstance(answer, ErrorAnswer):
            self.step(check, url, "fail", f"{method}: Autodiscover {answer.describe()}{by}")
            return _STOP
        if isinstance(answer, RedirectUrl):
            self.step(check, url, "ok", f"{method}: redirectUrl {answer.url}{by}")
            self.tell("redirectUrl", answer.url, reply.fe_server or "?")
            return _Redirect(answer.url)
        if isinstance(answer, RedirectAddr):
            self.step(check, url, "ok", f"{method}: redirectAddr {answer.address}{by}")
            return _Redirect(answer.address, address=True)
        self.step(check, url, "ok", f"{method}: settings, {len(answer.urls)} URLs{by}")
        return _Found(url, address, answer, reply.fe_server)

    def refused_text(self, fetched: Fetched, reply: Reply) -> str:
        login = self.options.credentials.login if self.options.credentials else "?"
        return (
            f"authentication failed: {reply.fe_server or 'the server'} refused the credentials of {login} "
            f"({fetched.auth}, then 401 again): wrong password, or not this user's login"
        )

    async def post(
        self, url: str, host: str, port: int, schema: Schema, address: str, *, mapi: bool = True
    ) -> Fetched:
        parts = split_url(url)
        assert parts is not None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [*_XML, ("X-AnchorMailbox", address)]
        if schema == "outlook":
            headers += _OUTLOOK_HEADERS
            if mapi:
                headers += _MAPI_HTTP
        return await fetch(
            self.vip,
            port,
            host,
            "POST",
            target,
            self.context,
            self.timeout,
            headers=headers,
            body=pox_request(address, schema),
            credentials=self.options.credentials,
        )

    async def cover(self, schema: Schema, found: _Found, *, mapi: bool = True) -> None:
        """Ask the URL that answered again until every server has answered; record what each told.
        `mapi` False: as an Outlook that does not use MAPI/HTTP (2010, or MAPI/HTTP turned off), which is
        told the EXCH and EXPR (Outlook Anywhere) settings instead."""
        who = "Outlook" if schema == "outlook" else "a phone (ActiveSync)"
        check = f"Autodiscover for {who}" + ("" if mapi else " without MAPI/HTTP")
        if mapi:
            self.record(found.settings, found.fe_server)
        host_port = url_host_port(found.url)
        assert host_port is not None
        host, port = host_port
        candidate = Candidate("asked again", found.url)

        async def once() -> str | None:
            fetched = await self.post(found.url, host, port, schema, found.address, mapi=mapi)
            if fetched.reply is None:
                self.step(check, found.url, "fail", f"asked again: {fetched.code} {fetched.reason}")
                return None
            outcome = self.read_pox(check, candidate, fetched, found.address)
            if isinstance(outcome, _Found):
                self.record(outcome.settings, outcome.fe_server)
            return fetched.reply.fe_server

        await self.round_robin(found.fe_server if mapi else None, once)

    async def round_robin(self, first: str | None, once: Callable[[], Awaitable[str | None]]) -> None:
        servers = {s.name.lower() for s in self.config.servers}
        seen = {first.lower()} if first else set()
        for _ in range(2 * len(servers) - 1):
            if servers <= seen:
                return
            answered = await once()
            if answered:
                seen.add(answered.lower())

    def record(self, settings: Settings, fe_server: str | None) -> None:
        for told in settings.urls:
            self.tell(told.label, self.port_for_host(told), fe_server or "?")

    def port_for_host(self, told: ToldUrl) -> str:
        """An Outlook Anywhere host name carries no port: the client uses https's, which is the
        balancer's https_port (443 in production; the lab's high port there)."""
        port = self.config.listen.https_port
        parts = split_url(told.url)
        if not told.from_host or port == 443 or parts is None or parts.scheme != "https":
            return told.url
        return https_url(parts.hostname or "", port, parts.path)

    async def ask_v2(self, where: _Found, protocol: str) -> None:
        """Autodiscover v2 at the host where Autodiscover was found."""
        check = f"Autodiscover v2 {protocol}"
        host_port = url_host_port(where.url)
        assert host_port is not None
        host, port = host_port
        url = https_url(host, port, v2_path(where.address, protocol))

        async def once() -> str | None:
            fetched = await fetch(
                self.vip,
                port,
                host,
                "GET",
                v2_path(where.address, protocol),
                self.context,
                self.timeout,
                headers=_JSON,
                credentials=self.options.credentials,
            )
            reply = fetched.reply
            if reply is None:
                self.step(check, url, "fail", f"{fetched.code} {fetched.reason}")
                return None
            by = _by(reply)
            if fetched.refused:
                self.step(check, url, "fail", self.refused_text(fetched, reply))
                self.logon_failed = True
            elif reply.status in (301, 302, 303, 307, 308):
                location = reply.header("Location") or ""
                refusal = self.policy.refusal(location, 0)
                self.tell(f"v2 {protocol} redirect", location, reply.fe_server or "?")
                self.step(
                    check,
                    url,
                    "fail" if refusal else "ok",
                    f"{reply.status} to {location}{by} {refusal or ''}",
                )
            elif reply.status == 401:
                offered = ", ".join(offered_schemes(reply.all("WWW-Authenticate"))) or "no scheme"
                self.step(check, url, "fail", f"asks for credentials ({offered}){by}")
            else:
                try:
                    answer = parse_v2(reply.body, protocol)
                except AutodiscoverParseError as exc:
                    self.step(check, url, "fail", f"HTTP {reply.status}, not a v2 answer: {exc}{by}")
                    return reply.fe_server
                if isinstance(answer, Settings):
                    self.record(answer, reply.fe_server)
                    told = answer.urls[0].url
                    self.step(check, url, "ok", f"{told}{by}")
                elif isinstance(answer, ErrorAnswer):
                    self.step(check, url, "fail", f"HTTP {reply.status}: {answer.describe()}{by}")
            return reply.fe_server

        first = await once()
        await self.round_robin(first, once)

    # -- the URLs told ---------------------------------------------------------------------------

    async def resolution(self, host: str) -> _Where:
        """How `host` resolves, judged against the VIP; asked once per name, however many URLs use it
        (concurrent askers share the one question)."""
        task = self.resolutions.get(host)
        if task is None:
            task = asyncio.ensure_future(self._resolve(host))
            self.resolutions[host] = task
        return await task

    async def _resolve(self, host: str) -> _Where:
        found = await resolve(host, nameservers=self.options.nameservers, timeout=self.timeout)
        row = judge(found, self.config.listen.address, self.is_local)
        # warn: the VIP comes with other addresses, or only the hosts file knows it; the VIP is there.
        return _Where(row.status, row.detail, found.error is None, row.status != "fail")

    async def judge_told(self) -> None:
        limit = asyncio.Semaphore(CONCURRENCY)

        async def bounded(told: _Told) -> UrlRow:
            async with limit:
                return await self.judge_one(told)

        self.urls = list(await asyncio.gather(*(bounded(t) for t in self.told.values())))

    async def judge_one(self, told: _Told) -> UrlRow:
        """One URL: its place (on the namespace), its name (resolves to the VIP), and what a GET of it
        through the VIP answers. The verdict's detail says what decided it; the columns say the rest."""
        url, by = told.url, ", ".join(told.told_by)
        ok, place = on_namespace(url, self.config)
        statuses: list[Status] = [] if ok else ["fail"]
        host_port, parts = url_host_port(url), split_url(url)
        if host_port is None or parts is None:
            return UrlRow(told.protocol, url, by, place, "no", "", "fail", "not an absolute URL")
        host, port = host_port
        where = await self.resolution(host)
        if not where.on_vip:
            outside = "the client goes past the balancer" if where.resolves else "the client cannot reach it"
            return UrlRow(
                told.protocol, url, by, place, f"no: {where.detail}", "", "fail", f"{outside}; not asked"
            )
        via = "yes" if where.status == "ok" else f"yes, but {where.detail}"
        if where.status == "warn":
            statuses.append("warn")
        if parts.scheme.lower() != "https":
            return UrlRow(told.protocol, url, by, place, via, "", "fail", f"{parts.scheme}: not asked")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        fetched = await fetch(self.vip, port, host, "GET", target, self.context, self.timeout)
        reply = fetched.reply
        if reply is None:
            return UrlRow(
                told.protocol,
                url,
                by,
                place,
                via,
                "",
                "fail",
                f"through the VIP: {fetched.code} {fetched.reason}",
            )
        followed = ""
        slash = trailing_slash(url, reply)
        if slash is not None:
            followed = f"{reply.status} to {slash}, then "
            fetched = await fetch(self.vip, port, host, "GET", slash, self.context, self.timeout)
            if fetched.reply is None:
                detail = f"through the VIP: {followed}{fetched.code} {fetched.reason}"
                return UrlRow(told.protocol, url, by, place, via, "", "fail", detail)
            reply = fetched.reply
        status, text = judge_reply(service_of(url), reply)
        return UrlRow(
            told.protocol,
            url,
            by,
            place,
            via,
            reply.fe_server or "",
            worst(status, *statuses),
            followed + text,
        )


def _by(reply: Reply) -> str:
    return f" (answered by {reply.fe_server})" if reply.fe_server else ""
