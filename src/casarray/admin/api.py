"""The admin HTTP API on aiohttp: JSON reads and changes, server-sent events, metrics, the dashboard.

Every handler talks to the balancer only through `casarray.engine.control.Control`, on the balancer's
own event loop: a snapshot is taken synchronously between two data-plane callbacks, so it is consistent
without locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler

from casarray.admin import dashboard
from casarray.admin.auth import Access, Policy, decide
from casarray.admin.metrics import CONTENT_TYPE, registry_for, render_metrics
from casarray.admin.openapi import openapi_document
from casarray.admin.views import OPERATOR_STATES, event_json, snapshot_json
from casarray.engine.control import Control, OperatorState
from casarray.engine.opstate import BY_LIMIT, REASON_LIMIT, clean_text, document, read_json, settings_of
from casarray.engine.refusals import RefusalLog
from casarray.errors import CasarrayError

if TYPE_CHECKING:
    from casarray.admin.peers import Peers

__all__ = ["STATES_PATH", "AdminApi"]

log = logging.getLogger("casarray.admin")

# Where nodes read each other's operator states and hand each other changes (admin/peers.py).
STATES_PATH = "/api/peers/states"
_READ_METHODS = frozenset({"GET", "HEAD"})
# What a fresh stream replays, so the dashboard's log is not empty when it opens.
_STREAM_BACKLOG = 100


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    # One JSON line per `data:` field: json.dumps never emits a newline (text/event-stream, WHATWG HTML §9.2).
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _note(request: web.Request) -> tuple[str, str] | web.Response:
    """(reason, by) of an operator change: from an optional JSON body `{"reason": ..., "by": ...}`
    (or the query string); `by` defaults to "api". Both are cleaned to one bounded printable line."""
    fields: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        raw = await request.read()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                return _error(400, 'expected a JSON object such as {"reason": "CU14", "by": "alice"}')
            if not isinstance(body, dict):
                return _error(400, 'expected a JSON object such as {"reason": "CU14", "by": "alice"}')
            fields.update(body)
    reason, by = fields.get("reason", ""), fields.get("by", "")
    if not isinstance(reason, str) or not isinstance(by, str):
        return _error(400, "reason and by: expected text")
    # The caller's own word for who it is (a token is shared, it names nobody), and where it called from.
    who = clean_text(by, BY_LIMIT - 48) or "api"
    return clean_text(reason, REASON_LIMIT), f"{who} from {request.remote}" if request.remote else who


class AdminApi:
    """The routes, bound to one Control and one access Policy."""

    def __init__(
        self,
        control: Control,
        policy: Policy,
        *,
        stream_interval: float = 1.0,
        max_streams: int = 16,
        peers: Peers | None = None,
    ) -> None:
        self.control = control
        self.policy = policy
        self.peers = peers  # the other nodes, told of every change made here (admin/peers.py)
        self.stream_interval = stream_interval
        # Each stream builds a snapshot every interval on the balancer's own loop, between two
        # data-plane callbacks: 200 readers slowed client requests to ~2 s. So they are capped.
        self.max_streams = max_streams
        self.streams = 0
        self.stream_refusals = RefusalLog(log, logging.WARNING, f"admin.max_streams ({max_streams}) reached")
        self.registry = registry_for(control)
        self.closing = asyncio.Event()

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth])
        app.router.add_get("/", self.page)
        app.router.add_get("/api/status", self.status)
        app.router.add_get("/api/events", self.events)
        app.router.add_get("/api/stream", self.stream)
        app.router.add_post("/api/servers/{server}/{state}", self.set_server)
        app.router.add_post("/api/servers/{server}/services/{service}/{state}", self.set_member)
        app.router.add_post("/api/reload", self.reload)
        app.router.add_get(STATES_PATH, self.peer_states)
        app.router.add_post(STATES_PATH, self.adopt_states)
        app.router.add_get("/api/openapi.json", self.openapi)
        app.router.add_get("/metrics", self.metrics)
        return app

    # --- middlewares ----------------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """aiohttp answers unknown paths and methods in plain text; API clients get JSON everywhere."""
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods))
            return _error(405, f"method {request.method} not allowed on {request.path} (allowed: {allowed})")
        except web.HTTPNotFound:
            return _error(404, f"no endpoint {request.path} (see /api/openapi.json)")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, exc.reason)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/" and request.method in _READ_METHODS:
            return await handler(request)  # the page holds no data; its API calls are checked
        access = Access.READ if request.method in _READ_METHODS else Access.CHANGE
        verdict = decide(
            self.policy,
            access,
            authorization=request.headers.get("Authorization"),
            host=request.headers.get("Host"),
            origin=request.headers.get("Origin"),
        )
        if verdict is None:
            return await handler(request)
        log.warning(
            "admin: %d for %s %s from %s: %s",
            verdict.status,
            request.method,
            request.path,
            request.remote,
            verdict.message,
        )
        response = _error(verdict.status, verdict.message)
        if verdict.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="casarray"'  # RFC 6750 §3
        return response

    # --- reads ----------------------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=dashboard.PAGE.encode(),
            content_type="text/html",
            charset="utf-8",
            headers=dashboard.HEADERS,
        )

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(snapshot_json(self.control.snapshot(), time.time()))

    async def events(self, request: web.Request) -> web.Response:
        text = request.query.get("since", "0")
        try:
            since = float(text)
        except ValueError:
            return _error(400, f"since: expected epoch seconds such as 1700000000.5, got {text!r}")
        now = time.time()
        events = [event_json(e) for e in self.control.events(since)]
        return web.json_response({"events": events, "time": now})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if self.streams >= self.max_streams and request.method != "HEAD":
            # One line per refusal, throttled: a reader that reconnects in a loop must not flood the log.
            self.stream_refusals.refused(
                "admin: 503 for GET /api/stream from %s: admin.max_streams (%d) streams are open",
                request.remote,
                self.max_streams,
            )
            busy = _error(
                503, f"too many event streams open (admin.max_streams: {self.max_streams}); poll /api/status"
            )
            busy.headers["Retry-After"] = "10"
            return busy
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        if request.method == "HEAD":
            return response  # headers only: a stream has no end to wait for
        self.streams += 1
        try:
            await self._stream_to(response)
        finally:
            self.streams -= 1
        return response

    async def _stream_to(self, response: web.StreamResponse) -> None:
        since = 0.0
        backlog = _STREAM_BACKLOG
        with contextlib.suppress(ConnectionError):  # the client went away
            while not self.closing.is_set():
                events = list(self.control.events(since))[-backlog:]
                backlog = len(events) + _STREAM_BACKLOG  # after the first round: every new event
                for event in events:
                    await response.write(_sse("event", event_json(event)))
                if events:
                    since = events[-1].time
                await response.write(_sse("snapshot", snapshot_json(self.control.snapshot(), time.time())))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.stream_interval):
                        await self.closing.wait()

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=render_metrics(self.registry), headers={"Content-Type": CONTENT_TYPE})

    # --- changes --------------------------------------------------------------------------------------
    async def set_server(self, request: web.Request) -> web.Response:
        info = request.match_info
        return await self._set(request, info["server"], None, info["state"])

    async def set_member(self, request: web.Request) -> web.Response:
        info = request.match_info
        return await self._set(request, info["server"], info["service"], info["state"])

    async def _set(self, request: web.Request, server: str, service: str | None, state: str) -> web.Response:
        if state.lower() not in OPERATOR_STATES:
            return _error(
                400,
                f"unknown state {state!r}: expected one of {', '.join(OPERATOR_STATES)}",
                expected=list(OPERATOR_STATES),
            )
        note = await _note(request)
        if isinstance(note, web.Response):
            return note
        reason, by = note
        try:
            self.control.set_operator(server, service, OperatorState(state.lower()), reason=reason, by=by)
        except KeyError as exc:
            message = str(exc.args[0]) if exc.args else f"no server {server!r}"
            return _error(404, message)
        name = next(
            (s.name for s in self.control.snapshot().servers if s.name.lower() == server.lower()), server
        )
        label = f"{name}/{service.lower()}" if service else name
        log.debug(
            "admin: %s (%s) set %s to %s", request.remote, by, label, state.lower()
        )  # the balancer logs it
        answer: dict[str, Any] = {
            "server": name,
            "service": service.lower() if service else None,
            "state": state.lower(),
            "reason": reason,
            "by": by,
            "outcome": f"{label}: {state.lower()}",
        }
        if self.peers is not None:
            key = (name.lower(), service.lower() if service else None)
            made = [s for s in self.control.operator_settings() if s.key == key]
            answer["peers"] = [a.json() for a in await self.peers.push(made)]
        return web.json_response(answer)

    # --- between nodes (admin/peers.py) ----------------------------------------------------------------
    async def peer_states(self, request: web.Request) -> web.Response:
        return web.json_response(document(self.control.operator_settings()))

    async def adopt_states(self, request: web.Request) -> web.Response:
        expected = 'expected a state document: {"version": 1, "states": [...], "node": URL}'
        try:
            content = read_json(await request.read())
            settings = settings_of(content)
        except ValueError as exc:
            log.warning("admin: 400 for POST %s from %s: %s", request.path, request.remote, exc)
            return _error(400, f"{expected} ({exc})")
        node = content.get("node") if isinstance(content, dict) else None
        sender = clean_text(node, 100) if isinstance(node, str) and node else "a peer"
        source = f"peer {sender} ({request.remote})"
        results = []
        for adoption in self.control.adopt_operators(settings, source):
            setting = adoption.setting
            if not adoption.holds:  # what is taken is logged by the balancer, as every state change
                level = logging.WARNING if adoption.result == "unknown" else logging.INFO
                log.log(
                    level,
                    "peers: %s %s from %s not taken: %s",
                    setting.label,
                    setting.state.value,
                    source,
                    adoption.outcome,
                )
            results.append(
                {
                    "server": setting.server,
                    "service": setting.service,
                    "state": setting.state.value,
                    "result": adoption.result,
                    "holds": adoption.holds,
                    "outcome": f"{setting.label}: {adoption.outcome}",
                }
            )
        return web.json_response({"results": results})

    async def reload(self, request: web.Request) -> web.Response:
        log.info("admin: %s asked for a reload", request.remote)
        try:
            outcome = await self.control.reload()
        except CasarrayError as exc:
            # A refused config (every problem of the file, its size, its encoding) or a refused start
            # of the new generation (port in use): 409, the state of the resource is unchanged.
            problems = str(exc).splitlines()
            return _error(
                409,
                f"reload refused, the running config keeps serving: {'; '.join(problems)}",
                problems=problems,
            )
        except Exception as exc:  # a fault of the balancer, not of the file: JSON like every answer
            log.exception("admin: reload failed")
            return _error(500, f"reload failed: {type(exc).__name__}: {exc} (see the balancer's log)")
        return web.json_response({"outcome": outcome})
